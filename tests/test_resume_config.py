"""Resuming never mixes two configurations.

A checkpoint records the settings it was written under; a run started again with another one
stops with a one-line InputError naming the setting, both values and the fix (--force or another
--out); --force starts over; the same settings resume to the numbers of an uninterrupted run
(RNG, CUDA RNG and the sampled-negative generator restored). For `tslrec train`, `tslrec stage1`
and the cells of `tslrec ablate`.
"""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from stage1_helpers import clustered_items, quick_stage1_cfg, tiny_llama_dir, tiny_llm_cfg, user_sequences  # noqa: F401
from stage2_helpers import write_export, write_toy_dataset

import tslrec
import tslrec.backbones.training as training
from tslrec import AblateJob, DataConfig, TrainJob
from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import TrainConfig, train
from tslrec.core.artifacts import load_tensors, read_json
from tslrec.core.errors import InputError
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.pipelines import train_job
from tslrec.pipelines.cli import main
from tslrec.pipelines.options import TrainingRuntime
from tslrec.pipelines.side_information import SideInfoConfig
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.training import train_stage1

CPU = torch.device("cpu")


class Killed(Exception):
    """Stands in for SIGKILL: raised from inside the run, nothing after it runs."""


def kill_after_epochs(monkeypatch, epochs: int) -> None:
    """Kill the trainer during epoch `epochs + 1`, after its optimizer steps and before its checkpoint."""
    real, calls = training.evaluate_split, {"n": 0}

    def evaluate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > epochs:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate_split", evaluate)


# ---------------------------------------------------------------- backbones.training.train


def fresh_model(dropout: float = 0.3):
    torch.manual_seed(0)
    return build_backbone("sasrec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=dropout))


def bce_cfg(**kw) -> TrainConfig:
    return TrainConfig(**{"epochs": 5, "batch_size": 16, "lr": 5e-3, "patience": 99, "loss": "bce", **kw})


@pytest.fixture
def killed_checkpoint(cyclic_sequences, tmp_path, monkeypatch):
    """(splits, checkpoint) of a bce run killed in epoch 3 (the checkpoint holds epoch 2)."""
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    ckpt = tmp_path / "checkpoint.pt"
    kill_after_epochs(monkeypatch, 2)
    with pytest.raises(Killed):
        train(fresh_model(), splits, bce_cfg(), CPU, checkpoint=ckpt, progress=False)
    monkeypatch.undo()
    assert torch.load(ckpt, weights_only=True)["state"]["epoch"] == 2  # plain types only
    return splits, ckpt


def test_same_settings_resume_to_the_numbers_of_an_uninterrupted_run(killed_checkpoint):
    splits, ckpt = killed_checkpoint
    reference = fresh_model()
    ref = train(reference, splits, bce_cfg(), CPU, progress=False)
    resumed = fresh_model()
    torch.manual_seed(123)  # a fresh process: another global RNG state, restored from the checkpoint
    res = train(resumed, splits, bce_cfg(), CPU, checkpoint=ckpt, progress=False)
    # dropout masks and the sampled negatives continue where they stopped: the same losses, bit for bit
    assert [h["loss"] for h in res.history] == [h["loss"] for h in ref.history]
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), resumed.state_dict().values()))
    assert res.test.metrics == ref.test.metrics


def test_another_lr_is_refused_and_force_starts_over(killed_checkpoint):
    splits, ckpt = killed_checkpoint
    with pytest.raises(InputError, match=r"TrainConfig\.lr=0\.005, now 0\.01; .*--force.*another --out") as e:
        train(fresh_model(), splits, bce_cfg(lr=0.01), CPU, checkpoint=ckpt, progress=False)
    assert "\n" not in str(e.value) and ckpt.is_file()  # one line; nothing discarded without --force
    forced = train(fresh_model(), splits, bce_cfg(lr=0.01), CPU, checkpoint=ckpt, progress=False, force=True)
    fresh = train(fresh_model(), splits, bce_cfg(lr=0.01), CPU, progress=False)
    assert [h["loss"] for h in forced.history] == [h["loss"] for h in fresh.history]


@pytest.mark.parametrize(
    "change, words",
    [
        ({"epochs": 1}, r"TrainConfig\.epochs=5, now 1"),  # fewer epochs than already run
        ({"loss": "ce"}, r"TrainConfig\.loss='bce', now 'ce'"),
        ({"seed": 7}, r"TrainConfig\.seed=42, now 7"),
    ],
)
def test_other_train_settings_are_refused(killed_checkpoint, change, words):
    splits, ckpt = killed_checkpoint
    with pytest.raises(InputError, match=words):
        train(fresh_model(), splits, bce_cfg(**change), CPU, checkpoint=ckpt, progress=False)


def test_model_and_caller_settings_are_refused(killed_checkpoint):
    splits, ckpt = killed_checkpoint
    with pytest.raises(InputError, match=r"BackboneConfig\.dropout=0\.3, now 0\.1"):
        train(fresh_model(dropout=0.1), splits, bce_cfg(), CPU, checkpoint=ckpt, progress=False)
    with pytest.raises(InputError, match=r"data=<unset>, now 'v2'"):
        train(fresh_model(), splits, bce_cfg(), CPU, checkpoint=ckpt, progress=False, settings={"data": "v2"})


def test_checkpoint_without_settings_is_refused(killed_checkpoint):
    splits, ckpt = killed_checkpoint
    old = torch.load(ckpt, weights_only=True)
    del old["settings"]  # as an older tslrec wrote it
    torch.save(old, ckpt)
    with pytest.raises(InputError, match="records no settings.*--force"):
        train(fresh_model(), splits, bce_cfg(), CPU, checkpoint=ckpt, progress=False)


# ---------------------------------------------------------------- tslrec train / tslrec ablate

TRAIN = ["--backbone", "gru4rec", "--epochs", "2", "--hidden", "8", "--device", "cpu", "--no-progress"]
TRAIN_CFG = TrainConfig(epochs=2)  # the training settings of TRAIN


def toy_train_job(dataset, out, /, **overrides) -> TrainJob:
    """The job of TRAIN on `dataset` into `out` (a 1-layer GRU4Rec, H = 8, 2 epochs, on the CPU), with `overrides`."""
    job = TrainJob(
        dataset=str(dataset),
        out=str(out),
        backbone="gru4rec",
        model=BackboneConfig(hidden=8),
        train=TRAIN_CFG,
        runtime=TrainingRuntime(device="cpu", progress=False),
    )
    return replace(job, **overrides)


def with_table(export) -> SideInfoConfig:
    """--item-embeddings EXPORT"""
    return SideInfoConfig(item_embeddings=[str(export)])


@pytest.fixture
def killed_train_job(tmp_path, monkeypatch):
    """A `tslrec train` folder whose run was killed after training, before metrics.json: checkpoint.pt is left."""
    data, ds = write_toy_dataset(tmp_path / "data")
    export = write_export(tmp_path / "export", ds)
    out = tmp_path / "run"

    def killed(*args, **kwargs):
        raise Killed

    monkeypatch.setattr(train_job, "save_tensors", killed)
    with pytest.raises(Killed):
        tslrec.train(toy_train_job(data, out))
    monkeypatch.undo()
    assert (out / "checkpoint.pt").is_file() and not (out / "metrics.json").exists()
    return data, export, out


@pytest.mark.parametrize(
    "change, words",
    [
        ({"train": replace(TRAIN_CFG, lr=0.01)}, "TrainConfig.lr=0.001, now 0.01"),
        ({"fusion": "ci"}, "side_information.fusion.kind='base', now 'ci'"),
        ({"data": DataConfig(max_len=20)}, "BackboneConfig.max_len=50, now 20 (and 1 other setting)"),
    ],
)
def test_train_job_refuses_other_settings(killed_train_job, change, words):
    data, export, out = killed_train_job
    with pytest.raises(InputError, match=re.escape(words) + ".*--force.*--out") as e:
        side = with_table(export) if "fusion" in change else SideInfoConfig()  # only a fusion that reads it
        tslrec.train(toy_train_job(data, out, side=side, **change))
    assert "\n" not in str(e.value)  # one line
    assert (out / "checkpoint.pt").is_file()


def test_train_command_refusal_is_one_line_naming_the_flag_with_exit_2(killed_train_job, capsys):
    data, export, out = killed_train_job
    code = main(["train", "--dataset", str(data), "--out", str(out), *TRAIN, "--lr", "0.01"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--lr 0.001, now 0.01" in err and "--force" in err and "--out" in err
    assert (out / "checkpoint.pt").is_file()


def test_train_job_force_starts_over(killed_train_job, tmp_path):
    data, _, out = killed_train_job
    lr = replace(TRAIN_CFG, lr=0.01)
    tslrec.train(toy_train_job(data, out, train=lr, force=True))
    fresh = tmp_path / "fresh"
    tslrec.train(toy_train_job(data, fresh, train=lr))
    forced, clean = read_json(out / "metrics.json"), read_json(fresh / "metrics.json")
    assert forced["metrics"] == clean["metrics"] and [h["loss"] for h in forced["history"]] == [
        h["loss"] for h in clean["history"]
    ]
    assert not (out / "checkpoint.pt").exists()


def test_train_job_same_settings_resume(killed_train_job, tmp_path):
    data, _, out = killed_train_job
    tslrec.train(toy_train_job(data, out))
    fresh = tmp_path / "fresh"
    tslrec.train(toy_train_job(data, fresh))
    assert read_json(out / "metrics.json")["metrics"] == read_json(fresh / "metrics.json")["metrics"]


def test_a_resumed_run_records_the_wall_time_of_every_process(killed_train_job):
    data, _, out = killed_train_job
    saved = torch.load(out / "checkpoint.pt", weights_only=True)
    saved["state"]["elapsed"] = 1000.0  # as if the killed process had trained for 1000 s
    torch.save(saved, out / "checkpoint.pt")
    tslrec.train(toy_train_job(data, out))
    record = read_json(out / "metrics.json")
    assert record["earlier_processes_seconds"] == 1000.0 and 1000.0 <= record["wall_seconds"] < 1100.0


def test_export_asked_for_after_training_is_written_from_the_saved_model_without_training(tmp_path, monkeypatch):
    data, _ = write_toy_dataset(tmp_path / "data")
    out, exported = tmp_path / "run", tmp_path / "exported"
    tslrec.train(toy_train_job(data, out))
    assert not (out / "item_embeddings.safetensors").exists()
    tslrec.train(toy_train_job(data, exported, export_item_embeddings=True))
    record = read_json(out / "metrics.json")

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(train_job, "train", no_training)
    tslrec.train(toy_train_job(data, out, export_item_embeddings=True))
    table = load_tensors(out / "item_embeddings.safetensors")["embeddings"]  # [N+1, H]
    assert torch.equal(table, load_tensors(exported / "item_embeddings.safetensors")["embeddings"])
    assert read_json(out / "metrics.json") == record  # the finished run's record is kept as it was


def test_train_job_refuses_an_llm_table_with_other_contents(tmp_path, monkeypatch):
    data, ds = write_toy_dataset(tmp_path / "data")
    export = write_export(tmp_path / "export", ds, seed=0)
    gate = toy_train_job(data, tmp_path / "run", fusion="gate", side=with_table(export))
    monkeypatch.setattr(train_job, "save_tensors", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        tslrec.train(gate)
    monkeypatch.undo()
    write_export(export, ds, seed=1)  # stage 2 written again into the same folder: same path, other vectors
    with pytest.raises(InputError, match=r"side_information\.llm_table_sha256="):
        tslrec.train(gate)


def toy_ablate_job(dataset, export, out, /, **overrides) -> AblateJob:
    """A one-cell grid, gru4rec x gate x 1 seed, 1 epoch of a 1-layer H = 8 model on the CPU, with `overrides`."""
    job = AblateJob(
        dataset=str(dataset),
        out=str(out),
        side=with_table(export),
        backbones=["gru4rec"],
        fusions=["gate"],
        seeds=1,
        model=BackboneConfig(hidden=8),
        train=TrainConfig(epochs=1),
        runtime=TrainingRuntime(device="cpu", progress=False),
        activity_groups=2,
    )
    return replace(job, **overrides)


def test_ablate_refuses_a_swapped_export_and_force_starts_over(tmp_path, capsys):
    data, ds = write_toy_dataset(tmp_path / "data")
    export = write_export(tmp_path / "export", ds, seed=0)
    job = toy_ablate_job(data, export, tmp_path / "grid")
    tslrec.ablate(job)
    gate = tmp_path / "grid" / "cells" / "gru4rec-gate-tuned-s42" / "metrics.json"  # a bare path is source tuned
    before = read_json(gate)["metrics"]
    write_export(export, ds, seed=1)  # the export changed under the same path: finished gate cells are stale
    with pytest.raises(InputError, match="gate:tuned cells.*--force") as e:
        tslrec.ablate(job)
    assert "\n" not in str(e.value)  # one line
    capsys.readouterr()
    tslrec.ablate(replace(job, force=True))
    assert "finished earlier" not in capsys.readouterr().out  # every cell trained again
    assert read_json(gate)["metrics"] != before
    tslrec.ablate(job)  # the new contents are the grid's now
    with pytest.raises(InputError, match="--force"):
        tslrec.ablate(replace(job, train=replace(job.train, lr=0.01)))


def test_a_swapped_export_retrains_its_own_cells_once_they_are_deleted(tmp_path):
    """The refusal of a changed table offered only --force, which retrains the base cells too; deleting the cells
    of the changed table is enough, and the others stay finished."""
    import shutil

    data, ds = write_toy_dataset(tmp_path / "data")
    export = write_export(tmp_path / "export", ds, seed=0)
    job = toy_ablate_job(data, export, tmp_path / "grid", fusions=["base", "gate"])
    tslrec.ablate(job)
    cells = tmp_path / "grid" / "cells"
    base = read_json(cells / "gru4rec-base-s42" / "metrics.json")
    old = read_json(cells / "gru4rec-gate-tuned-s42" / "metrics.json")["settings"]["side_information"]
    write_export(export, ds, seed=1)
    with pytest.raises(InputError, match=r"delete their folders \(.*/cells/\{gru4rec-gate-tuned-s42\}\)"):
        tslrec.ablate(job)
    shutil.rmtree(cells / "gru4rec-gate-tuned-s42")
    tslrec.ablate(job)
    assert read_json(cells / "gru4rec-base-s42" / "metrics.json") == base  # not trained again
    new = read_json(cells / "gru4rec-gate-tuned-s42" / "metrics.json")["settings"]["side_information"]
    assert new["llm_table_sha256"] != old["llm_table_sha256"]
    tslrec.ablate(job)  # the new contents are the grid's now


# ---------------------------------------------------------------- stage 1

TABLE, TRUTH = clustered_items(n_items=60, dim=8, k=4, seed=0)
SEQS = user_sequences(TRUTH, n_users=48, k=4, seed=0)


def stage1_cfg(**kw) -> Stage1Config:
    return quick_stage1_cfg(**{"epochs": 1, "batch_size": 8, **kw})


def test_stage1_refuses_another_lr_and_force_starts_over(tiny_llm_cfg, tmp_path):
    out = tmp_path / "s1"

    def kill_at_3(step: int) -> None:
        if step == 3:
            raise Killed

    with pytest.raises(Killed):
        train_stage1(TABLE, SEQS, out, stage1_cfg(), tiny_llm_cfg, device="cpu", on_step=kill_at_3, progress=False)
    assert torch.load(out / "checkpoint.pt", weights_only=True)["state"]["step"] == 2
    with pytest.raises(InputError, match=r"Stage1Config\.lr=0\.005, now 0\.001; .*--force.*another --out") as e:
        train_stage1(TABLE, SEQS, out, stage1_cfg(lr=1e-3), tiny_llm_cfg, device="cpu", progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(InputError, match=r"item_table_sha256="):  # same shape, other item vectors
        train_stage1(TABLE * 2, SEQS, out, stage1_cfg(), tiny_llm_cfg, device="cpu", progress=False)
    steps: list[int] = []
    forced = train_stage1(
        TABLE,
        SEQS,
        out,
        stage1_cfg(lr=1e-3),
        tiny_llm_cfg,
        device="cpu",
        on_step=steps.append,
        progress=False,
        force=True,
    )
    assert steps == [1, 2, 3, 4]  # started over, not resumed at step 3
    assert [r["step"] for r in read_json(out / "log.json") if "loss" in r] == [1, 2, 3, 4]
    # a finished run: the same settings return its metrics, others are refused, --force trains again
    assert (
        train_stage1(TABLE, SEQS, out, stage1_cfg(lr=1e-3), tiny_llm_cfg, device="cpu", progress=False)["metrics"]
        == forced["metrics"]
    )
    with pytest.raises(InputError, match=r"finished stage 1 run was written with Stage1Config\.lr=0\.001, now 0\.005"):
        train_stage1(TABLE, SEQS, out, stage1_cfg(), tiny_llm_cfg, device="cpu", progress=False)


def test_stage1_job_names_the_flag(tiny_llama_dir, tmp_path, capsys):
    from test_stage1_job import stage1_args, write_train_dir

    table, truth = clustered_items(n_items=50, dim=8, k=4, seed=2)
    folder, data_file, _ = write_train_dir(
        tmp_path, table, user_sequences(truth, n_users=40, k=4, seed=2, length=(5, 12))
    )
    out = tmp_path / "s1"
    extra = "--epochs 1 --batch-size 8 --precision float32 --untuned-baseline none --max-users 12".split()
    argv = ["stage1", *stage1_args(folder, data_file, out, tiny_llama_dir, *extra)]
    assert main(argv) == 0
    capsys.readouterr()
    assert main([*argv, "--lr", "0.001"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr 0.0005, now 0.001" in err and "--force" in err
    assert main([*argv, "--lr", "0.001", "--force"]) == 0
    assert read_json(out / "config.json")["stage1"]["lr"] == 0.001


def test_a_finished_train_folder_is_reused_or_refused(tmp_path):
    data = tmp_path / "d.txt"
    data.write_text("".join(f"u{u} " + " ".join(f"i{(u + t) % 9}" for t in range(6)) + "\n" for u in range(12)))
    job = TrainJob(
        dataset=str(data),
        out=str(tmp_path / "run"),
        model=BackboneConfig(hidden=8),
        train=TrainConfig(epochs=2),
        runtime=TrainingRuntime(progress=False),
    )
    tslrec.train(job)
    first = (tmp_path / "run" / "metrics.json").read_text()
    tslrec.train(job)
    assert (tmp_path / "run" / "metrics.json").read_text() == first  # same settings: reused
    other = replace(job, train=replace(job.train, lr=0.01))
    with pytest.raises(InputError, match=r"finished run was written with TrainConfig\.lr=0\.001, now 0\.01; .*--force"):
        tslrec.train(other)  # other settings: refused, the finished run stays
    assert (tmp_path / "run" / "metrics.json").read_text() == first
    tslrec.train(replace(other, force=True))
    assert (tmp_path / "run" / "metrics.json").read_text() != first


def test_settings_a_model_does_not_read_do_not_bind_a_run_and_later_ones_count_as_what_it_did():
    """A SASRec run recorded when Caser's window defaulted to 5, before `batching` and `loss_weight` existed,
    matches settings that do what it did (length batches, each batch's mean loss); the same for a Caser run is a
    change of its window, and the new default loss weighting (per target) is a change too."""
    from dataclasses import asdict, replace

    from tslrec.backbones.training import run_settings
    from tslrec.evaluation.ranking import EvalConfig

    def recorded(backbone: str) -> dict:
        model = build_backbone(backbone, BackboneConfig(num_items=20, hidden=8, max_len=6))
        old = run_settings(model, TrainConfig(), EvalConfig(), None).values
        old["BackboneConfig"] = {**asdict(model.cfg), "caser_window": 5}  # every field, as written back then
        del old["TrainConfig"]["batching"], old["TrainConfig"]["loss_weight"]
        return old

    for backbone in ("sasrec", "caser"):
        now = build_backbone(backbone, BackboneConfig(num_items=20, hidden=8, max_len=6))
        as_then = run_settings(now, replace(TrainConfig(), loss_weight="batch"), EvalConfig(), None)
        changes = as_then.changes(recorded(backbone))  # what it did before those settings existed
        assert [c[0] for c in changes] == ([] if backbone == "sasrec" else ["BackboneConfig.caser_window"])
        default = run_settings(now, TrainConfig(), EvalConfig(), None)  # target-weighted loss: another behaviour
        changed = [c[0] for c in default.changes(recorded(backbone))]
        assert "TrainConfig.loss_weight" in changed and "TrainConfig.batching" not in changed


def test_a_stage1_run_recorded_before_a_setting_existed_is_still_current(tiny_llm_cfg, tmp_path):
    """A finished stage 1 whose config.json predates a setting (here lr_schedule, at its default, and bf16, the
    older name of precision) is reused, not refused: settings added later, at their defaults, never make a run
    stale. The same setting at another value is a change."""
    from tslrec.core.artifacts import write_json

    out = tmp_path / "s1"
    first = train_stage1(TABLE, SEQS, out, stage1_cfg(), tiny_llm_cfg, device="cpu", progress=False)
    config = read_json(out / "config.json")
    del config["stage1"]["lr_schedule"]
    config["stage1"]["bf16"] = config["stage1"].pop("precision") == "bf16"
    write_json(out / "config.json", config)
    again = train_stage1(TABLE, SEQS, out, stage1_cfg(), tiny_llm_cfg, device="cpu", progress=False)
    assert again["metrics"] == first["metrics"]
    with pytest.raises(InputError, match=r"Stage1Config\.lr_schedule=<unset>, now 'linear'"):
        train_stage1(TABLE, SEQS, out, stage1_cfg(lr_schedule="linear"), tiny_llm_cfg, device="cpu", progress=False)
