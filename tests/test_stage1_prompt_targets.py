"""Stage-1 targets count exactly the items the prompt shows; training prompts are windows down to one item;
training batches put prompts of similar length together."""

import numpy as np
import pytest

from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.data import (
    UserBatches,
    epoch_batches,
    epoch_order,
    pieces_for_processes,
    prepare_stage1_data,
)
from tslrec.stage1_reconstruct.training import _stage1_settings


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


def padded_positions(batches: list[list[int]], prompts: UserBatches) -> int:
    """Item positions the batches cost: each row is padded to its batch's longest prompt."""
    return sum(len(b) * max(prompts.prompt_length(u) for u in b) for b in batches)


def test_length_batches_pad_less_and_train_every_user_once_per_epoch(data):
    d, cfg = data
    users = np.arange(12)
    for epoch in range(5):
        prompts = UserBatches(d, cfg.max_items, "windows", seed=0, epoch=epoch)
        by_length = epoch_batches(users, 4, 0, epoch, "length", prompts)
        shuffled = epoch_batches(users, 4, 0, epoch, "random", prompts)
        for batches in (by_length, shuffled):
            assert sorted(u for b in batches for u in b) == list(range(12))  # every user once
            assert [len(b) for b in batches] == [4, 4, 4]  # the same users per batch: every user weighs the same
        spans = sorted((min(map(prompts.prompt_length, b)), max(map(prompts.prompt_length, b))) for b in by_length)
        assert all(hi <= lo for (_, hi), (lo, _) in zip(spans, spans[1:]))  # batches do not interleave in length
        assert padded_positions(by_length, prompts) <= padded_positions(shuffled, prompts)
        assert by_length == epoch_batches(users, 4, 0, epoch, "length", prompts)  # a resumed epoch: the same batches
    prompts = UserBatches(d, cfg.max_items, "windows", seed=0, epoch=0)
    assert padded_positions(epoch_batches(users, 4, 0, 0, "length", prompts), prompts) < padded_positions(
        epoch_batches(users, 4, 0, 0, "random", prompts), prompts
    )


def test_random_batches_are_the_shuffled_order_runs_had_before_length_batches(data):
    d, cfg = data
    order = epoch_order(np.arange(12), 3, 2)
    prompts = UserBatches(d, cfg.max_items, "windows", seed=3, epoch=2)
    assert epoch_batches(np.arange(12), 5, 3, 2, "random", prompts) == [order[:5], order[5:10], order[10:]]


def test_history_prompt_length_counts_title_tokens_with_item_text(data):
    d, cfg = data
    tokens = np.arange(11) + 1  # item i costs i + 1 positions (i title tokens and its soft token)
    prompts = UserBatches(d, cfg.max_items, positions_per_item=tokens)
    assert prompts.prompt_length(0) == sum(tokens[[6, 7, 8, 9, 10]])  # the last five items it shows
    assert UserBatches(d, cfg.max_items).prompt_length(0) == 5


def test_a_stage1_run_recorded_before_length_batches_reads_as_random_batches():
    as_before = _stage1_settings(Stage1Config(batching="random"))
    assert "batching" not in as_before  # batching as runs did before the setting existed: the same config.json
    assert Stage1Config.from_dict(as_before).batching == "random"  # ... and read back as what that run did
    assert Stage1Config.from_dict(as_before) == Stage1Config(batching="random")
    assert _stage1_settings(Stage1Config(batching="length"))["batching"] == "length"  # another run: recorded


@pytest.mark.parametrize("batching", ["length", "random"])
def test_two_processes_take_the_users_of_one_process_step_by_step(data, batching):
    d, cfg = data
    prompts = UserBatches(d, cfg.max_items, "windows", seed=0, epoch=1)
    one = epoch_batches(np.arange(12), 4, 0, 1, batching, prompts)  # one process, 4 users a step
    dealt = pieces_for_processes(epoch_batches(np.arange(12), 2 * 2, 0, 1, batching, prompts), 2, 2)
    by_process = dealt[0::2], dealt[1::2]  # accelerate deals the loader's batches out in turn
    assert all(len(p) == 2 for p in dealt)
    for step, users in enumerate(one):
        assert sorted(by_process[0][step] + by_process[1][step]) == sorted(users)
