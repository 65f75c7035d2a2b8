"""`tslrec ablate` on a toy grid: every output written, finished cells skipped on a re-run, settings guarded."""

from __future__ import annotations

import csv

import pytest
from stage2_helpers import write_export, write_toy_dataset

from tslrec.core.artifacts import read_json
from tslrec.core.errors import InputError
from tslrec.pipelines.cli import main

GRID = (
    "--backbones gru4rec --fusions base,ci,gate --seeds 2 --epochs 1 --hidden 8"
    " --layers 1 --device cpu --no-progress --activity-groups 3"
).split()


@pytest.fixture(scope="module")
def grid_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ablate")
    data, ds = write_toy_dataset(tmp / "data")
    export = write_export(tmp / "export", ds)
    argv = ["ablate", "--dataset", str(data), "--item-embeddings", str(export), "--out", str(tmp / "grid"), *GRID]
    assert main(argv) == 0
    return tmp / "grid", argv, ds


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
        (f, s) for f in ("base", "ci", "gate") for s in ("42", "43")
    )
    for c in cells:
        record = read_json(out / "cells" / f"gru4rec-{c['fusion']}-s{c['seed']}" / "metrics.json")
        assert record["variant"] == c["fusion"] and record["seed"] == int(c["seed"])
        assert float(c["NDCG@10"]) == record["metrics"]["NDCG@10"]
    report = (out / "results.md").read_text()
    assert "| gru4rec | gate | 2 |" in report and "C1 (top-1)" in report and "user activity" in report
    assert (out / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert read_json(out / "agreement.json")["items"] == ds.num_items


def test_rerun_skips_finished_cells(grid_run, capsys):
    out, argv, _ = grid_run
    before = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.json")}
    assert main(argv) == 0
    assert capsys.readouterr().out.count("finished earlier, skipped") == 6
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/metrics.json")} == before


def test_cell_held_by_a_live_process_is_left_to_it(grid_run, tmp_path, capsys):
    import subprocess
    import sys

    from tslrec.pipelines.ablation_grid import LOCK_FILE, cell_lock

    _, argv, _ = grid_run
    out = tmp_path / "grid"
    held = out / "cells" / "gru4rec-base-s42"
    held.mkdir(parents=True)
    holder = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen([sys.executable, "-c", holder, str(held / LOCK_FILE)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        grid = [*argv[: argv.index("--out")], "--out", str(out), *argv[argv.index("--out") + 2 :]]
        assert main([*grid, "--fusions", "base", "--seeds", "1"]) == 0
        printed = capsys.readouterr().out
        assert "being trained by another process" in printed and "still training in other processes" in printed
        assert not (held / "metrics.json").exists()  # left to its owner
        with cell_lock(held) as mine:
            assert not mine
    finally:
        other.kill()
        other.wait()
    with cell_lock(held) as mine:  # the owner died, killed: the kernel dropped its lock
        assert mine
    assert main([*grid, "--fusions", "base", "--seeds", "1"]) == 0
    assert (held / "metrics.json").is_file()
    with cell_lock(held) as mine:  # and a finished run does not keep it
        assert mine


def test_settings_of_an_older_grid_still_resume(grid_run, tmp_path):
    from tslrec.core.artifacts import write_json
    from tslrec.pipelines.ablation_grid import SETTINGS_FILE, check_settings

    settings = {"lr": 0.001, "bf16": False, "item_embeddings": None, "clusters": "a"}
    write_json(tmp_path / SETTINGS_FILE, {"lr": 0.001, "clusters": "a"})  # written before --bf16 existed
    defaults = {"lr": 0.001, "bf16": False, "item_embeddings": None, "clusters": None}
    check_settings(tmp_path, settings, defaults)  # an option newer than the grid, at its default: fine
    check_settings(tmp_path, {**settings, "item_embeddings": "export"}, defaults)  # a file added to a grid without one
    assert read_json(tmp_path / SETTINGS_FILE)["item_embeddings"] == "export"
    for changed in ({"bf16": True}, {"item_embeddings": "another"}, {"clusters": "b"}, {"lr": 0.01}):
        with pytest.raises(InputError, match=next(iter(changed))):
            check_settings(tmp_path, {**settings, "item_embeddings": "export", **changed}, defaults)


def test_rerun_with_other_settings_is_refused(grid_run, capsys):
    _, argv, _ = grid_run
    assert main([*argv, "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "lr=0.001" in err


@pytest.mark.parametrize(
    "flag, value, words",
    [("--fusions", "base,magic", "magic"), ("--backbones", "bert4rec", "bert4rec"), ("--seeds", "0", "--seeds")],
)
def test_bad_grid_options_exit_2(grid_run, tmp_path, capsys, flag, value, words):
    _, argv, _ = grid_run
    argv = [*argv[: argv.index("--out")], "--out", str(tmp_path / "g"), *GRID, flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and not (tmp_path / "g").exists()
