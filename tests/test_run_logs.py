"""Logs for people: one line per epoch without progress bars, history.csv and a learning curve, a note when the best
epoch is the last one allowed; `--threads` applied and recorded; `run`'s own --no-progress and --threads never make a
finished stage stale."""

from __future__ import annotations

import csv

import torch
from stage2_helpers import write_toy_dataset

from tslrec.core.artifacts import read_json
from tslrec.pipelines.cli import main
from tslrec.pipelines.run_job import binding


def test_a_run_without_bars_prints_each_epoch_writes_its_curve_and_says_when_the_cap_was_best(tmp_path, capsys):
    data, _ = write_toy_dataset(tmp_path / "data")
    out = tmp_path / "run"
    argv = ["train", "--dataset", str(data), "--out", str(out), "--epochs", "2", "--patience", "5", "--hidden", "8"]
    before = torch.get_num_threads()
    try:
        main([*argv, "--lr", "0.01", "--device", "cpu", "--no-progress", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    printed = capsys.readouterr().out
    assert "run epoch 1: loss " in printed and "run epoch 2: loss " in printed and "valid NDCG@10 " in printed
    rows = list(csv.DictReader(open(out / "history.csv")))
    assert [r["epoch"] for r in rows] == ["1", "2"] and "valid_NDCG@10" in rows[0]
    assert (out / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    record = read_json(out / "metrics.json")
    assert record["threads"] == 1
    assert record["best_at_cap"] == (record["best_epoch"] == 2)
    assert ("the best epoch is the last one allowed (2)" in printed) == record["best_at_cap"]


def test_how_a_stage_runs_does_not_bind_it():
    job = {"lr": 0.001, "runtime": {"device": "auto", "progress": True, "threads": None}}
    assert binding(job) == binding({**job, "runtime": {"device": "cpu", "progress": False, "threads": 1}})


def test_log_with_sends_each_epoch_of_the_curve_to_the_tracker(tmp_path, monkeypatch, capsys):
    """--log-with NAME: the rows of history.csv go to accelerate's tracker of that name, at their epoch; an unknown
    tracker or one that is not installed is a one-line error before anything trains."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, GeneralTracker

    logged: list[tuple[dict, int]] = []

    class Fake(GeneralTracker):
        name, requires_logging_directory, main_process_only = "fake", False, True

        def __init__(self, run_name: str) -> None:
            super().__init__()
            self.run_name = run_name

        @property
        def tracker(self) -> None:
            return None

        def store_init_configuration(self, values: dict) -> None:
            pass

        def log(self, values: dict, step: int | None = None, **kwargs) -> None:
            logged.append((values, step))

    monkeypatch.setitem(LOGGER_TYPE_TO_CLASS, "fake", Fake)
    data, _ = write_toy_dataset(tmp_path / "data")
    argv = ["train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--epochs", "2", "--hidden", "8"]
    before = torch.get_num_threads()
    try:
        assert main([*argv, "--device", "cpu", "--no-progress", "--threads", "1", "--log-with", "fake"]) == 0
    finally:
        torch.set_num_threads(before)
    assert [step for _, step in logged] == [1, 2] and all("loss" in v and "valid_NDCG@10" in v for v, _ in logged)
    assert main([*argv, "--log-with", "nosuch"]) == 2
    assert "no tracker nosuch; use " in capsys.readouterr().err


def test_a_plain_runtime_given_to_a_training_job_becomes_a_training_runtime():
    """`Runtime` is what the front door exports: a training job given one still reads `log_with` at its end."""
    from tslrec import AblateJob, LiteJob, Runtime, Stage1Job, TrainingRuntime, TrainJob

    for job in (TrainJob(dataset="d"), AblateJob(dataset="d", out="x"), Stage1Job(train_dir="x"), LiteJob(dataset="d")):
        given = type(job)(**{**vars(job), "runtime": Runtime(progress=False, threads=1)})
        assert given.runtime == TrainingRuntime(progress=False, threads=1, log_with=[])
