"""`tslrec run --dry-run`: the work each stage of a config would do, counted on the dataset, and what it would cost
on this machine, timed on a few of its own steps at the precision and thread count it would use; trains nothing
that is kept.

The estimates are of the plan: a backbone at its epoch cap (and at the earliest early stopping allows), stage 1's
planned steps. They leave out the start-up of each process, and the grid's cells are timed on their ID-only
variant (a fusion adds little to a small backbone)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tslrec.backbones.training import TrainConfig, planned_epochs
from tslrec.core.artifacts import resolve_device, torch_threads
from tslrec.data import SequenceDataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.stage1_reconstruct.data import split_users

from .ablate_job import AblateJob, grid_cells
from .stage1_job import Stage1Job
from .stage2_job import Stage2Job
from .train_job import BackboneSettings, TrainJob

if TYPE_CHECKING:
    from tslrec.backbones.cost import EpochCost
    from tslrec.stage1_reconstruct.cost import Stage1Cost

StageJob = TrainJob | Stage1Job | Stage2Job | AblateJob


def training_work(job: TrainJob | AblateJob, ds: SequenceDataset) -> str:
    """A backbone's epoch: its training windows, targets and batches, and the epoch cap."""
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, job.data.max_len)
    windows = splits.windows(job.train.windows, np.random.default_rng(job.train.seed))
    batches = math.ceil(len(windows.lengths) / job.train.batch_size)
    return (
        f"{ds.num_users:,} users, {ds.num_items:,} items; an epoch is {windows.num_targets:,} targets in "
        f"{len(windows.lengths):,} windows of up to {job.data.max_len} items, {batches:,} batches of "
        f"{job.train.batch_size}; at most {planned_epochs(job.train)} epochs (patience {job.train.patience})"
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


def stage_work(job: StageJob, ds: SequenceDataset) -> str:
    """What `job` would compute on `ds`, in one line."""
    return WORK[type(job)](job, ds)


@dataclass
class Estimate:
    """A stage's seconds on this machine: at its caps, at the earliest its early stopping allows, and how."""

    at_cap: float
    earliest: float
    text: str
    epoch_seconds: dict[str, float] = field(default_factory=dict)  # a backbone's epoch, validation included


class Probe:
    """Times the stages of one dry run in order; stage 1's model is kept for stage 2's items."""

    def __init__(self, ds: SequenceDataset) -> None:
        self.ds, self.item_dim = ds, 64
        self.stage1: Stage1Cost | None = None  # once stage 1 was timed

    def estimate(self, job: StageJob) -> Estimate:
        return ESTIMATES[type(job)](self, job)

    def backbone_epoch(self, job: BackboneSettings, backbone: str) -> EpochCost:
        """The epoch cost of `backbone` with `job`'s settings (ID-only), on the current thread count."""
        from tslrec.backbones.cost import epoch_cost
        from tslrec.backbones.registry import build_backbone

        device = resolve_device(job.runtime.device)
        model_cfg = replace(job.model, num_items=self.ds.num_items, max_len=job.data.max_len)
        splits = LeaveOneOutSplits.from_sequences(self.ds.sequences, self.ds.num_items, job.data.max_len)
        torch.manual_seed(job.train.seed)
        return epoch_cost(build_backbone(backbone, model_cfg), splits, job.train, job.eval, device)

    def training(self, job: TrainJob) -> Estimate:
        job.runtime.start()
        self.item_dim = job.model.hidden  # the width of the table stage 1 reads
        cost = self.backbone_epoch(job, job.backbone)
        epoch = cost.train_seconds + cost.validate_seconds
        epochs = planned_epochs(job.train)
        cap, earliest = cost.run_seconds(epochs), cost.run_seconds(earliest_epochs(job.train))
        text = (
            f"{epoch:.1f} s an epoch ({cost.train_seconds:.1f} s training, {cost.validate_seconds:.1f} s validation): "
            f"{minutes(cap)} at the cap of {epochs} epochs, {minutes(earliest)} if it stops at the earliest"
        )
        return Estimate(cap, earliest, text, {job.backbone: epoch})

    def stage1_run(self, job: Stage1Job) -> Estimate:
        from tslrec.stage1_reconstruct.cost import Stage1Probe

        from .stage1_job import item_titles_for_prompt

        device = job.runtime.start()
        table = np.random.default_rng(0).normal(size=(self.ds.num_items + 1, self.item_dim)).astype(np.float32)
        table[0] = 0  # the padding row
        titles = item_titles_for_prompt(self.ds, job.stage1.item_text)
        self.stage1 = Stage1Probe(table, self.ds.train_sequences(), job.stage1, job.llm, device.type, titles).cost()
        parts = ", ".join(f"{k} {minutes(v)}" for k, v in self.stage1.parts.items())
        text = (
            f"{minutes(self.stage1.seconds)} (loading {self.stage1.load_seconds:.0f} s, {parts}) at its planned steps"
        )
        return Estimate(self.stage1.seconds, self.stage1.seconds, text)

    def stage2_run(self, job: Stage2Job) -> Estimate:
        from tslrec.stage2_augment.extraction import extraction_seconds

        if self.stage1 is None:  # stage 1 is reused: no model was built to time the items through
            return Estimate(0.0, 0.0, "not timed (it reads stage 1's finished model; --force stage1 times both)")
        job.runtime.start()
        model = self.stage1.model
        table = torch.randn(self.ds.num_items + 1, model.encoder.item_proj.in_features)  # [N+1, D]
        seconds = self.stage1.load_seconds + extraction_seconds(model, table, job.extraction)
        return Estimate(seconds, seconds, f"{minutes(seconds)} (loading the LLM included)")

    def grid(self, job: AblateJob) -> Estimate:
        job.runtime.start()
        cells = grid_cells(job)
        with torch_threads(max(1, torch.get_num_threads() // job.workers)):  # each worker's share, as the grid runs
            trains = {b: job.train_of(b) for b in job.backbones}  # each backbone's own, with --backbone-train
            costs = {b: self.backbone_epoch(replace(job, train=trains[b]), b) for b in job.backbones}
        cap = sum(costs[c.backbone].run_seconds(planned_epochs(trains[c.backbone])) for c in cells) / job.workers
        earliest = sum(costs[c.backbone].run_seconds(earliest_epochs(trains[c.backbone])) for c in cells) / job.workers
        epoch = {b: c.train_seconds + c.validate_seconds for b, c in costs.items()}
        epochs = ", ".join(f"{b} {seconds:.1f} s" for b, seconds in epoch.items())
        text = (
            f"{minutes(cap)} at the epoch cap on {job.workers} worker(s), {minutes(earliest)} if every cell stops at "
            f"the earliest (an epoch: {epochs})"
        )
        return Estimate(cap, earliest, text, epoch)


def earliest_epochs(train: TrainConfig) -> int:
    """The fewest epochs an early-stopped run takes: its best the first, then `patience` more (or its cap)."""
    return min(train.patience + 1, planned_epochs(train))


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


ESTIMATES: dict[type, Callable[[Probe, Any], Estimate]] = {
    TrainJob: Probe.training,
    Stage1Job: Probe.stage1_run,
    Stage2Job: Probe.stage2_run,
    AblateJob: Probe.grid,
}
