"""Every config shipped in configs/ turns into stage commands the CLI accepts (no training)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tslrec.core.errors import InputError
from tslrec.pipelines.cli import main
from tslrec.pipelines.run_job import STAGES, active_stages, load_config, stage_job

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


@pytest.mark.parametrize(
    "config, records_name, control_name",
    [("ml-1m-cpu.yaml", "ablation-ml-1m", None), ("beauty.yaml", "ablation-beauty", None)],
)
def test_config_is_the_setting_of_its_recorded_grid(config, records_name, control_name):
    """Each of these configs claims to reproduce recorded grids in bench/results: its grid options must match.

    The records were made before item-table sources: their `gate` read the stage-2 export (`gate:tuned` now), and a
    control grid's `gate` the stage-0 table (`gate:stage0`); a variant of the config not recorded yet may only be
    over stage0."""
    from tslrec.pipelines.ablation_grid import grid_variants
    from tslrec.pipelines.side_information import LLM_FUSIONS, item_table_sources

    root = Path(__file__).resolve().parent.parent
    records = root / "bench" / "results" / f"{records_name}.json"
    if not records.is_file():
        pytest.skip(f"no {records_name} recorded")
    grid = stage_job(STAGES[-1], load_config(root / "configs" / config, []))
    recorded = set()
    for name, source in ((records_name, "tuned"), (control_name, "stage0")):
        path = root / "bench" / "results" / f"{name}.json"
        if name is None or not path.is_file():
            continue
        cells = [r for r in json.loads(path.read_text()) if r["model"] != "tslrec-stage2"]
        for r in cells:
            data, model, train = r["config"]["data"], r["config"]["model"], r["config"]["train"]
            assert (
                grid.data.kcore,
                grid.data.max_len,
                grid.model.hidden,
                grid.model.num_layers,
                grid.model.dropout,
            ) == (data["kcore"], data["max_len"], model["hidden"], model["num_layers"], model["dropout"])
            assert (
                grid.train.batch_size,
                grid.train.lr,
                grid.train.epochs,
                grid.train.patience,
                grid.train.precision,
            ) == (
                train["batch_size"],
                train["lr"],
                train["epochs"],
                train["patience"],
                train.get("precision", {True: "bf16", False: "float32"}.get(train.get("bf16"))),
            )
        assert {r["seed"] for r in cells} == {grid.train.seed + i for i in range(grid.seeds)}
        recorded |= {
            (r["model"], f"{r['variant']}:{source}" if r["variant"] in LLM_FUSIONS else r["variant"]) for r in cells
        }
    labels = list(item_table_sources(grid.side.item_embeddings))
    wanted = {
        (b, f if s is None else f"{f}:{s}") for b in grid.backbones for f, s in grid_variants(grid.fusions, labels)
    }
    assert recorded <= wanted and all(v.endswith((":stage0", ":untuned")) for _, v in wanted - recorded)


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
    assert main(["run", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("REPORT-TABLE") == 1
    assert main(["run", "--config", str(config)]) == 0  # every stage up to date: the report is shown from its file
    assert capsys.readouterr().out.count("REPORT-TABLE") == 1


def test_a_setting_added_since_a_stage_finished_counts_as_what_the_stage_did(tmp_path, monkeypatch, capsys):
    """A manifest written before an option existed is read with the value the stage behaved as back then (the
    field's `before`): equal to it, the finished stages are skipped (the chain's digests still match); the new
    default, which behaves differently, re-runs the stage. A Caser setting never binds a SASRec stage."""
    from tslrec.pipelines import run_job

    ran = []

    def fake_run(job):
        ran.append(type(job).__name__)

    stages = tuple(replace(s, command=replace(s.command, run=fake_run, report=lambda r: None)) for s in STAGES)
    monkeypatch.setattr(run_job, "STAGES", stages)
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: ml-100k\nout: {tmp_path / 'out'}\n")
    assert main(["run", "--config", str(config), "--until", "stage1"]) == 0
    manifest = tmp_path / "out" / "stage0" / "stage_manifest.json"
    old = json.loads(manifest.read_text())
    del old["job"]["train"]["loss_weight"]  # as written before the option existed, when batches were unweighted
    old["job"]["model"]["caser_window"] = 5  # and under an older Caser default, which SASRec does not read
    manifest.write_text(json.dumps(old))
    next_manifest = tmp_path / "out" / "stage1" / "stage_manifest.json"  # which recorded that file's digest
    next_manifest.write_text(json.dumps({**json.loads(next_manifest.read_text()), "upstream": run_job._digest(old)}))
    ran.clear()
    as_then = ["--set", "stages.stage0.loss_weight=batch"]
    assert main(["run", "--config", str(config), "--until", "stage1", *as_then]) == 0
    assert ran == [] and "[stage1] up to date" in capsys.readouterr().out
    assert main(["run", "--config", str(config), "--until", "stage1"]) == 0  # the default weighs each target
    assert ran == ["TrainJob", "Stage1Job"]


def test_a_new_option_needs_only_its_field(capsys):
    """Every setting of every job is a flag, named after its field, with its help text: nothing else declares it."""
    from tslrec.core.settings import settings_of
    from tslrec.pipelines.cli import COMMANDS

    for command in COMMANDS:
        flags = [s.flag for s in settings_of(command.defaults)]
        assert len(flags) == len(set(flags)), command.name
        assert all(s.help for s in settings_of(command.defaults))
    assert main(["train", "--help"]) == 0
    assert "--grad-clip" in capsys.readouterr().out  # TrainConfig.grad_clip: a field, so a flag


def test_library_errors_are_shown_as_flags(capsys):
    assert main(["train", "--dataset", "ml-100k", "--lr", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --lr -1.0: must be positive") and "TrainConfig" not in err


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("tslrec ")
