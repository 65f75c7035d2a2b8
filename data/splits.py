"""Leave-one-out splits, and the training windows cut from them every epoch.

For each user with items s_1..s_n (n >= 3):
  train:  inputs s_1..s_{n-3}, targets s_2..s_{n-2}: every one of these is a target in every epoch
  valid:  history s_1..s_{n-2}, target s_{n-1}
  test:   history s_1..s_{n-1}, target s_n
A training sequence longer than `max_len` is cut into windows of at most `max_len` targets
(`TrainWindows`); an evaluation input keeps its most recent `max_len` items. `seen[:, :prior_len]`
is the whole history before the target, which is what "history masked" removes from the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
import torch

Windows = Literal["fixed", "shifted", "overlap", "last"]  # how training sequences become windows (TrainConfig.windows)
WINDOWS = get_args(Windows)


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


def window_starts(n_targets: int, max_len: int, offset: int = 0) -> list[int]:
    """Start (target index) of each window of at most `max_len` targets covering targets 0..n_targets-1.

    The windows are non-overlapping and counted back from the most recent target; `offset` in
    [0, max_len) shortens the most recent window by that much, which moves every boundary.
    """
    starts, end = [], n_targets
    first = min(n_targets, max_len - offset) if offset else min(n_targets, max_len)
    end -= first
    starts.append(end)
    while end > 0:
        end = max(0, end - max_len)
        starts.append(end)
    return starts[::-1]


def overlap_windows(n_targets: int, max_len: int) -> list[tuple[int, int, int]]:
    """(start, end, first_owned) of windows of `max_len` targets whose ends step back by max_len // 2 from the
    most recent target: each target is trained in exactly one window (the one that gives it the most items
    before it, at least max_len - max_len // 2 except near the user's start); the rest of a window is context.
    """
    stride = max(1, max_len // 2)
    out, end = [], n_targets
    while True:
        start = max(0, end - max_len)
        out.append((start, end, 0 if start == 0 else end - stride))
        if start == 0:
            break
        end -= stride
    return out[::-1]


@dataclass
class TrainWindows:
    """One epoch of training windows: every target of the chosen windows, right-padded."""

    inputs: torch.Tensor  # [W, L] item ids, 0 = padding
    targets: torch.Tensor  # [W, L] the next item at each position, 0 = none
    lengths: torch.Tensor  # [W] real positions per window

    @property
    def num_targets(self) -> int:
        return int((self.targets > 0).sum())


def cut_windows(train: list[np.ndarray], max_len: int, mode: str, rng: np.random.Generator | None) -> TrainWindows:
    """Cut each training sequence (inputs t[:-1], targets t[1:]) into windows of at most `max_len` targets.

    mode 'fixed': non-overlapping windows counted back from the most recent target (every target, every epoch);
    'shifted': the same with a random offset per user and epoch (`rng`), so boundaries move between epochs;
    'overlap': windows overlapping by half (`overlap_windows`): every target once, with at least max_len // 2
    items before it where the user has them, for twice the encoder positions;
    'last': only the most recent window (older targets are never trained; the behaviour of SASRec's reference code).
    """
    if mode not in WINDOWS:
        raise ValueError(f"TrainConfig.windows: unknown mode '{mode}'; use one of {', '.join(WINDOWS)}")
    pieces: list[tuple[np.ndarray, int]] = []  # (inputs + the final target, targets before this one are context)
    for t in train:
        n = len(t) - 1  # targets t[1..n]
        if mode == "overlap":
            pieces.extend((t[a : b + 1], owned - a) for a, b, owned in overlap_windows(n, max_len))
            continue
        if mode == "last":
            starts = [max(0, n - max_len)]
        else:
            offset = int(rng.integers(max_len)) if mode == "shifted" and rng is not None and n > max_len else 0
            starts = window_starts(n, max_len, offset)
        ends = [*starts[1:], n]
        pieces.extend((t[a : b + 1], 0) for a, b in zip(starts, ends, strict=True))
    width = max(1, max((len(p) - 1 for p, _ in pieces), default=1))
    inputs = np.zeros((len(pieces), width), dtype=np.int64)
    targets = np.zeros((len(pieces), width), dtype=np.int64)
    lengths = np.zeros(len(pieces), dtype=np.int64)
    for i, (p, context) in enumerate(pieces):
        inputs[i, : len(p) - 1] = p[:-1]
        targets[i, context : len(p) - 1] = p[context + 1 :]  # 0 before `context`: no loss there
        lengths[i] = len(p) - 1
    return TrainWindows(torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(lengths))


Batching = Literal["length", "random"]  # how training windows are grouped into batches (TrainConfig.batching)
BATCHING = get_args(Batching)


def length_bucketed_batches(lengths: torch.Tensor, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled batches of `batch_size` rows in which rows of similar length go together (less padding).

    Rows are shuffled, taken 50 batches at a time, sorted by length inside each group, cut into
    batches, and the batches shuffled again: every row once per epoch, in a random order.
    """
    order = torch.randperm(len(lengths), generator=generator)
    group = 50 * batch_size
    batches: list[torch.Tensor] = []
    for s in range(0, len(order), group):
        idx = order[s : s + group]
        idx = idx[torch.argsort(lengths[idx], descending=True, stable=True)]
        batches.extend(idx[b : b + batch_size] for b in range(0, len(idx), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def epoch_batches(lengths: torch.Tensor, batch_size: int, mode: str, generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch's batches of window indices, every window once: `length` buckets similar lengths together
    (length_bucketed_batches), `random` is a uniform shuffle cut into batches."""
    if mode == "length":
        return length_bucketed_batches(lengths, batch_size, generator)
    if mode == "random":
        return list(torch.randperm(len(lengths), generator=generator).split(batch_size))
    raise ValueError(f"unknown batching '{mode}'; use {' or '.join(BATCHING)}")


def target_weights(targets: torch.Tensor, batches: list[torch.Tensor]) -> list[float]:
    """Per batch, its number of targets over the epoch's mean per batch. A batch's mean loss times its weight,
    summed over the epoch, is len(batches) times the mean loss over every target: each target weighs the same,
    however the batches group short and long windows (`targets` [W, L], 0 = none)."""
    counts = [int((targets[idx] > 0).sum()) for idx in batches]
    per_batch = sum(counts) / len(batches)
    return [c / per_batch for c in counts]


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
    """Train / valid / test data for sequences with at least 3 items."""

    train: list[np.ndarray]  # each user's training items s_1..s_{n-2}, users with >= 1 training target
    max_len: int  # L: window of the model's input
    valid: EvalSplit
    test: EvalSplit
    num_items: int  # N

    @property
    def num_train_targets(self) -> int:
        """Training targets in one epoch (every item of a training sequence but its first)."""
        return sum(len(t) - 1 for t in self.train)

    def windows(self, mode: str = "fixed", rng: np.random.Generator | None = None) -> TrainWindows:
        """This epoch's training windows (see `cut_windows`)."""
        return cut_windows(self.train, self.max_len, mode, rng)

    @classmethod
    def from_sequences(cls, sequences: list[np.ndarray], num_items: int, max_len: int) -> LeaveOneOutSplits:
        train = [s[:-2] for s in sequences if len(s) >= 4]  # at least 2 training items: 1 input, 1 target
        seen, _ = pad_right(sequences, max(len(s) for s in sequences))
        v_hist, v_len = pad_right([s[:-2] for s in sequences], max_len)
        t_hist, t_len = pad_right([s[:-1] for s in sequences], max_len)
        v_prior = torch.tensor([len(s) - 2 for s in sequences])  # [U]: s[:-2] comes before the validation target
        t_prior = v_prior + 1  # s[:-1] comes before the test target
        v_tg = torch.tensor([s[-2] for s in sequences])
        t_tg = torch.tensor([s[-1] for s in sequences])
        return cls(
            train,
            max_len,
            EvalSplit(v_hist, v_len, v_tg, seen, v_prior),
            EvalSplit(t_hist, t_len, t_tg, seen, t_prior),
            num_items,
        )
