"""Every config shipped in configs/ turns into stage commands the CLI accepts (no training)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import lock_held_elsewhere
from stage1_helpers import tiny_llama_dir  # noqa: F401

from tslrec.core.errors import InputError
from tslrec.pipelines.cli import main
from tslrec.pipelines.run_job import STAGES, RunJob, active_stages, load_config, run_pipeline, stage_job

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert {"ml-100k.yaml", "ml-1m.yaml", "ml-1m-cpu.yaml", "beauty.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds_valid_stage_jobs(path):
    cfg = load_config(path, [])
    for stage in active_stages(cfg):
        job = stage_job(stage, cfg)  # unknown keys and bad values raise InputError
        if stage.name in ("stage0", "ablation"):
            assert job.data.max_len == cfg["data"]["max_len"]  # data options reach the stages that load the dataset


def test_unknown_config_key_names_it_and_the_near_match(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("dataset: ml-100k\nstages:\n  stage0:\n    learning_rate: 0.01\n    patiense: 3\n")
    with pytest.raises(InputError, match=r"stages.stage0: unknown key 'learning_rate'"):
        stage_job(STAGES[0], load_config(config, []))
    config.write_text("dataset: ml-100k\nstages:\n  stage0:\n    patiense: 3\n")
    with pytest.raises(InputError, match=r"unknown key 'patiense'; did you mean patience"):
        stage_job(STAGES[0], load_config(config, []))


# configs that claim to be the setting of a recorded grid: {config: record name}. configs/ml-1m-cpu.yaml is not one:
# ablation-ml-1m was trained before every interaction became a target (the docs call it superseded).
REPRODUCES = {"beauty.yaml": "ablation-beauty"}


def recorded_grid_changes(grid, record: dict) -> list[tuple[str, object, object]]:
    """Every setting a cell's record holds that the config's grid sets otherwise (a setting the record predates
    counts as what runs did before it existed; one its backbone does not read, or the cell's own seed, is no
    setting of the grid)."""
    from dataclasses import asdict

    from tslrec.backbones.registry import BACKBONES, settings_read_by
    from tslrec.core.run_settings import RunSettings
    from tslrec.core.settings import as_recorded_before, upgrade_recorded

    models = [BACKBONES[record["model"]].__name__]  # the class names `only` metadata uses
    groups = {"data": grid.data, "model": grid.model, "train": grid.train, "eval": grid.eval}
    old, new, before = {}, {}, {}
    for name, config in groups.items():
        old[name] = json.loads(json.dumps(upgrade_recorded(config, record["config"][name])))
        new[name] = json.loads(json.dumps(asdict(config)))  # as a record holds it: tuples are lists
        before[name] = json.loads(json.dumps(as_recorded_before(config)))
    old["model"], new["model"] = settings_read_by(old["model"], models), settings_read_by(new["model"], models)
    for side in (old, new):
        side["train"].pop("seed", None)
        side["model"].pop("num_items", None)
        side["model"].pop("max_len", None)  # the data's max_len, compared there
    return RunSettings(new, before=before).changes(old)


@pytest.mark.parametrize("config, records_name", REPRODUCES.items())
def test_config_is_the_setting_of_its_recorded_grid(config, records_name):
    """A config that claims to reproduce a recorded grid sets every setting its records hold, and its grid has
    the records' seeds and variants; the check fails, not skips, when the record is missing."""
    from tslrec.pipelines.ablation_grid import grid_variants
    from tslrec.pipelines.side_information import item_table_sources

    root = Path(__file__).resolve().parent.parent
    records = root / "bench" / "results" / f"{records_name}.json"
    assert records.is_file(), f"configs/{config} claims to reproduce {records}, which is missing"
    grid = stage_job(STAGES[-1], load_config(root / "configs" / config, []))
    cells = [r for r in json.loads(records.read_text()) if r["model"] != "tslrec-stage2"]
    assert cells, f"{records} holds no grid cell"
    for r in cells:
        assert recorded_grid_changes(grid, r) == [], (r["model"], r["variant"], r["seed"])
    assert {r["seed"] for r in cells} <= {grid.train.seed + i for i in range(grid.seeds)}
    labels = list(item_table_sources(grid.side.item_embeddings))
    wanted = {
        (b, f if s is None else f"{f}:{s}") for b in grid.backbones for f, s in grid_variants(grid.fusions, labels)
    }
    assert {(r["model"], r["variant"]) for r in cells} <= wanted


def test_the_config_check_sees_a_setting_it_did_not_compare_before():
    """windows, loss_weight and caser_window were left out of the old check: a record with another value of any
    of them is a change now."""
    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "beauty.yaml", [])
    grid = stage_job(STAGES[-1], cfg)
    from dataclasses import asdict

    record = {"model": "caser", "config": {g: asdict(getattr(grid, g)) for g in ("data", "model", "train", "eval")}}
    assert recorded_grid_changes(grid, record) == []
    for group, key, value in (
        ("train", "windows", "last"),
        ("train", "loss_weight", "batch"),
        ("model", "caser_window", 5),
    ):
        changed = {**record, "config": {**record["config"], group: {**record["config"][group], key: value}}}
        assert [c[0] for c in recorded_grid_changes(grid, changed)] == [f"{group}.{key}"]


def test_the_ablation_stage_reads_the_stage2_export_and_the_stage0_table(tmp_path):
    """Every config's grid gets both item tables wired in; a source named in `fusions` is checked with the wiring
    in place, so a misspelt one stops the run before stage 0 trains."""
    from tslrec.pipelines.ablation_grid import grid_variants
    from tslrec.pipelines.side_information import item_table_sources

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "ml-100k.yaml", [])
    grid = stage_job(STAGES[-1], cfg)
    assert item_table_sources(grid.side.item_embeddings) == {
        "tuned": "runs/ml-100k/stage2",
        "stage0": "runs/ml-100k/stage0",
    }
    assert grid_variants(grid.fusions, ["tuned", "stage0"]) == [
        ("base", None),
        ("ci", None),
        ("gate", "stage0"),
        ("gate", "tuned"),
    ]
    config = tmp_path / "c.yaml"
    config.write_text("dataset: ml-100k\nstages:\n  ablation:\n    fusions: [base, 'gate:stag0']\n")
    with pytest.raises(InputError, match=r"gate:stag0 names source 'stag0'.* has tuned, stage0"):
        stage_job(STAGES[-1], load_config(config, []))


def test_the_untuned_export_is_a_stage_and_a_source_only_when_named(tmp_path):
    """`stages.stage2_untuned` exports stage 1's frozen-LLM run and wires it into the grid as `untuned`; without it
    the grid has no such source, and with a stage 1 that trains no frozen-LLM run the config is refused."""
    from tslrec.pipelines.run_job import active_stages, check_untuned_export
    from tslrec.pipelines.side_information import item_table_sources

    config = tmp_path / "c.yaml"
    config.write_text(
        "dataset: ml-100k\nout: o\nstages:\n  stage1:\n    untuned_baseline: head+proj\n  stage2_untuned: {}\n"
        "  ablation:\n    fusions: [base, 'gate:untuned', 'gate:tuned']\n"
    )
    cfg = load_config(config, [])
    names = [s.name for s in active_stages(cfg)]
    assert names == ["stage0", "stage1", "stage2", "stage2_untuned", "ablation"]
    jobs = {s.name: stage_job(s, cfg) for s in active_stages(cfg)}
    assert jobs["stage2_untuned"].stage1_dir == "o/stage1/untuned_head_proj"
    assert jobs["stage2_untuned"].out == "o/stage2_untuned"
    assert item_table_sources(jobs["ablation"].side.item_embeddings) == {
        "tuned": "o/stage2",
        "stage0": "o/stage0",
        "untuned": "o/stage2_untuned",
    }
    check_untuned_export(cfg, jobs)

    config.write_text("dataset: ml-100k\nstages:\n  stage2_untuned: {}\n")
    cfg = load_config(config, [])
    with pytest.raises(InputError, match=r"stages.stage2_untuned .* set stages.stage1.untuned_baseline: head\+proj"):
        check_untuned_export(cfg, {s.name: stage_job(s, cfg) for s in active_stages(cfg)})

    config.write_text("dataset: ml-100k\nstages:\n  ablation:\n    fusions: [base, 'gate:untuned']\n")
    assert "stage2_untuned" not in [s.name for s in active_stages(load_config(config, []))]
    with pytest.raises(InputError, match=r"gate:untuned names source 'untuned'"):
        stage_job(STAGES[-1], load_config(config, []))


def test_run_prints_the_final_report_once(tmp_path, monkeypatch, capsys):
    from tslrec.pipelines import run_job

    def fake_run(job):
        if hasattr(job, "fusions"):
            Path(job.out).mkdir(parents=True, exist_ok=True)
            (Path(job.out) / "results.md").write_text("REPORT-TABLE\n")
            return "REPORT-TABLE"
        return None

    def fake_report(result):
        if result:
            print(result)  # what `tslrec ablate` prints as it finishes

    stages = tuple(replace(s, command=replace(s.command, run=fake_run, report=fake_report)) for s in STAGES)
    monkeypatch.setattr(run_job, "STAGES", stages)
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: ml-100k\nout: {tmp_path / 'out'}\n")
    run_pipeline(RunJob(str(config)))
    assert capsys.readouterr().out.count("REPORT-TABLE") == 1
    run_pipeline(RunJob(str(config)))  # every stage up to date: the report is shown from its file
    assert capsys.readouterr().out.count("REPORT-TABLE") == 1


def test_a_setting_added_since_a_stage_finished_counts_as_what_the_stage_did(tmp_path, monkeypatch, capsys):
    """A manifest written before an option existed is read with the value the stage behaved as back then (the
    field's `before`): equal to it, the finished stages are skipped (the chain's digests still match); the new
    default, which behaves differently, re-runs the stage. A Caser setting never binds a SASRec stage."""
    from tslrec.core.run_settings import digest
    from tslrec.pipelines import run_job

    ran = []

    def fake_run(job):
        ran.append(type(job).__name__)

    stages = tuple(replace(s, command=replace(s.command, run=fake_run, report=lambda r: None)) for s in STAGES)
    monkeypatch.setattr(run_job, "STAGES", stages)
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: ml-100k\nout: {tmp_path / 'out'}\n")
    run_pipeline(RunJob(str(config), until="stage1"))
    manifest = tmp_path / "out" / "stage0" / "stage_manifest.json"
    old = json.loads(manifest.read_text())
    del old["job"]["train"]["loss_weight"]  # as written before the option existed, when batches were unweighted
    old["job"]["model"]["caser_window"] = 5  # and under an older Caser default, which SASRec does not read
    manifest.write_text(json.dumps(old))
    next_manifest = tmp_path / "out" / "stage1" / "stage_manifest.json"  # which recorded that file's digest
    next_manifest.write_text(json.dumps({**json.loads(next_manifest.read_text()), "upstream": digest(old)}))
    ran.clear()
    run_pipeline(RunJob(str(config), overrides=["stages.stage0.loss_weight=batch"], until="stage1"))
    assert ran == [] and "[stage1] reuses its finished run" in capsys.readouterr().out
    run_pipeline(RunJob(str(config), until="stage1"))  # the default weighs each target
    assert ran == ["TrainJob", "Stage1Job"]
    out = capsys.readouterr().out
    assert "[stage0] retrains: train.loss_weight is now 'target', which the run predates" in out
    assert "[stage1] retrains: stage0 runs again" in out


def test_a_new_option_needs_only_its_field(capsys):
    """Every setting of every job is a flag, named after its field, with its help text: nothing else declares it."""
    from tslrec.core.settings import settings_of
    from tslrec.pipelines.cli import commands

    for command in commands():
        flags = [s.flag for s in settings_of(command.defaults)]
        assert len(flags) == len(set(flags)), command.name
        assert all(s.help for s in settings_of(command.defaults))
    assert main(["train", "--help"]) == 0
    assert "--grad-clip" in capsys.readouterr().out  # TrainConfig.grad_clip: a field, so a flag


def test_library_errors_are_shown_as_flags(capsys):
    assert main(["train", "--dataset", "ml-100k", "--lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --lr -1.0: must be positive") and "TrainConfig" not in err


def test_a_bound_declared_with_its_setting_is_checked_with_the_allowed_values():
    """`setting(..., at_least=1)` and `positive=True` are checked by check_allowed, which every config runs first."""
    from dataclasses import dataclass

    from tslrec.backbones.training import TrainConfig
    from tslrec.core.settings import check_allowed, setting
    from tslrec.stage1_reconstruct.config import Stage1Config

    @dataclass
    class Toy:
        count: int = setting(1, "how many", at_least=1)
        rate: float = setting(0.1, "how fast", positive=True)

        def __post_init__(self) -> None:
            check_allowed(self)

    Toy(count=1, rate=1e-9)
    with pytest.raises(InputError, match=r"Toy.count=0: need at least 1"):
        Toy(count=0)
    with pytest.raises(InputError, match=r"Toy.rate=0.0: must be positive"):
        Toy(rate=0.0)
    with pytest.raises(InputError, match=r"Stage1Config.grad_accum=0: need at least 1"):
        Stage1Config(grad_accum=0)
    with pytest.raises(InputError, match=r"TrainConfig.patience=0: need at least 1"):
        TrainConfig(patience=0)
    Stage1Config(max_users=None, max_minutes=None)  # None (no cap) is not bounded
    with pytest.raises(InputError, match=r"Stage1Config.max_users=3: need at least 4"):
        Stage1Config(max_users=3)


def test_a_setting_is_declared_with_its_help_and_one_default():
    """setting() refuses a field without help text (it would have no --help line) or with both a default and a
    factory; a positional setting is a single value."""
    from dataclasses import dataclass

    from tslrec.core.settings import setting, settings_of

    with pytest.raises(TypeError, match="help"):
        setting(1)
    with pytest.raises(TypeError, match="not both"):
        setting(1, "x", factory=list)

    @dataclass
    class Toy:
        switch: bool = setting(False, "a switch", positional=True)

    with pytest.raises(TypeError, match="positional"):
        settings_of(Toy())


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("tslrec ")


def test_a_dry_run_counts_each_stages_work_times_it_and_keeps_nothing(tmp_path, tiny_llama_dir, capsys):
    """--dry-run: each stage's line says whether it would run and why, and its work counted on the dataset (the
    training windows and targets of an epoch, stage 1's users and steps, stage 2's items, the grid's cells); the
    next line, what it would cost on this machine, timed on a few of its steps; nothing is written."""
    config = tmp_path / "c.yaml"
    config.write_text(
        f"dataset: ml-100k\nout: {tmp_path / 'out'}\nstages:\n  stage0:\n    epochs: 30\n    patience: 5\n"
        f"  stage1:\n    epochs: 2\n    llm: {tiny_llama_dir}\n  stage2: {{}}\n"
        "  ablation:\n    backbones: [gru4rec, caser]\n    fusions: [base, ci]\n    seeds: 1\n    workers: 2\n"
    )
    run_pipeline(RunJob(str(config), dry_run=True))
    out = capsys.readouterr().out
    lines = {
        line.split("]")[0][1:]: line for line in out.splitlines() if line.startswith("[") and "machine" not in line
    }
    costs = {line.split("]")[0][1:]: line for line in out.splitlines() if "] on this machine: " in line}
    assert "runs: no earlier run: 943 users, 1,682 items; an epoch is " in lines["stage0"]
    assert "755 training users (94 validation, 94 test); an epoch is 48 optimizer steps" in lines["stage1"]
    assert "2 epochs" in lines["stage1"] and "retrains: stage0 runs again" in lines["stage1"]
    assert "1,682 one-item prompts" in lines["stage2"] and "4 cells (2 backbones x " in lines["ablation"]
    assert "at the cap of 30 epochs" in costs["stage0"] and "if it stops at the earliest" in costs["stage0"]
    assert "train " in costs["stage1"] and "validate " in costs["stage1"] and "untuned baseline " in costs["stage1"]
    assert "(loading the LLM included)" in costs["stage2"] and "on 2 worker(s)" in costs["ablation"]
    assert "gru4rec " in costs["ablation"] and "caser " in costs["ablation"]
    total = out.splitlines()[-1]
    assert total.startswith("dry run: nothing was kept. Estimated on this machine (") and " min at the caps" in total
    assert not (tmp_path / "out").exists()


def test_a_rerun_upstream_keeps_the_grids_cells(tmp_path, monkeypatch):
    """A stage that ran again before the grid made `tslrec run` start the grid over (--force): every finished cell,
    base cells that read no table included, was deleted, though the grid ties each cell to the content hash of the
    table it read and refuses a changed one; more seeds deleted them too, though the grid only adds cells for them.
    Only `--force ablation` starts it over now."""
    from tslrec.pipelines import run_job

    forced = {}

    def fake_run(job):
        forced[type(job).__name__] = getattr(job, "force", None)

    stages = tuple(replace(s, command=replace(s.command, run=fake_run, report=lambda r: None)) for s in STAGES)
    monkeypatch.setattr(run_job, "STAGES", stages)
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: ml-100k\nout: {tmp_path / 'out'}\n")
    run_pipeline(RunJob(str(config)))
    assert forced["AblateJob"] is False  # the first run: no cells yet
    forced.clear()
    run_pipeline(RunJob(str(config), force="stage2"))
    assert list(forced) == ["Stage2Job", "AblateJob"] and forced["AblateJob"] is False
    run_pipeline(RunJob(str(config), overrides=["stages.ablation.seeds=5"]))  # the grid adds the new seeds' cells
    assert forced["AblateJob"] is False
    forced.clear()
    run_pipeline(RunJob(str(config), overrides=["stages.ablation.lr=0.002"], force="ablation"))
    assert forced == {"AblateJob": True}


def test_a_second_run_in_the_same_folder_is_refused(tmp_path, monkeypatch):
    """Nothing stopped two `tslrec run` processes on one folder (a campaign started twice, or its killed parent's
    child still running): both trained stage 1 from each other's checkpoints, and its adapter and metrics could
    come from different runs. The second one is now refused while the first holds the folder."""

    from tslrec.pipelines import run_job

    ran = []
    stages = tuple(
        replace(s, command=replace(s.command, run=lambda job: ran.append(job), report=lambda r: None)) for s in STAGES
    )
    monkeypatch.setattr(run_job, "STAGES", stages)
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: ml-100k\nout: {tmp_path / 'out'}\n")
    (tmp_path / "out").mkdir()
    lock = tmp_path / "out" / run_job.RUN_LOCK
    with lock_held_elsewhere(lock):
        with pytest.raises(InputError, match="another tslrec run is working in"):
            run_pipeline(RunJob(str(config)))
        assert ran == []
    run_pipeline(RunJob(str(config)))  # the first one gone, the kernel dropped its lock
    assert len(ran) == 4


def test_run_flags_come_from_its_job_config():
    """`tslrec run` declared its flags by hand beside RunJob; --set may repeat and its values may hold commas."""
    from tslrec.core.settings import as_flags, from_namespace
    from tslrec.pipelines.cli import build_parser
    from tslrec.pipelines.run_job import COMMAND

    argv = ["run", "--config", "c.yaml", "--set", "stages.ablation.backbones=[sasrec, gru4rec]", "--set", "seed=1"]
    args = build_parser().parse_args([*argv, "--no-progress", "--until", "stage1"])
    job = from_namespace(COMMAND.defaults, args)
    assert job == RunJob(
        "c.yaml", ["stages.ablation.backbones=[sasrec, gru4rec]", "seed=1"], until="stage1", progress=False
    )
    assert as_flags(job, COMMAND.defaults) == [*argv[1:], "--until", "stage1", "--no-progress"]
