"""`precision: auto` is bf16 only where the hardware computes it natively; runs record what it resolved to, older
runs recorded with the bf16 switches resume under it, and the old spellings still parse with a note."""

from __future__ import annotations

import argparse
from dataclasses import asdict

import pytest
import torch
from stage2_helpers import write_toy_dataset

import tslrec.core.precision as precision
from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import TrainConfig, run_settings
from tslrec.core.artifacts import read_json
from tslrec.core.errors import InputError
from tslrec.core.settings import add_arguments, from_mapping, from_namespace
from tslrec.evaluation.ranking import EvalConfig
from tslrec.pipelines.cli import main
from tslrec.pipelines.train_job import TrainJob
from tslrec.stage1_reconstruct.config import Stage1Config

CPU = torch.device("cpu")


@pytest.fixture
def avx2_only(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_bf16_units", lambda: [])


@pytest.fixture
def amx(monkeypatch):
    monkeypatch.setattr(precision, "_cpu_bf16_units", lambda: ["AMX"])


def test_auto_is_float32_on_a_cpu_that_only_emulates_bf16(avx2_only):
    assert precision.resolve_precision("auto", CPU) == "float32"
    assert precision.resolve_precision("bf16", CPU) == "bf16"  # an explicit choice stands
    assert precision.precision_record(CPU, "float32")["native_bf16"] is False


def test_auto_is_bf16_on_a_cpu_with_amx(amx):
    assert precision.resolve_precision("auto", CPU) == "bf16"
    assert precision.resolve_precision("float32", CPU) == "float32"
    assert precision.cpu_capability().endswith("+AMX")


def test_resolved_fills_every_nested_precision_field(avx2_only):
    job = precision.resolved(TrainJob(dataset="ml-100k"), CPU)
    assert (job.train.precision, job.eval.precision) == ("float32", "float32")
    with pytest.raises(InputError, match="precision='fast'"):
        precision.resolve_precision("fast", CPU)


def test_old_flags_and_keys_still_parse_with_a_note(capsys):
    p = argparse.ArgumentParser()
    add_arguments(p, TrainJob())
    job = from_namespace(TrainJob(), p.parse_args(["--dataset", "x", "--bf16", "--eval-bf16"]))
    assert (job.train.precision, job.eval.precision) == ("bf16", "bf16")
    assert "--bf16 is deprecated; write --precision bf16" in capsys.readouterr().err
    stage1 = from_mapping(Stage1Config(), {"no_bf16": True}, "config.yaml: stages.stage1")
    assert stage1.precision == "float32"
    assert "key 'no_bf16' is deprecated; write 'precision: float32'" in capsys.readouterr().err
    assert from_mapping(Stage1Config(), {"no_bf16": False}, "c").precision == "bf16"


def test_a_checkpoint_recorded_with_the_bf16_switch_resumes_under_the_same_precision():
    model = build_backbone("sasrec", BackboneConfig(num_items=20, hidden=8, max_len=6))
    old = run_settings(model, TrainConfig(precision="float32"), EvalConfig(precision="float32"), None).values
    for name in ("TrainConfig", "EvalConfig"):  # as an older version wrote them
        del old[name]["precision"]
        old[name]["bf16"] = False
    del old["BackboneConfig"]["input_item_bias"]  # recorded before the input-item bias existed
    same = run_settings(model, TrainConfig(precision="float32"), EvalConfig(precision="float32"), None)
    assert same.changes(old) == []
    other = run_settings(model, TrainConfig(precision="bf16"), EvalConfig(precision="float32"), None)
    assert other.changes(old) == [("TrainConfig.precision", "float32", "bf16")]


def test_a_stage1_config_recorded_with_bf16_reads_as_precision():
    recorded = {**asdict(Stage1Config()), "bf16": True}
    del recorded["precision"]
    assert Stage1Config.from_dict(recorded).precision == "bf16"


def test_a_train_run_records_the_precision_it_resolved_to_and_the_cpu(tmp_path, avx2_only):
    data, _ = write_toy_dataset(tmp_path / "data")
    argv = ["train", "--dataset", str(data), "--out", str(tmp_path / "run"), "--epochs", "1", "--hidden", "8"]
    assert main([*argv, "--device", "cpu", "--no-progress"]) in (0, None)
    record = read_json(tmp_path / "run" / "metrics.json")
    assert (record["precision"], record["eval_precision"], record["native_bf16"]) == ("float32", "float32", False)
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["config"]["train"]["precision"] == "float32"  # never "auto": a resume elsewhere must match it


def test_config_keys_are_positive_and_the_double_negative_still_reads(capsys):
    from tslrec.stage2_augment.extraction import ExtractionConfig

    assert from_mapping(ExtractionConfig(), {"prefix_cache": False}, "c").prefix_cache is False
    assert from_mapping(ExtractionConfig(), {"no_prefix_cache": True}, "c: stages.stage2").prefix_cache is False
    assert "key 'no_prefix_cache' is deprecated; write 'prefix_cache: false'" in capsys.readouterr().err
