"""The trainer learns a deterministic pattern, selects on validation and resumes after a kill."""

import torch

from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import TrainConfig, train
from tslrec.data.splits import LeaveOneOutSplits, pad_right


def test_splits_follow_leave_one_out():
    import numpy as np

    s = LeaveOneOutSplits.from_sequences([np.array([1, 2, 3, 4, 5]), np.array([6, 7, 8])], 8, max_len=3)
    windows = s.windows("fixed")
    assert windows.inputs.tolist() == [[1, 2]]  # user 2 has one training item and no training target
    assert windows.targets.tolist() == [[2, 3]]
    assert s.valid.history.tolist() == [[1, 2, 3], [6, 0, 0]] and s.valid.targets.tolist() == [4, 7]
    assert s.test.history.tolist() == [[2, 3, 4], [6, 7, 0]] and s.test.targets.tolist() == [5, 8]
    assert pad_right([np.array([1, 2, 3])], 2)[0].tolist() == [[2, 3]]


def test_sasrec_learns_a_cycle(cyclic_sequences):
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    model = build_backbone("sasrec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.0))
    res = train(
        model, splits, TrainConfig(epochs=40, batch_size=16, lr=5e-3, patience=40), torch.device("cpu"), progress=False
    )
    assert res.test.metrics["HR@5"] == 1.0
    assert res.test.metrics["NDCG@10"] > 0.9
    assert res.best_epoch <= res.epochs_run


def test_bf16_training_learns_and_keeps_float32_weights(cyclic_sequences):
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    torch.manual_seed(0)
    model = build_backbone("sasrec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.0))
    res = train(
        model,
        splits,
        TrainConfig(epochs=40, batch_size=16, lr=5e-3, patience=40, precision="bf16"),
        torch.device("cpu"),
        progress=False,
    )
    assert res.test.metrics["HR@5"] == 1.0  # autocast changes the arithmetic, not what is learnt
    assert all(p.dtype == torch.float32 for p in model.parameters())  # autocast never casts the weights themselves


def test_resume_after_kill_continues_to_the_same_end(cyclic_sequences, tmp_path):
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    cfg = BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.0)
    full = build_backbone("gru4rec", cfg)
    torch.manual_seed(0)
    ref = train(
        build_backbone("gru4rec", cfg), splits, TrainConfig(epochs=6, patience=99), torch.device("cpu"), progress=False
    )
    ckpt = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    train(
        build_backbone("gru4rec", cfg),
        splits,
        TrainConfig(epochs=3, patience=99),
        torch.device("cpu"),
        checkpoint=ckpt,
        progress=False,
    )
    torch.manual_seed(123)  # a fresh process: different init, restored from the checkpoint
    resumed = train(
        build_backbone("gru4rec", cfg),
        splits,
        TrainConfig(epochs=6, patience=99),
        torch.device("cpu"),
        checkpoint=ckpt,
        progress=False,
    )
    assert resumed.epochs_run == 6 and len(resumed.history) == 6
    assert [h["epoch"] for h in resumed.history] == list(range(1, 7))
    assert abs(resumed.history[-1]["loss"] - ref.history[-1]["loss"]) < 0.05 * ref.history[-1]["loss"]
    del full


def test_min_delta_stops_when_gains_are_too_small(cyclic_sequences):
    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    runs = []
    for min_delta in (0.0, 1.0):  # no NDCG@10 gain can exceed 1: every epoch after the first is "no better"
        torch.manual_seed(0)
        model = build_backbone("sasrec", BackboneConfig(num_items=8, hidden=16, max_len=10))
        cfg = TrainConfig(epochs=6, patience=2, lr=5e-3, min_delta=min_delta, seed=0)
        runs.append(train(model, splits, cfg, torch.device("cpu"), progress=False))
    assert runs[1].epochs_run == 3 and runs[1].best_epoch == 1  # patience 2 after the first validation
    assert runs[0].epochs_run > 3


def test_a_model_that_diverges_names_the_run_and_the_epoch(cyclic_sequences, tmp_path):
    """Weights that turn NaN in training end the run with a one-line error naming it and the epoch, never a metric."""
    import pytest

    from tslrec.core.errors import DivergedError

    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)
    model = build_backbone("sasrec", BackboneConfig(num_items=8, hidden=16, max_len=10, dropout=0.0))
    ckpt = tmp_path / "checkpoint.pt"
    with pytest.raises(DivergedError, match=r"checkpoint.pt: the model diverged in epoch 1 .*--lr"):
        train(
            model,
            splits,
            TrainConfig(epochs=3, batch_size=16, lr=float("inf")),
            torch.device("cpu"),
            checkpoint=ckpt,
            progress=False,
        )


def test_select_metric_follows_the_runs_own_cut_offs(cyclic_sequences):
    """The cut-offs were checked against the default (5, 10, 20), not the run's EvalConfig.ks: NDCG@50 was refused
    where ks held 50, and NDCG@5 with ks=(10,) passed the check and failed with KeyError after the first epoch."""
    import pytest

    from tslrec.core.errors import InputError
    from tslrec.evaluation.ranking import EvalConfig

    splits = LeaveOneOutSplits.from_sequences(cyclic_sequences, 8, max_len=10)

    def run(select: str, ks: tuple[int, ...]):
        model = build_backbone("gru4rec", BackboneConfig(num_items=8, hidden=8, max_len=10))
        cfg = TrainConfig(epochs=1, select_metric=select)
        return train(model, splits, cfg, torch.device("cpu"), eval_cfg=EvalConfig(ks=ks), progress=False)

    assert "NDCG@50" in run("NDCG@50", (10, 50)).valid.metrics
    with pytest.raises(InputError, match="K one of 10$") as err:
        run("NDCG@5", (10,))
    assert "epoch" not in str(err.value)
