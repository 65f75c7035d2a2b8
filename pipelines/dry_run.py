"""`tslrec run --dry-run`: the work each stage of a config would do, counted on the dataset, before anything runs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from tslrec.data import SequenceDataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.stage1_reconstruct.data import split_users

from .ablate_job import AblateJob, grid_cells
from .stage1_job import Stage1Job
from .stage2_job import Stage2Job
from .train_job import TrainJob


def training_work(job: TrainJob | AblateJob, ds: SequenceDataset) -> str:
    """A backbone's epoch: its training windows, targets and batches, and the epoch cap."""
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, job.data.max_len)
    windows = splits.windows(job.train.windows, np.random.default_rng(job.train.seed))
    batches = math.ceil(len(windows.lengths) / job.train.batch_size)
    return (
        f"{ds.num_users:,} users, {ds.num_items:,} items; an epoch is {windows.num_targets:,} targets in "
        f"{len(windows.lengths):,} windows of up to {job.data.max_len} items, {batches:,} batches of "
        f"{job.train.batch_size}; at most {job.train.epochs} epochs (patience {job.train.patience})"
    )


def stage1_work(job: Stage1Job, ds: SequenceDataset) -> str:
    """Stage 1's users and optimizer steps, and the longest prompt in soft item tokens."""
    cfg = job.stage1
    usable, n_val, n_test = split_users([s[:-2] for s in ds.sequences], cfg, ds.name)
    train = len(usable) - n_val - n_test
    steps = math.ceil(train / cfg.batch_size / cfg.grad_accum)
    cap = f", at most {cfg.max_steps} steps" if cfg.max_steps is not None else ""
    return (
        f"{train:,} training users ({n_val:,} validation, {n_test:,} test); an epoch is {steps:,} optimizer steps "
        f"(batches of {cfg.batch_size} users, {cfg.grad_accum} per step) through {job.llm.name_or_path}; "
        f"{cfg.epochs} epochs{cap}; prompts of up to {cfg.max_items} item tokens"
    )


def stage2_work(job: Stage2Job, ds: SequenceDataset) -> str:
    """Stage 2: every item once through the tuned LLM."""
    batches = math.ceil(ds.num_items / job.extraction.batch_size)
    return (
        f"{ds.num_items:,} one-item prompts through the tuned LLM, {batches:,} batches of {job.extraction.batch_size}"
    )


def grid_work(job: AblateJob, ds: SequenceDataset) -> str:
    """The grid: its cells, each a backbone's training (the epoch below)."""
    cells = len(grid_cells(job))
    return (
        f"{cells} cells ({len(job.backbones)} backbones x variants x {job.seeds} seeds), each: {training_work(job, ds)}"
    )


WORK: dict[type, Callable[[Any, SequenceDataset], str]] = {
    TrainJob: training_work,
    Stage1Job: stage1_work,
    Stage2Job: stage2_work,
    AblateJob: grid_work,
}


def stage_work(job: Any, ds: SequenceDataset) -> str:
    """What `job` would compute on `ds`, in one line."""
    return WORK[type(job)](job, ds)
