"""Training rows for the two strategies of the paper, built from each user's training sequence
(all but the validation and test items).

- sampling: every epoch, one random segment per user: a target position drawn uniformly
  from the training sequence and up to `segment_len - 1` items right before it as input
  (so a segment holds at most `segment_len` items, 21 by default).
- all: every training prefix s_1..s_t with target s_{t+1}, once per epoch.
  With a causal Recommendation LLM the prefixes share passes: the sequence's targets are cut
  into windows of `max_len` (newest first) and every position of a window is a prefix, so
  a prefix sees the items since its window started (1..max_len). With an encoder each
  prefix is its own row, holding its most recent `max_len` items.

A row is (inputs, targets) of equal length; targets[t] is the item after inputs[:t+1], 0 = none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tslrec.llm.soft_prompt import left_pad_ids


@dataclass
class TrainRows:
    """Training rows of one epoch."""

    inputs: list[np.ndarray]  # item ids per row, oldest first
    targets: list[np.ndarray]  # same length as inputs; 0 = no target at that position

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def num_targets(self) -> int:
        return int(sum(int((t > 0).sum()) for t in self.targets))


def sampling_rows(train_sequences: list[np.ndarray], segment_len: int, rng: np.random.Generator) -> TrainRows:
    """One random segment (<= segment_len items: inputs then target) per user with >= 2 training items."""
    inputs, targets = [], []
    for seq in train_sequences:
        if len(seq) < 2:
            continue
        t = int(rng.integers(1, len(seq)))  # target position, uniform over the training targets
        inp = np.asarray(seq[max(0, t - (segment_len - 1)) : t], dtype=np.int64)
        tgt = np.zeros_like(inp)
        tgt[-1] = seq[t]
        inputs.append(inp)
        targets.append(tgt)
    return TrainRows(inputs, targets)


def all_prefix_rows(train_sequences: list[np.ndarray], max_len: int, share_prefixes: bool) -> TrainRows:
    """Every training prefix once: sum over users of (len - 1) targets. See the module docstring."""
    inputs, targets = [], []
    for seq in train_sequences:
        seq = np.asarray(seq, dtype=np.int64)
        if len(seq) < 2:
            continue
        if share_prefixes:
            inp, tgt = seq[:-1], seq[1:]
            for end in range(len(inp), 0, -max_len):
                start = max(0, end - max_len)
                inputs.append(inp[start:end])
                targets.append(tgt[start:end])
        else:
            for t in range(1, len(seq)):
                inp = seq[max(0, t - max_len) : t]
                tgt = np.zeros_like(inp)
                tgt[-1] = seq[t]
                inputs.append(inp)
                targets.append(tgt)
    return TrainRows(inputs, targets)


def collate(rows: TrainRows, index: np.ndarray | list[int], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows `index` -> (ids [B, T], targets [B, T]), left-padded with 0, at most the last `max_len` positions."""
    ids, _ = left_pad_ids([rows.inputs[i] for i in index], max_len)
    tgt, _ = left_pad_ids([rows.targets[i] for i in index], max_len)
    return ids, tgt
