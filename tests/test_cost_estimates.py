"""The parts of `tslrec run --dry-run`'s estimate that are arithmetic: what a timed step is scaled by."""

from __future__ import annotations

import numpy as np
import torch

from tslrec.backbones.cost import EpochCost, user_sample
from tslrec.data.splits import EvalSplit
from tslrec.stage1_reconstruct.cost import predict_positions, spread


class Lengths:
    """Stands in for UserBatches: each user's prompt length."""

    def __init__(self, lengths: dict[int, int]) -> None:
        self.lengths = lengths

    def prompt_length(self, user: int) -> int:
        return self.lengths[user]


def test_predict_positions_count_length_sorted_batches_padded_to_their_longest():
    prompts = Lengths({10: 1, 11: 5, 12: 2, 13: 8, 14: 3})
    # sorted 1 2 | 3 5 | 8: 2*2 + 2*5 + 1*8 (unsorted batches would pad 1 and 5 together: more)
    assert predict_positions(prompts, np.array([10, 11, 12, 13, 14]), 2) == 22


def test_spread_takes_evenly_spaced_indices_and_never_more_than_there_are():
    assert spread(10, 3) == [0, 4, 9]
    assert spread(2, 5) == [0, 1]


def test_a_run_costs_its_epochs_and_two_more_validations():
    cost = EpochCost(train_seconds=10.0, validate_seconds=2.0)
    assert cost.run_seconds(5) == 5 * 12.0 + 2 * 2.0  # the best weights' validation and the test pass


def test_the_validation_sample_spans_the_history_lengths():
    lengths = torch.tensor([5, 1, 9, 3, 7])
    split = EvalSplit(torch.zeros(5, 9, dtype=torch.long), lengths, torch.arange(5), torch.zeros(5, 9), lengths)
    assert user_sample(split, 3).lengths.tolist() == [1, 5, 9]  # shortest, middle, longest
    assert sorted(user_sample(split, 50).lengths.tolist()) == [1, 3, 5, 7, 9]  # all of them
