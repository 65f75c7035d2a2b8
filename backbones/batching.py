"""Leave-one-out splits as right-padded tensors, built once.

For each user with items s_1..s_n (n >= 3):
  train:  inputs s_1..s_{n-3}, targets s_2..s_{n-2} (every position, one pass)
  valid:  history s_1..s_{n-2}, target s_{n-1}
  test:   history s_1..s_{n-1}, target s_n
Each input keeps its most recent `max_len` items; `seen[:, :prior_len]` is the whole history before the
target, which is what "history masked" removes from the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def pad_right(seqs: list[np.ndarray], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Most recent `max_len` items of each sequence, right-padded with 0. -> ([U, L], lengths [U])."""
    width = max(1, min(max_len, max((len(s) for s in seqs), default=1)))
    out = np.zeros((len(seqs), width), dtype=np.int64)
    lengths = np.zeros(len(seqs), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = s[-max_len:]
        out[i, : len(s)] = s
        lengths[i] = len(s)
    return torch.from_numpy(out), torch.from_numpy(lengths)


@dataclass
class EvalSplit:
    """Model inputs and targets for one evaluation split."""

    history: torch.Tensor  # [U, L] right-padded
    lengths: torch.Tensor  # [U]
    targets: torch.Tensor  # [U]
    seen: torch.Tensor  # [U, n_max] every item of the user, for sampled negatives
    prior_len: torch.Tensor  # [U] the items before the target are seen[:, :prior_len] (the whole history)


@dataclass
class LeaveOneOutSplits:
    """Train / valid / test tensors for sequences with at least 3 items."""

    train_inputs: torch.Tensor  # [U', L] users with >= 1 training target
    train_targets: torch.Tensor  # [U', L] next item at each position, 0 = none
    valid: EvalSplit
    test: EvalSplit
    num_items: int  # N

    @classmethod
    def from_sequences(cls, sequences: list[np.ndarray], num_items: int, max_len: int) -> LeaveOneOutSplits:
        train = [s[:-2] for s in sequences]
        inputs = [t[:-1] for t in train if len(t) >= 2]
        targets = [t[1:] for t in train if len(t) >= 2]
        tr_in, _ = pad_right(inputs, max_len)
        tr_tg, _ = pad_right(targets, max_len)
        seen, _ = pad_right(sequences, max(len(s) for s in sequences))
        before_test = [s[:-1] for s in sequences]
        v_hist, v_len = pad_right(train, max_len)
        t_hist, t_len = pad_right(before_test, max_len)
        v_prior = torch.tensor([len(s) - 2 for s in sequences])  # [U]: s[:-2] comes before the validation target
        t_prior = v_prior + 1  # s[:-1] comes before the test target
        v_tg = torch.tensor([s[-2] for s in sequences])
        t_tg = torch.tensor([s[-1] for s in sequences])
        return cls(
            tr_in,
            tr_tg,
            EvalSplit(v_hist, v_len, v_tg, seen, v_prior),
            EvalSplit(t_hist, t_len, t_tg, seen, t_prior),
            num_items,
        )
