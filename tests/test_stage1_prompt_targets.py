"""Stage-1 targets count exactly the items the prompt shows; training prompts are windows down to one item."""

import numpy as np
import pytest

from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.data import UserBatches, prepare_stage1_data


@pytest.fixture
def data():
    # items 1..5 sit near (0, 0) and 6..10 near (10, 10): k-means with k=2 separates them
    rng = np.random.default_rng(0)
    table = np.zeros((11, 2), dtype=np.float32)
    table[1:6] = rng.normal(0, 0.1, (5, 2))
    table[6:11] = 10 + rng.normal(0, 0.1, (5, 2))
    a, b = [1, 2, 3, 4, 5], [6, 7, 8, 9, 10]
    sequences = [np.array(a * 2 + b) for _ in range(6)] + [np.array(a + b + a) for _ in range(6)]
    cfg = Stage1Config(k=2, max_items=5, seed=0, untuned_baseline="none")
    return prepare_stage1_data(table, sequences, cfg), cfg


def test_target_is_the_distribution_of_the_items_shown(data):
    d, cfg = data
    group_b = int(d.groups.item_group[6])
    ids, mask, targets = UserBatches(d, cfg.max_items)([0, 6])
    assert ids[0].tolist() == [6, 7, 8, 9, 10] and ids[1].tolist() == [1, 2, 3, 4, 5]
    assert targets[0, group_b] == 1.0  # the prompt shows only the last five (group b) items
    assert targets[1, group_b] == 0.0  # ... and here only group a, although the user has five b items


def test_window_prompts_span_one_to_max_items_with_matching_targets(data):
    d, cfg = data
    lengths = set()
    for epoch in range(30):
        batches = UserBatches(d, cfg.max_items, "windows", seed=0, epoch=epoch)
        ids, mask, targets = batches(list(range(12)))
        for row, m, t in zip(ids.numpy(), mask.numpy(), targets.numpy(), strict=True):
            shown = row[m.astype(bool)]
            lengths.add(len(shown))
            expected = np.bincount(d.groups.item_group[shown], minlength=2) / len(shown)
            assert np.allclose(t, expected)
    assert lengths == {1, 2, 3, 4, 5}
    # a user's window depends on (seed, epoch, user) only: a resumed epoch draws the same prompts
    first = UserBatches(d, cfg.max_items, "windows", seed=0, epoch=3)
    assert np.array_equal(first.window(4), UserBatches(d, cfg.max_items, "windows", seed=0, epoch=3).window(4))
