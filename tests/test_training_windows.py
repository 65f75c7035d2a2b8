"""Every training interaction is a target in every epoch, however long the sequence is against max_len."""

from collections import Counter

import numpy as np
import pytest
import torch

from tslrec.data.splits import (
    LeaveOneOutSplits,
    epoch_batches,
    length_bucketed_batches,
    target_weights,
    window_starts,
)


def _targets(windows) -> Counter:
    """(previous item, target) pairs the windows train on."""
    pairs = Counter()
    for x, y, n in zip(windows.inputs.tolist(), windows.targets.tolist(), windows.lengths.tolist(), strict=True):
        pairs.update((a, b) for a, b in zip(x[:n], y[:n], strict=True) if b)  # y = 0: context only
    return pairs


LONG = [np.arange(1, 24), np.arange(30, 37), np.arange(40, 44)]  # 21, 5 and 2 training items (+ valid, test)


@pytest.mark.parametrize("mode", ["fixed", "shifted", "overlap"])
def test_every_training_target_once_per_epoch(mode):
    splits = LeaveOneOutSplits.from_sequences(LONG, 50, max_len=4)
    expected = Counter()
    for s in LONG:
        t = s[:-2]
        expected.update(zip(t[:-1].tolist(), t[1:].tolist(), strict=True))
    for epoch in range(3):
        windows = splits.windows(mode, np.random.default_rng([0, epoch]))
        assert _targets(windows) == expected  # each (input, target) pair exactly once
        assert windows.num_targets == splits.num_train_targets == 20 + 4 + 1
        assert windows.inputs.shape[1] == 4


def test_overlap_windows_give_every_target_half_a_window_of_context():
    windows = LeaveOneOutSplits.from_sequences(LONG, 50, max_len=4).windows("overlap")
    first_items = {1, 30, 40}  # a window that starts at a user's first item has no earlier items to show
    for x, y in zip(windows.inputs.tolist(), windows.targets.tolist(), strict=True):
        owned = [pos for pos, target in enumerate(y) if target]
        assert owned, (x, y)
        if x[0] not in first_items:
            assert min(owned) >= 2, (x, y)  # max_len // 2 items of context before the first target it trains
    assert windows.targets[1].tolist() == [0, 0, 6, 7]  # inputs 3, 4, 5, 6: targets 4 and 5 belong to the window before
    assert windows.num_targets == 20 + 4 + 1


def test_last_window_keeps_only_the_most_recent_targets():
    windows = LeaveOneOutSplits.from_sequences(LONG, 50, max_len=4).windows("last")
    assert windows.num_targets == 4 + 4 + 1
    assert windows.targets[0].tolist() == [18, 19, 20, 21]


def test_shifted_windows_move_between_epochs():
    starts = {tuple(window_starts(20, 4, off)) for off in range(4)}
    assert len(starts) == 4 and all(s[0] == 0 for s in starts)
    splits = LeaveOneOutSplits.from_sequences(LONG, 50, max_len=4)
    cuts = {tuple(splits.windows("shifted", np.random.default_rng([0, e])).lengths.tolist()) for e in range(8)}
    assert len(cuts) > 1


def test_bucketed_batches_cover_every_row_once_and_group_lengths():
    lengths = torch.tensor([1, 50, 2, 49, 3, 48, 4, 47])
    batches = length_bucketed_batches(lengths, 2, torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(8))
    assert all(len(b) == 2 for b in batches)
    assert all(abs(int(lengths[b[0]]) - int(lengths[b[1]])) <= 1 for b in batches)  # long with long


def test_random_batching_mixes_lengths_and_covers_every_row_once():
    """`--batching random` is a plain shuffle: every window once, and batches not sorted by length."""
    lengths = torch.tensor([1, 50, 2, 49, 3, 48, 4, 47] * 8)
    batches = epoch_batches(lengths, 8, "random", torch.Generator().manual_seed(0))
    assert sorted(torch.cat(batches).tolist()) == list(range(64))
    spread = [int(lengths[b].max() - lengths[b].min()) for b in batches]
    assert max(spread) > 40  # short and long windows share a batch
    bucketed = epoch_batches(lengths, 8, "length", torch.Generator().manual_seed(0))
    assert max(int(lengths[b].max() - lengths[b].min()) for b in bucketed) <= 3


def test_target_weights_give_every_target_the_same_weight_in_length_bucketed_batches():
    """Batches of short windows hold few targets; weighting each batch's mean loss by its share of the epoch's
    targets makes the epoch's summed loss the mean over all targets. Unweighted, the short windows' targets
    weigh more (the bias that made length-bucketed training worse on Beauty)."""
    lengths = torch.tensor([1, 2, 1, 2, 50, 49, 48, 50])
    targets = torch.zeros(8, 50, dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        targets[row, :n] = 1 + torch.arange(n)
    per_target = torch.rand(8, 50) * (targets > 0)  # any per-target losses
    batches = epoch_batches(lengths, 4, "length", torch.Generator().manual_seed(0))
    batch_means = [float(per_target[b].sum() / (targets[b] > 0).sum()) for b in batches]
    epoch_mean = float(per_target.sum() / (targets > 0).sum())
    weights = target_weights(targets, batches)
    assert sum(w * m for w, m in zip(weights, batch_means)) == pytest.approx(len(batches) * epoch_mean)
    assert sum(batch_means) != pytest.approx(len(batches) * epoch_mean)  # unweighted: biased toward short windows


def test_an_epoch_records_the_encoder_positions_its_batching_costs():
    """The history records padded encoder positions per epoch: length batches pad little, random ones more."""
    from tslrec.backbones.base import BackboneConfig
    from tslrec.backbones.registry import build_backbone
    from tslrec.backbones.training import TrainConfig, train

    sequences = [np.arange(1, 24), *[np.arange(30, 34) + i for i in range(12)]]  # one long user, many short
    splits = LeaveOneOutSplits.from_sequences(sequences, 60, max_len=8)
    positions = {}
    for mode in ("length", "random"):
        model = build_backbone("sasrec", BackboneConfig(num_items=60, hidden=8, max_len=8, num_heads=1))
        cfg = TrainConfig(epochs=1, batch_size=3, batching=mode, seed=1)
        history = train(model, splits, cfg, torch.device("cpu"), progress=False).history
        assert history[-1]["targets"] == splits.num_train_targets
        positions[mode] = history[-1]["positions"]
    assert splits.num_train_targets <= positions["length"] < positions["random"]
