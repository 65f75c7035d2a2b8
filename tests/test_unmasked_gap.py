"""bench/unmasked_gap.py: the input mask removes only the model's input, not the older history."""

from dataclasses import replace

import numpy as np
import torch

from bench.unmasked_gap import input_masked
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig, evaluate


def test_the_input_mask_leaves_items_older_than_the_input_window_as_candidates():
    # one user 1 2 3 4 5: test target 5, history 1..4, model input (max_len 2) = 3 4
    splits = LeaveOneOutSplits.from_sequences([np.array([1, 2, 3, 4, 5])], num_items=6, max_len=2)
    scores = torch.tensor([[0.0, 0.9, 0.3, 0.8, 0.7, 0.5, 0.1]])  # item 1 (older) 0.9, item 3 0.8, item 4 0.7

    def score_fn(seq, lengths):
        assert seq.tolist() == [[3, 4]]
        return scores.clone()

    masked = EvalConfig(mask_history=True)
    assert evaluate(score_fn, splits.test).ranks.tolist() == [4]  # 1, 3 and 4 above the target
    assert evaluate(score_fn, input_masked(splits.test), masked).ranks.tolist() == [2]  # only item 1 (older)
    assert evaluate(score_fn, splits.test, masked).ranks.tolist() == [1]
    assert evaluate(score_fn, input_masked(splits.test), replace(masked, mask_history=False)).ranks.tolist() == [4]
