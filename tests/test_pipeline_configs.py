"""Every config shipped in configs/ turns into stage commands the CLI accepts (no training)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tslrec.pipelines.cli import build_parser, main
from tslrec.pipelines.run_job import STAGES, load_config, stage_argv

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


def test_configs_are_shipped():
    assert {"ml-100k.yaml", "ml-1m.yaml", "ml-1m-cpu.yaml", "beauty.yaml"} <= {p.name for p in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_builds_valid_stage_commands(path):
    parser = build_parser()
    cfg = load_config(path, [])
    for stage in STAGES:
        argv = stage_argv(stage, cfg, parser)
        args = parser.parse_args(argv)  # argparse exits on a bad value
        if stage.name in ("stage0", "ablation"):
            assert args.max_len == cfg["data"]["max_len"]  # data options reach the stages that load the dataset


@pytest.mark.parametrize("config, records_name", [("ml-1m-cpu.yaml", "ablation-ml-1m"), ("beauty.yaml", "ablation-beauty")])
def test_config_is_the_setting_of_its_recorded_grid(config, records_name):
    """Each of these configs claims to reproduce a recorded grid in bench/results: its grid options must match."""
    root = Path(__file__).resolve().parent.parent
    records = root / "bench" / "results" / f"{records_name}.json"
    if not records.is_file():
        pytest.skip(f"no {records_name} recorded")
    cells = [r for r in json.loads(records.read_text()) if r["model"] != "tslrec-stage2"]
    parser = build_parser()
    grid = parser.parse_args(stage_argv(STAGES[-1], load_config(root / "configs" / config, []), parser))
    for r in cells:
        data, model, train = r["config"]["data"], r["config"]["model"], r["config"]["train"]
        assert (grid.kcore, grid.max_len, grid.hidden, grid.layers, grid.dropout) == \
            (data["kcore"], data["max_len"], model["hidden"], model["num_layers"], model["dropout"])
        assert (grid.batch_size, grid.lr, grid.epochs, grid.patience, grid.bf16) == \
            (train["batch_size"], train["lr"], train["epochs"], train["patience"], train["bf16"])
    assert {r["seed"] for r in cells} == {grid.seed + i for i in range(grid.seeds)}
    assert {(r["model"], r["variant"]) for r in cells} == {(b, f) for b in grid.backbones.split(",")
                                                           for f in grid.fusions.split(",")}


def test_run_prints_the_final_report_once(tmp_path, monkeypatch, capsys):
    from tslrec.pipelines import ablate_job, stage1_job, stage2_job, train_job

    def fake_stage(args):
        if getattr(args, "command", None) == "ablate" or hasattr(args, "fusions"):
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "results.md").write_text("REPORT-TABLE\n")
            print("REPORT-TABLE")  # what `tslrec ablate` prints as it finishes

    for job in (train_job, stage1_job, stage2_job, ablate_job):
        monkeypatch.setattr(job, "run", fake_stage)
    config = tmp_path / "c.yaml"
    config.write_text(f"dataset: ml-100k\nout: {tmp_path / 'out'}\n")
    assert main(["run", "--config", str(config)]) == 0
    assert capsys.readouterr().out.count("REPORT-TABLE") == 1
    assert main(["run", "--config", str(config)]) == 0  # every stage up to date: the report is shown from its file
    assert capsys.readouterr().out.count("REPORT-TABLE") == 1


def test_version_flag(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("tslrec ")
