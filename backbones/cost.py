"""What training a backbone costs on this machine, measured on a few steps before a long run (`tslrec run --dry-run`).

A few optimizer steps of the first epoch's own batches are timed, and their seconds per encoder position
(padding included) scale to the whole epoch's positions; a full-ranking pass over a sample of the validation
users scales to all of them. The model is trained by those steps: pass a throwaway one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from tslrec.core.precision import resolved
from tslrec.data.splits import EvalSplit, LeaveOneOutSplits, epoch_batches, target_weights
from tslrec.evaluation.ranking import EvalConfig

from .base import SequentialRecommender
from .training import TrainConfig, evaluate_split, train_step


@dataclass
class EpochCost:
    """Seconds of one epoch on this machine, at the precision and thread count of the measurement."""

    train_seconds: float  # every training window of the epoch, one optimizer step per batch
    validate_seconds: float  # the full-ranking pass over the validation users after it

    def run_seconds(self, epochs: int) -> float:
        """A run of `epochs` epochs, with the best weights' validation and the test pass at its end."""
        return epochs * (self.train_seconds + self.validate_seconds) + 2 * self.validate_seconds


def user_sample(split: EvalSplit, users: int) -> EvalSplit:
    """`users` users spread evenly over the split's history lengths (all of them if it has fewer)."""
    order = torch.argsort(split.lengths, stable=True)  # [U]
    rows = order[torch.linspace(0, len(order) - 1, min(users, len(order))).long()]  # [u]
    return EvalSplit(
        split.history[rows], split.lengths[rows], split.targets[rows], split.seen[rows], split.prior_len[rows]
    )


def epoch_cost(
    model: SequentialRecommender,
    splits: LeaveOneOutSplits,
    cfg: TrainConfig,
    eval_cfg: EvalConfig,
    device: torch.device,
    steps: int = 6,
    users: int = 512,
) -> EpochCost:
    """Time `steps` steps (after one untimed) on batches spread over the first epoch, and validation on `users`
    users (after one untimed batch), each scaled to the whole epoch."""
    cfg, eval_cfg = resolved(cfg, device), resolved(eval_cfg, device)
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    windows = splits.windows(cfg.windows, np.random.default_rng([cfg.seed, 0]))
    batches = epoch_batches(windows.lengths, cfg.batch_size, cfg.batching, torch.Generator().manual_seed(cfg.seed))
    weights = target_weights(windows.targets, batches)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1) if cfg.loss == "bce" else None
    picked = np.linspace(0, len(batches) - 1, min(steps + 1, len(batches))).astype(int)

    def positions(i: int) -> int:  # encoder positions of batch i, padding included
        return int(windows.lengths[batches[i]].max()) * len(batches[i])

    model.train()
    train_step(model, opt, windows, batches[picked[0]], weights[picked[0]], cfg, device, gen)  # warm-up
    timed = picked[1:] if len(picked) > 1 else picked
    t0 = time.perf_counter()
    for i in timed:
        train_step(model, opt, windows, batches[i], weights[i], cfg, device, gen)
    per_position = (time.perf_counter() - t0) / sum(positions(i) for i in timed)
    sample = user_sample(splits.valid, users)
    evaluate_split(model, user_sample(sample, eval_cfg.batch_size), eval_cfg, device)  # warm-up
    t0 = time.perf_counter()
    evaluate_split(model, sample, eval_cfg, device)
    validate = (time.perf_counter() - t0) * len(splits.valid.targets) / len(sample.targets)
    return EpochCost(per_position * sum(positions(i) for i in range(len(batches))), validate)
