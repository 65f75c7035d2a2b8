"""The backbones' learning-rate schedule: warm-up then cosine, set per epoch from the epoch alone."""

import math

import pytest
import torch
from stage2_helpers import write_toy_dataset

from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import TrainConfig, epoch_lr, planned_epochs, train
from tslrec.core.errors import InputError
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.pipelines.options import TrainingRuntime
from tslrec.pipelines.train_job import TrainJob, train_backbone


def test_constant_is_the_learning_rate_every_epoch():
    assert [epoch_lr(TrainConfig(lr=0.01), e) for e in (0, 5, 199)] == [0.01, 0.01, 0.01]


def test_cosine_warms_up_linearly_then_decays_to_zero_at_the_end_of_its_cycle():
    cfg = TrainConfig(lr=0.03, lr_schedule="cosine", warmup_epochs=2, epochs=10)
    lrs = [epoch_lr(cfg, e) for e in range(12)]
    assert lrs[:3] == pytest.approx([0.01, 0.02, 0.03])  # warm-up, then the peak
    assert lrs[6] == pytest.approx(0.03 * 0.5 * (1 + math.cos(math.pi * 4 / 8)))  # halfway down the cosine
    assert all(a > b for a, b in zip(lrs[2:10], lrs[3:10])) and lrs[10] == lrs[11] == 0.0
    short = TrainConfig(lr=0.03, lr_schedule="cosine", epochs=100, lr_cycle=10)  # a cycle shorter than the cap
    assert epoch_lr(short, 0) == 0.03 and epoch_lr(short, 10) == 0.0


def test_a_cycle_no_longer_than_its_warm_up_is_refused():
    with pytest.raises(InputError, match="lr_cycle"):
        TrainConfig(lr_schedule="cosine", warmup_epochs=5, lr_cycle=5)


def test_the_trainer_steps_each_epoch_at_its_scheduled_rate(cyclic_sequences):
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    model = build_backbone("gru4rec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.0))
    cfg = TrainConfig(epochs=4, batch_size=16, lr=5e-3, patience=10, lr_schedule="cosine", warmup_epochs=1)
    res = train(model, splits, cfg, torch.device("cpu"), progress=False)
    assert [h["lr"] for h in res.history] == pytest.approx([2.5e-3, 5e-3, 3.75e-3, 1.25e-3])


def test_a_run_ends_with_its_cosine_cycle(cyclic_sequences):
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    model = build_backbone("gru4rec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.0))
    cfg = TrainConfig(epochs=10, batch_size=16, lr=5e-3, patience=10, lr_schedule="cosine", lr_cycle=3)
    assert planned_epochs(cfg) == 3 and planned_epochs(TrainConfig(epochs=10)) == 10
    res = train(model, splits, cfg, torch.device("cpu"), progress=False)
    assert len(res.history) == 3  # an epoch at rate 0 learns nothing


def test_a_cosine_run_that_ends_with_its_cycle_is_not_at_the_epochs_cap(tmp_path, capsys):
    data, _ = write_toy_dataset(tmp_path / "data")
    job = TrainJob(
        dataset=str(data),
        out=str(tmp_path / "run"),
        model=BackboneConfig(hidden=8),
        train=TrainConfig(epochs=10, lr=0.01, lr_schedule="cosine", lr_cycle=3, precision="float32"),
        eval=EvalConfig(precision="float32"),  # the toy's best epoch is float32's (`auto` is bf16 with native bf16)
        runtime=TrainingRuntime(device="cpu", progress=False, threads=1),
    )
    before = torch.get_num_threads()
    try:
        record = train_backbone(job).record
    finally:
        torch.set_num_threads(before)
    assert record["epochs"] == record["best_epoch"] == 3  # the cycle ended the run at its best epoch
    assert record["best_at_cap"] is False  # the cap is --epochs (10), not the cycle
    assert "last one allowed" not in capsys.readouterr().out


def test_a_cosine_run_spanning_its_epochs_refuses_a_larger_budget_on_resume(cyclic_sequences, tmp_path):
    """Without --lr-cycle the cosine spans --epochs: resuming 3 of 4 epochs as 3 of 8 would jump the rate from near
    0 back up, so the run is refused; with its own cycle (or a constant rate) a larger budget continues the run."""
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)

    def run(ckpt, **kw):
        model = build_backbone("gru4rec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.0))
        return train(
            model,
            splits,
            TrainConfig(batch_size=16, patience=99, **kw),
            torch.device("cpu"),
            checkpoint=ckpt,
            progress=False,
        )

    cosine = {"lr": 5e-3, "lr_schedule": "cosine"}
    run(tmp_path / "a.pt", epochs=3, **cosine)
    with pytest.raises(InputError, match="epochs"):
        run(tmp_path / "a.pt", epochs=8, **cosine)
    run(tmp_path / "b.pt", epochs=3, lr_cycle=6, **cosine)
    assert len(run(tmp_path / "b.pt", epochs=5, lr_cycle=6, **cosine).history) == 5


def test_a_cosine_setting_with_a_constant_rate_is_refused():
    """--warmup-epochs and --lr-cycle without --lr-schedule cosine trained at a constant rate, and their record
    named a warm-up and a cycle that never happened."""
    with pytest.raises(InputError, match="TrainConfig.lr_cycle=3: read by --lr-schedule cosine only"):
        TrainConfig(epochs=10, lr_cycle=3)
    with pytest.raises(InputError, match="TrainConfig.warmup_epochs=2"):
        TrainConfig(warmup_epochs=2)
    assert EvalConfig(sampled_negatives=100, seed=7).seed == 7
    with pytest.raises(InputError, match="EvalConfig.seed=7: seeds sampled negatives only; none here"):
        EvalConfig(seed=7)  # full ranking draws nothing
