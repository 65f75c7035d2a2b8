"""`tslrec ablate` on a toy grid: every output written, finished cells skipped on a re-run, settings guarded."""

from __future__ import annotations

import csv
from dataclasses import replace

import pytest
from conftest import lock_held_elsewhere
from stage2_helpers import write_export, write_toy_dataset

import tslrec
from tslrec import AblateJob, BackboneConfig, TrainConfig, TrainJob
from tslrec.core.artifacts import read_json
from tslrec.core.errors import InputError
from tslrec.pipelines.cli import main
from tslrec.pipelines.options import TrainingRuntime
from tslrec.pipelines.side_information import SideInfoConfig

GRID = (
    "--backbones gru4rec --fusions base,ci,gate --seeds 2 --epochs 1 --hidden 8"
    " --device cpu --no-progress --activity-groups 3"
).split()
TINY = BackboneConfig(hidden=8)
ON_CPU = TrainingRuntime(device="cpu", progress=False)


def grid_job(dataset, out, /, *tables: str, **overrides) -> AblateJob:
    """The grid of GRID on `dataset` into `out`, reading the item tables `tables` (a bare path or label=PATH)."""
    job = AblateJob(
        dataset=str(dataset),
        out=str(out),
        side=SideInfoConfig(item_embeddings=[str(t) for t in tables]),
        backbones=["gru4rec"],
        fusions=["base", "ci", "gate"],
        seeds=2,
        model=TINY,
        train=TrainConfig(epochs=1),
        runtime=ON_CPU,
        activity_groups=3,
    )
    return replace(job, **overrides)


def export_of(job: AblateJob) -> str:
    """The grid's one item table (a bare path: the source `tuned`)."""
    return job.side.item_embeddings[0]


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    data, ds = write_toy_dataset(tmp / "data")
    export = write_export(tmp / "export", ds)
    job = grid_job(data, tmp / "grid", export)
    tslrec.ablate(job)
    return tmp / "grid", job, ds


def test_grid_writes_every_table_and_figure(grid_run):
    out, _, ds = grid_run
    for name in (
        "ablation.json",
        "cells.csv",
        "summary.csv",
        "results.md",
        "results.png",
        "activity.csv",
        "activity.png",
        "agreement.json",
        "agreement.png",
    ):
        assert (out / name).is_file(), name
    cells = list(csv.DictReader((out / "cells.csv").open()))
    assert sorted((c["fusion"], c["seed"]) for c in cells) == sorted(
        (f, s)
        for f in ("base", "ci", "gate:tuned")
        for s in ("42", "43")  # a bare path is the source `tuned`
    )
    for c in cells:
        record = read_json(out / "cells" / f"gru4rec-{c['fusion'].replace(':', '-')}-s{c['seed']}" / "metrics.json")
        assert record["variant"] == c["fusion"] and record["seed"] == int(c["seed"])
        assert float(c["NDCG@10"]) == record["metrics"]["NDCG@10"]
    report = (out / "results.md").read_text()
    assert "| gru4rec | gate:tuned | 2 |" in report and "C1 (top-1)" in report and "user activity" in report
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(out / "agreement.json")["tuned"]["items"] == ds.num_items


def test_a_grid_given_clusters_hands_them_to_ci_alone(tmp_path):
    """`tslrec run` gives the grid --stage1-dir (its --clusters) for ci; base and gate cells must not be handed them,
    since a single run refuses a file its fusion does not read."""
    data, ds = write_toy_dataset(tmp_path / "data")
    export = write_export(tmp_path / "export", ds)
    job = grid_job(data, tmp_path / "grid", export, seeds=1)
    tslrec.ablate(replace(job, side=replace(job.side, clusters=str(export))))
    cells = sorted(p.name for p in (tmp_path / "grid" / "cells").iterdir() if (p / "metrics.json").is_file())
    assert cells == ["gru4rec-base-s42", "gru4rec-ci-s42", "gru4rec-gate-tuned-s42"]


def test_category_agreement_per_source_against_one_set_of_groups(tmp_path):
    """Fig. 4 for every export source, each against the same k-means groups (the `tuned` export's, which `ci`
    uses), not against groups of its own: an export that matches its own groups but not tuned's scores low."""
    import torch

    from tslrec.formats.item_table import load_item_embeddings, save_item_embeddings
    from tslrec.pipelines.ablate_job import agreement_of
    from tslrec.pipelines.side_information import SideInfoConfig
    from tslrec.stage2_augment.analysis import category_agreement

    _, ds = write_toy_dataset(tmp_path / "data")
    tuned = write_export(tmp_path / "tuned", ds, k=4, seed=0)
    groups = load_item_embeddings(tuned, num_items=ds.num_items).item_groups
    own = (groups + 1) % 4  # the untuned export's own groups: every item shifted by one
    untuned = save_item_embeddings(
        tmp_path / "untuned",
        torch.randn(ds.num_items + 1, 12),
        ds.item_ids,
        ds.name,
        ds.hash,
        category_probs=torch.nn.functional.one_hot(own, 4).float(),
        item_groups=own,
    )
    side = SideInfoConfig(item_embeddings=[f"untuned={untuned}", f"tuned={tuned}"])
    by_source = agreement_of(side, ds)
    assert list(by_source) == ["untuned", "tuned"]
    tuned_probs = load_item_embeddings(tuned, num_items=ds.num_items).category_probs
    assert by_source["tuned"] == category_agreement(tuned_probs, groups)
    assert by_source["untuned"].c1 == 0.0  # against tuned's groups; against its own it would be 1.0


def test_rerun_skips_finished_cells(grid_run, capsys):
    out, job, _ = grid_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.json")}
    tslrec.ablate(job)
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.json")} == before


def test_cell_held_by_a_live_process_is_left_to_it(grid_run, tmp_path, capsys):

    from tslrec.pipelines.ablation_grid import LOCK_FILE, cell_lock

    _, job, _ = grid_run
    out = tmp_path / "grid"
    held = out / "cells" / "gru4rec-base-s42"
    held.mkdir(parents=True)
    with lock_held_elsewhere(held / LOCK_FILE):
        grid = replace(job, out=str(out), fusions=["base"], seeds=1)
        elsewhere = tslrec.ablate(grid).elsewhere  # the command says "still training in other processes"
        assert "being trained by another process" in capsys.readouterr().out and elsewhere == 1
        assert not (held / "metrics.json").exists()  # left to its owner
        with cell_lock(held) as mine:
            assert not mine
    with cell_lock(held) as mine:  # the owner died, killed: the kernel dropped its lock
        assert mine
    tslrec.ablate(grid)
    assert (held / "metrics.json").is_file()
    with cell_lock(held) as mine:  # and a finished run does not keep it
        assert mine


def test_two_workers_train_every_cell_once(grid_run, tmp_path, capfd):
    """--workers 2: a spawned process and this one share the cells through their locks; none is trained twice."""
    _, job, _ = grid_run
    out = tmp_path / "grid"
    outcome = tslrec.ablate(replace(job, out=str(out), fusions=["base", "ci"], workers=2))
    printed = capfd.readouterr().out  # file-descriptor level: the spawned worker's lines too
    names = [f"gru4rec-{f}-s{s}" for f in ("base", "ci") for s in (42, 43)]
    for name in names:
        assert printed.count(f"{name}: training") == 1, printed
        assert (out / "cells" / name / "metrics.json").is_file()
    assert "training the grid in 2 processes" in printed
    assert outcome.elsewhere == 0  # nothing left "still training in other processes"


def test_settings_of_an_older_grid_still_resume(grid_run, tmp_path):
    from tslrec.core.artifacts import write_json
    from tslrec.pipelines.ablation_grid import SETTINGS_FILE, check_settings

    settings = {"lr": 0.001, "grad_clip": 5.0, "item_embeddings": None, "clusters": "a"}
    write_json(tmp_path / SETTINGS_FILE, {"lr": 0.001, "clusters": "a"})  # written before --grad-clip existed
    defaults = {"lr": 0.001, "grad_clip": 5.0, "item_embeddings": None, "clusters": None}
    check_settings(tmp_path, settings, defaults)  # an option newer than the grid, at its default: fine
    check_settings(tmp_path, {**settings, "item_embeddings": "export"}, defaults)  # a file added to a grid without one
    assert read_json(tmp_path / SETTINGS_FILE)["item_embeddings"] == "export"
    for changed in ({"grad_clip": 1.0}, {"item_embeddings": "another"}, {"clusters": "b"}, {"lr": 0.01}):
        with pytest.raises(InputError, match=next(iter(changed))):
            check_settings(tmp_path, {**settings, "item_embeddings": "export", **changed}, defaults)


def test_a_grid_recorded_with_bf16_flags_resumes_under_precision(tmp_path):
    from tslrec.core.artifacts import write_json
    from tslrec.pipelines.ablate_job import AblateJob
    from tslrec.pipelines.ablation_grid import SETTINGS_FILE, check_settings, deprecated_keys, shared_settings

    job = AblateJob(dataset="ml-100k")
    old_keys = deprecated_keys(job)
    assert old_keys["bf16"] == ("precision", "bf16", "float32")
    assert old_keys["eval_bf16"] == ("eval_precision", "bf16", "float32")
    now = {**shared_settings(job), "precision": "float32", "eval_precision": "float32"}
    older = {k: v for k, v in now.items() if k not in ("precision", "eval_precision")}
    write_json(tmp_path / SETTINGS_FILE, {**older, "bf16": False, "eval_bf16": False})
    check_settings(tmp_path, now, shared_settings(job), old_keys=old_keys)  # the same precision, spelled as before
    with pytest.raises(InputError, match="precision='float32', now 'bf16'"):
        check_settings(tmp_path, {**now, "precision": "bf16"}, shared_settings(job), old_keys=old_keys)


def test_rerun_with_other_settings_is_refused(grid_run):
    _, job, _ = grid_run
    with pytest.raises(InputError, match="lr=0.001") as e:
        tslrec.ablate(replace(job, train=replace(job.train, lr=0.01)))
    assert "\n" not in str(e.value)  # one line


@pytest.mark.parametrize(
    "flag, value, words",
    [("--fusions", "base,magic", "magic"), ("--backbones", "bert4rec", "bert4rec"), ("--seeds", "0", "--seeds")],
)
def test_bad_grid_options_exit_2(grid_run, tmp_path, capsys, flag, value, words):
    _, job, _ = grid_run
    argv = ["ablate", "--dataset", job.dataset, "--item-embeddings", export_of(job), "--out", str(tmp_path / "g")]
    argv += [*GRID, flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and not (tmp_path / "g").exists()


# Item-table sources: `--item-embeddings tuned=DIR,stage0=DIR`, `--fusions base,ci,gate:stage0`.


def tiny_train_job(dataset, out, /, **overrides) -> TrainJob:
    """`tslrec train` of a 1-layer GRU4Rec, H = 8, for 1 epoch on the CPU, with `overrides`."""
    job = TrainJob(
        dataset=str(dataset), out=str(out), backbone="gru4rec", model=TINY, train=TrainConfig(epochs=1), runtime=ON_CPU
    )
    return replace(job, **overrides)


def sources(job: AblateJob, stage0_dir) -> SideInfoConfig:
    """--item-embeddings tuned=<the grid's export>,stage0=<stage0_dir>"""
    return SideInfoConfig(item_embeddings=[f"tuned={export_of(job)}", f"stage0={stage0_dir}"])


@pytest.fixture(scope="module")
def stage0_dir(grid_run, tmp_path_factory):
    """A `tslrec train --export-item-embeddings` folder on the grid's dataset: the no-LLM control's table."""
    _, job, _ = grid_run
    out = tmp_path_factory.mktemp("stage0") / "stage0"
    tslrec.train(tiny_train_job(job.dataset, out, export_item_embeddings=True))
    return out


@pytest.fixture(scope="module")
def sources_run(grid_run, stage0_dir, tmp_path_factory):
    _, job, _ = grid_run
    out = tmp_path_factory.mktemp("sources") / "grid"
    tslrec.ablate(replace(job, out=str(out), seeds=1, side=sources(job, stage0_dir)))
    return out


def test_item_table_sources_take_labels_and_a_bare_path_is_tuned():
    from tslrec.core.settings import from_mapping
    from tslrec.pipelines.ablate_job import AblateJob
    from tslrec.pipelines.side_information import item_table_sources

    assert item_table_sources(["runs/x/stage2"]) == {"tuned": "runs/x/stage2"}
    assert item_table_sources(["runs/lr=0.1/stage2"]) == {"tuned": "runs/lr=0.1/stage2"}  # '/' before '=': a path
    assert list(item_table_sources(["stage0=a", "tuned=b", "llm-2=c"]).items()) == [
        ("stage0", "a"),
        ("tuned", "b"),
        ("llm-2", "c"),
    ]
    for listed in (["tuned=a", "stage0=b"], "tuned=a,stage0=b"):  # a YAML list or one comma string
        job = from_mapping(AblateJob(), {"item_embeddings": listed}, "c.yaml: stages.ablation")
        assert item_table_sources(job.side.item_embeddings) == {"tuned": "a", "stage0": "b"}
    for bad, words in ((["a", "tuned=b"], "'tuned' is given twice"), (["Tuned=a"], "'Tuned=a'")):
        with pytest.raises(InputError, match=words) as e:
            item_table_sources(bad)
        assert "SideInfoConfig.item_embeddings" in str(e.value)


@pytest.mark.parametrize(
    "tables, fusions, words",
    [
        ("tuned=E,stage0=E", "base,gate:x", ["gate:x", "'x'", "tuned, stage0"]),
        ("tuned=E", "base:tuned,gate", ["base reads no item table"]),
        ("tuned=E,tuned=E", "base,gate", ["--item-embeddings", "'tuned' is given twice"]),
        ("E,tuned=E", "base,gate", ["--item-embeddings", "'tuned' is given twice"]),
    ],
)
def test_bad_sources_exit_2_in_one_line(grid_run, tmp_path, capsys, tables, fusions, words):
    _, job, _ = grid_run
    tables = tables.replace("E", export_of(job))
    grid = ["ablate", "--dataset", job.dataset, "--out", str(tmp_path / "g"), *GRID]
    assert main([*grid, "--item-embeddings", tables, "--fusions", fusions]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(w in err for w in words), err
    assert not (tmp_path / "g").exists()


def test_a_grid_with_two_sources_runs_base_and_ci_once_and_gate_once_per_source(sources_run, stage0_dir):
    out = sources_run
    assert sorted(p.name for p in (out / "cells").iterdir()) == [
        "gru4rec-base-s42",
        "gru4rec-ci-s42",
        "gru4rec-gate-stage0-s42",
        "gru4rec-gate-tuned-s42",
    ]
    variants = {p.name: read_json(p / "metrics.json")["variant"] for p in (out / "cells").iterdir()}
    assert variants == {
        "gru4rec-base-s42": "base",
        "gru4rec-ci-s42": "ci",
        "gru4rec-gate-stage0-s42": "gate:stage0",
        "gru4rec-gate-tuned-s42": "gate:tuned",
    }
    assert sorted(c["fusion"] for c in csv.DictReader((out / "cells.csv").open())) == sorted(variants.values())
    settings = read_json(out / "ablation.json")
    assert settings["item_embeddings"]["stage0"] == str(stage0_dir) and set(settings["item_embeddings"]) == {
        "tuned",
        "stage0",
    }
    assert set(settings["side_information_sha256"]) == {"ci", "gate:tuned", "gate:stage0"}
    pairs = {(c["variant"], c["against"]) for c in csv.DictReader((out / "comparisons.csv").open())}
    assert pairs == {
        ("gate:tuned", "base"),
        ("gate:tuned", "ci"),
        ("gate:tuned", "gate:stage0"),
        ("gate:stage0", "base"),
        ("gate:stage0", "ci"),
    }
    report = (out / "results.md").read_text()
    assert "| gru4rec | gate:tuned | gate:stage0 | " in report and "| gru4rec | gate:stage0 | 1 |" in report


def test_a_stage0_source_is_exactly_the_train_folders_table(sources_run, stage0_dir, grid_run, tmp_path):
    import torch

    from tslrec.core.artifacts import load_tensors
    from tslrec.pipelines.side_information import load_side_information

    _, _, ds = grid_run
    table = load_tensors(stage0_dir / "item_embeddings.safetensors")["embeddings"]  # [N+1, 8]
    side = load_side_information("gate", ds, str(stage0_dir), label="stage0")
    assert torch.equal(side.llm_table, table) and side.variant == "gate:stage0"
    cell = sources_run / "cells" / "gru4rec-gate-stage0-s42"
    assert torch.equal(load_tensors(cell / "model.safetensors")["item_embedding.llm_table"][1:], table[1:])
    recorded = read_json(cell / "metrics.json")["side_information"]["item_embeddings"]
    assert recorded["folder"] == str(stage0_dir.resolve()) and recorded["label"] == "stage0"
    # trained on another dataset: one line naming the recorded hash
    other, _ = write_toy_dataset(tmp_path / "other", seed=1)
    gate = tiny_train_job(
        other, tmp_path / "t", fusion="gate", side=SideInfoConfig(item_embeddings=[f"stage0={stage0_dir}"])
    )
    with pytest.raises(InputError, match="dataset_info.hash") as e:
        tslrec.train(gate)
    assert "\n" not in str(e.value) and str(stage0_dir) in str(e.value)


def test_an_older_grid_resumes_as_before_and_takes_a_new_source(grid_run, stage0_dir, tmp_path, capsys):
    """A grid made before sources (one unlabelled table, cells <backbone>-gate-s<seed>) resumes without retraining,
    reports as before, and a source added to it trains only that source's cells."""
    import json
    import shutil

    src, job, _ = grid_run
    out = tmp_path / "old"
    shutil.copytree(src, out)
    for new in sorted(out.glob("cells/*-gate-tuned-s*")):  # the layout and records the older version wrote
        record = read_json(new / "metrics.json")
        record["variant"] = "gate"
        record["side_information"]["item_embeddings"].pop("label")
        (new / "metrics.json").write_text(json.dumps(record))
        new.rename(new.with_name(new.name.replace("-gate-tuned-", "-gate-")))
    settings = read_json(out / "ablation.json")
    settings["item_embeddings"] = export_of(job)
    settings["side_information_sha256"] = {
        k.replace(":tuned", ""): v for k, v in settings["side_information_sha256"].items()
    }
    (out / "ablation.json").write_text(json.dumps(settings))
    before = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.json")}
    old_grid = replace(job, out=str(out))
    tslrec.ablate(old_grid)
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.json")} == before
    report = (out / "results.md").read_text()
    assert "| gru4rec | gate | 2 |" in report and "gate:tuned" not in report and "Item-table sources" not in report
    assert {c["fusion"] for c in csv.DictReader((out / "cells.csv").open())} == {"base", "ci", "gate"}

    tslrec.ablate(replace(old_grid, side=sources(job, stage0_dir)))
    printed = capsys.readouterr().out
    assert printed.count("finished earlier, skipped") == 6 and printed.count(": training") == 2
    assert {p: p.stat().st_mtime_ns for p in before} == before  # the older cells untouched
    assert sorted(p.name for p in out.glob("cells/*-gate-*")) == [
        "gru4rec-gate-s42",
        "gru4rec-gate-s43",
        "gru4rec-gate-stage0-s42",
        "gru4rec-gate-stage0-s43",
    ]
    assert "| gru4rec | gate | gate:stage0 | " in (out / "results.md").read_text()
    assert read_json(out / "ablation.json")["unlabelled_source"] == "tuned"
    tslrec.ablate(old_grid)  # and the original job still resumes it, every cell skipped
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6


def test_the_settings_check_is_per_source(tmp_path):
    from tslrec.core.artifacts import write_json
    from tslrec.pipelines.ablation_grid import DIGESTS, SETTINGS_FILE, check_settings

    def started(grid, *cells):
        for name in cells:
            write_json(grid / "cells" / name / "metrics.json", {})

    defaults = {"lr": 0.001, "item_embeddings": None}
    one = {"lr": 0.001, "item_embeddings": {"tuned": "a"}, DIGESTS: {"gate:tuned": "1" * 64}}
    assert check_settings(tmp_path, one, defaults) is None
    two = {"lr": 0.001, "item_embeddings": {"tuned": "a", "stage0": "b"}, DIGESTS: {"gate:stage0": "2" * 64}}
    check_settings(tmp_path, two, defaults)  # a source added
    recorded = read_json(tmp_path / SETTINGS_FILE)
    assert recorded["item_embeddings"] == {"tuned": "a", "stage0": "b"} and set(recorded[DIGESTS]) == {
        "gate:tuned",
        "gate:stage0",
    }
    check_settings(tmp_path, {**one, "item_embeddings": {"stage0": "b"}, DIGESTS: {}}, defaults)  # a subset: fine
    with pytest.raises(InputError, match="item_embeddings source stage0='b', now 'c'"):
        check_settings(tmp_path, {**two, "item_embeddings": {"stage0": "c"}}, defaults)
    check_settings(tmp_path, {**two, DIGESTS: {"gate:stage0": "3" * 64}}, defaults)  # no cell read the old files
    started(tmp_path, "sasrec-gate-stage0-s42", "sasrec-gate-stage0-x-s42")  # (the second: another source's cell)
    with pytest.raises(InputError, match=r"the gate:stage0 cells.*/cells/\{sasrec-gate-stage0-s42\}"):
        check_settings(tmp_path, {**two, DIGESTS: {"gate:stage0": "2" * 64}}, defaults)
    # a grid made before sources: its one path is `tuned`, its digest keys the fusion alone
    old = tmp_path / "old"
    write_json(old / SETTINGS_FILE, {"lr": 0.001, "item_embeddings": "a", DIGESTS: {"gate": "1" * 64}})
    assert check_settings(old, one, defaults) == "tuned"
    started(old, "sasrec-gate-s42")  # the cells of its one source are named after the fusion alone
    with pytest.raises(InputError, match="the gate:tuned cells"):
        check_settings(old, {**one, DIGESTS: {"gate:tuned": "4" * 64}}, defaults)
    assert check_settings(old, two, defaults) == "tuned"
    assert read_json(old / SETTINGS_FILE)["unlabelled_source"] == "tuned"


def test_a_spawned_grid_worker_stops_when_its_parent_is_gone():
    """An orphaned worker (its parent killed, even with SIGKILL) exits instead of training on into the grid."""
    import subprocess
    import sys
    import time

    code = (
        "import threading, time\n"
        "from tslrec.pipelines.ablation_grid import exit_with_parent\n"
        "threading.Thread(target=exit_with_parent, args=(-1, 0.1), daemon=True).start()\n"  # -1: never its parent
        "time.sleep(60)\n"
    )
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code], timeout=50)
    assert done.returncode == 1 and time.perf_counter() - start < 30


def test_sigterm_to_the_grid_stops_its_spawned_workers(tmp_path):
    """`kill` on `tslrec ablate --workers 2` ends the spawned worker as well (it used to go on, orphaned)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    data, _ = write_toy_dataset(tmp_path / "data")
    argv = [sys.executable, "-m", "tslrec.pipelines.cli", "ablate", "--dataset", str(data)]
    argv += ["--out", str(tmp_path / "g"), "--backbones", "gru4rec,sasrec", "--fusions", "base", "--seeds", "3"]
    argv += ["--epochs", "200", "--patience"]
    argv += ["200", "--hidden", "8", "--layers", "1", "--device", "cpu", "--no-progress", "--workers", "2"]
    parent = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    children: list[int] = []
    deadline = time.time() + 120
    while not children and time.time() < deadline:  # the spawned worker (and the resource tracker)
        time.sleep(0.5)
        path = f"/proc/{parent.pid}/task/{parent.pid}/children"
        children = [int(c) for c in open(path).read().split()] if os.path.exists(path) else []
    assert children, "no worker was spawned"
    time.sleep(3)
    parent.send_signal(signal.SIGTERM)
    parent.wait(timeout=60)
    time.sleep(2)
    running = [c for c in children if os.path.exists(f"/proc/{c}")]
    alive = [c for c in running if open(f"/proc/{c}/stat").read().split()[2] != "Z"]  # not a zombie
    assert alive == [], f"workers still running after SIGTERM: {alive}"


def test_one_cell_by_number_equals_the_grids_own_cell(grid_run, tmp_path, capsys):
    """--list-cells numbers the grid and says each cell's state; --cell I trains that cell alone (a scheduler's array
    task) to the numbers the whole grid gave it, and a number outside the grid is a one-line error."""
    out, job, _ = grid_run
    other = replace(job, out=str(tmp_path / "grid"))
    tslrec.ablate(replace(other, list_cells=True))
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert [int(i) for i, _, _ in listed] == list(range(len(listed))) and not (tmp_path / "grid" / "cells").exists()
    assert {state for _, _, state in listed} == {"to do"}
    index, name = next((int(i), n) for i, n, _ in listed if n.startswith("gru4rec-ci-"))
    tslrec.ablate(replace(other, cell=index))
    tslrec.ablate(replace(other, list_cells=True))
    states = dict(line.split("\t")[1:] for line in capsys.readouterr().out.splitlines() if "\t" in line)
    assert states[name] == "finished" and list(states.values()).count("finished") == 1
    trained = sorted(p.parent.name for p in (tmp_path / "grid" / "cells").glob("*/metrics.json"))
    assert trained == [name]
    mine, grids = (read_json(g / "cells" / name / "metrics.json") for g in (tmp_path / "grid", out))
    assert mine["metrics"] == grids["metrics"] and mine["best_epoch"] == grids["best_epoch"]
    with pytest.raises(
        InputError, match=rf"AblateJob\.cell={len(listed)}: this grid has cells 0\.\.{len(listed) - 1}"
    ) as e:
        tslrec.ablate(replace(other, cell=len(listed)))
    assert "\n" not in str(e.value)  # one line


def test_a_rebuilt_grid_trains_only_the_cells_its_records_lack(grid_run, tmp_path, monkeypatch, capsys):
    """A campaign's run folder lost with its machine: the cells a benchmark record holds with today's settings and
    today's item table are skipped (--skip), the rest train; a cell whose table came out otherwise is not skipped."""
    from bench import records
    from bench.ablation import cell_record
    from bench.campaign import recorded_cells

    out, job, ds = grid_run
    monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
    cells = sorted(p.parent for p in (out / "cells").glob("*/metrics.json"))
    for cell in cells[1:]:  # the first cell was lost before it was recorded
        records.add("grid", {**cell_record(read_json(cell / "metrics.json"), None), "timings": {}})
    other = replace(job, out=str(tmp_path / "grid"))
    skip = recorded_cells(other, "grid")
    assert sorted(skip) == sorted(c.name for c in cells[1:])
    tslrec.ablate(replace(other, skip=skip))
    assert sorted(p.parent.name for p in (tmp_path / "grid" / "cells").glob("*/metrics.json")) == [cells[0].name]

    table = write_export(tmp_path / "another-export", ds, seed=7)
    rebuilt = replace(other, side=SideInfoConfig(item_embeddings=[str(table)]))
    assert not [c for c in recorded_cells(rebuilt, "grid") if "gate" in c]


def test_a_rebuilt_folder_without_its_recorded_base_cells_records_no_empty_tests(
    grid_run, tmp_path, monkeypatch, capsys
):
    """A campaign skips the base cells its records hold; recording its rebuilt folder wrote every other cell with an
    empty `vs_base` (no base here to test against) and counted the recorded cells as unfinished."""
    from bench import records
    from bench.ablation import cell_record, record_grid
    from bench.campaign import recorded_cells

    out, job, _ = grid_run
    monkeypatch.setattr(records, "RESULTS", tmp_path / "results")
    for cell in sorted(p.parent for p in (out / "cells").glob("*-base-*/metrics.json")):
        records.add("grid", {**cell_record(read_json(cell / "metrics.json"), None), "timings": {}})
    rebuilt = replace(job, out=str(tmp_path / "run" / "grid"))
    tslrec.ablate(replace(rebuilt, skip=recorded_cells(rebuilt, "grid")))
    record_grid(replace(rebuilt, out=str(tmp_path / "run")), "grid", train=False)
    assert "4 of 6 cells finished here, 2 recorded before from a folder since gone" in capsys.readouterr().out
    others = [r for r in records.load("grid") if r["variant"] != "base"]
    assert len(others) == 4 and not [r for r in others if "vs_base" in r or "vs_base_paired_users" in r]


def test_a_narrower_run_leaves_the_folders_report_to_the_wider_grid(grid_run, capsys):
    """The campaign's base-cell process rewrote results.md, summary.csv and cells.csv with the base cells alone, over
    the whole grid's report."""
    from tslrec.pipelines.ablate_job import print_outcome

    out, job, _ = grid_run
    before = {name: (out / name).read_bytes() for name in ("results.md", "summary.csv", "cells.csv")}
    outcome = tslrec.ablate(replace(job, fusions=["base"], side=SideInfoConfig()))
    assert len(outcome.results) == 2 and outcome.outside == 4
    assert {name: (out / name).read_bytes() for name in before} == before
    print_outcome(outcome)
    assert "the folder holds 4 more of a wider grid" in capsys.readouterr().out


def test_force_discards_nothing_while_a_later_cell_is_in_training(tmp_path):
    """--force deleted the outputs of each cell in turn and stopped at the first one another process was training:
    on a Beauty campaign it wiped caser-base-s42 and -s43 before it met the lock of -s44."""

    from tslrec.core.errors import InputError
    from tslrec.pipelines.ablation_grid import LOCK_FILE, discard_cells

    cells = tmp_path / "cells"
    for name in ("caser-base-s42", "caser-base-s43", "caser-base-s44"):
        (cells / name).mkdir(parents=True)
        (cells / name / "metrics.json").write_text("{}")
    lock = cells / "caser-base-s44" / LOCK_FILE
    with lock_held_elsewhere(lock):
        with pytest.raises(InputError, match="caser-base-s44 is being trained by another process"):
            discard_cells(tmp_path)
        assert len(list(cells.glob("*/metrics.json"))) == 3
    discard_cells(tmp_path)
    assert not list(cells.glob("*/metrics.json"))


def test_a_finished_cell_of_other_data_is_refused_not_skipped(tmp_path):
    """The grid's settings hold the dataset's path, not its contents: a dataset edited in place left its finished
    cells skipped and reported beside cells trained on the new data. Each finished cell is now checked against its
    own recorded settings (the dataset hash among them), and a partial cell folder trains again."""
    from tslrec.core.errors import InputError

    data, _ = write_toy_dataset(tmp_path / "data")
    job = grid_job(data, tmp_path / "grid", fusions=["base"], seeds=1)
    tslrec.ablate(job)
    cell = tmp_path / "grid" / "cells" / "gru4rec-base-s42"
    with pytest.raises(InputError, match="--no-train"):
        tslrec.ablate(replace(job, force=True), train=False)
    assert (cell / "metrics.json").is_file()  # a run that trains nothing deleted nothing
    (cell / "per_user_test.safetensors").unlink()  # a folder missing an output is not finished: it trains again
    tslrec.ablate(job)
    assert (cell / "per_user_test.safetensors").is_file()
    lines = data.read_text().splitlines()
    data.write_text("\n".join([*lines[:-1], lines[-1] + " i1"]) + "\n")  # one more item for the last user
    with pytest.raises(InputError, match=r"gru4rec-base-s42/metrics.json: this finished cell was written with"):
        tslrec.ablate(job)


def test_processes_on_one_grid_write_its_settings_in_turn(tmp_path):
    """ablation.json was read, changed and written back with no lock: the pipeline's grid and the campaign's
    ID-cell process starting together could each write their own view, and the last one dropped the other's
    item-table digests (the only guard against cells of two tables in one mean). A process now waits its turn."""
    import threading

    from tslrec.pipelines.ablation_grid import SETTINGS_FILE, SETTINGS_LOCK

    data, _ = write_toy_dataset(tmp_path / "data")
    out = tmp_path / "grid"
    out.mkdir()
    with lock_held_elsewhere(out / SETTINGS_LOCK):
        job = grid_job(data, out, fusions=["base"], seeds=1, list_cells=True)
        waiting = threading.Thread(target=tslrec.ablate, args=(job,))
        waiting.start()
        waiting.join(timeout=3)
        assert waiting.is_alive() and not (out / SETTINGS_FILE).exists()  # it waits for the other process
    waiting.join(timeout=60)
    assert not waiting.is_alive() and (out / SETTINGS_FILE).is_file()


def test_a_backbone_trains_at_its_own_settings_in_the_grid(tmp_path, capsys):
    """--backbone-train gives one backbone's cells their own learning rate and schedule, over the grid's training
    settings; the other backbones keep the grid's, and a changed entry is refused for the cells it trained."""
    from tslrec.pipelines.ablation_grid import cell_job
    from tslrec.pipelines.run_job import STAGES, load_config, stage_job

    data, ds = write_toy_dataset(tmp_path / "data")
    cosine = ["gru4rec.lr=5e-3", "gru4rec.lr_schedule=cosine", "gru4rec.warmup_epochs=0", "gru4rec.lr_cycle=2"]
    job = grid_job(data, tmp_path / "grid", backbones=["gru4rec", "sasrec"], fusions=["base"], seeds=1)
    job = replace(job, backbone_train=cosine, train=TrainConfig(epochs=2))
    gru, sas = (cell_job(job, c, tmp_path / c.name) for c in tslrec.pipelines.ablate_job.grid_cells(job))
    assert (gru.train.lr, gru.train.lr_schedule, gru.train.lr_cycle) == (5e-3, "cosine", 2)
    assert sas.train == replace(job.train, seed=sas.train.seed)
    tslrec.ablate(job)
    cells = read_json(tmp_path / "grid" / "cells" / "gru4rec-base-s42" / "metrics.json")
    assert cells["config"]["train"]["lr_schedule"] == "cosine" and cells["best_epoch"] <= 2
    with pytest.raises(InputError, match="lr_cycle"):  # the finished cell trained with cycle 2
        tslrec.ablate(replace(job, backbone_train=[*cosine[:3], "gru4rec.lr_cycle=3"]))
    bad_entries = [("bert.lr=1", "BACKBONE.SETTING=VALUE"), ("gru4rec.seed=1", "seed"), ("gru4rec.lrr=1", "lr?")]
    for bad, words in [*bad_entries, ("gru4rec.lr_schedule=[", "lr_schedule")]:
        with pytest.raises(InputError, match=words):
            replace(job, backbone_train=[bad])
    config = tmp_path / "run.yaml"  # a run config names them under its grid, as a list
    config.write_text(f"dataset: {data}\nstages:\n  ablation:\n    backbone_train: [{', '.join(cosine)}]\n")
    grid = stage_job(next(s for s in STAGES if s.name == "ablation"), load_config(str(config), []))
    assert grid.train_of("gru4rec").lr_cycle == 2


def test_a_cell_in_training_is_told_from_one_a_kill_left(tmp_path):
    """--list-cells says `training` only while the process that holds the cell's lock is alive here: a killed
    trainer's lock file names a dead process, and its cell reads `started` (a checkpoint) or `to do`."""
    import os
    import socket

    from tslrec.core.artifacts import file_lock
    from tslrec.pipelines.ablation_grid import LOCK_FILE, cell_state

    folder = tmp_path / "sasrec-base-s42"
    assert cell_state(folder) == "to do"
    with file_lock(folder / LOCK_FILE):
        assert cell_state(folder) == "training"
    (folder / LOCK_FILE).write_text(f"{socket.gethostname()} {2**22 + 7}\n")  # beyond pid_max: no such process
    assert cell_state(folder) == "to do" and not os.path.exists(folder / "checkpoint.pt")
    (folder / "checkpoint.pt").write_bytes(b"")
    assert cell_state(folder) == "started"
