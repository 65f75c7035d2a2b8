"""One trainer for every backbone and fusion: AdamW, early stopping on validation NDCG@10,
the best weights restored before the single test evaluation, resumable after a kill.

A checkpoint carries the settings it was written under; a run started again with other
settings stops with an InputError that names the first changed one instead of resuming
(and so mixing two configurations). The one setting that may change is a larger
`TrainConfig.epochs`: nothing in an epoch depends on the budget, so a longer run continues
the same trajectory; except under a cosine schedule without `lr_cycle`, which spans `epochs`,
so there the budget is fixed. On CPU a fixed seed gives the same numbers run after run for a fixed
thread count; a different `torch.get_num_threads()` can change the last bits of parallel
reductions (and so, eventually, of the result).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from tslrec.core.checkpoint import Checkpoint
from tslrec.core.errors import DivergedError
from tslrec.core.modules import eval_mode, peak_memory_mb
from tslrec.core.precision import Precision, autocast, precision_field, resolve_precision, resolved
from tslrec.core.run_settings import RunSettings, plain
from tslrec.core.run_state import RunState
from tslrec.core.settings import check_allowed, require, require_unset_unless, setting
from tslrec.data.splits import (
    Batching,
    EvalSplit,
    LeaveOneOutSplits,
    TrainWindows,
    Windows,
    epoch_batches,
    target_weights,
)
from tslrec.evaluation.ranking import METRIC_HINT, EvalConfig, EvalResult, evaluate, is_metric_name

from .base import BackboneConfig, SequentialRecommender
from .registry import settings_read_by


@dataclass
class TrainConfig:
    """Optimisation and model-selection settings."""

    epochs: int = setting(200, "maximum epochs", at_least=1)
    batch_size: int = setting(128, "training windows per step (each up to --max-len items)", at_least=1)
    windows: Windows = setting(
        "fixed",
        (
            "how each user's training items become max_len windows: fixed = non-overlapping, counted back "
            "from the most recent (every item a target each epoch); shifted = the same with a random offset "
            "each epoch; overlap = windows overlapping by half, each target trained once with at least "
            "max_len/2 items before it (twice the encoder positions); last = only the most recent window"
        ),
    )
    batching: Batching = setting(
        "length",
        (
            "length = windows of similar length share a batch (little padding); random = a uniform shuffle, "
            "each batch padded to its longest window (the history's `positions` counts what an epoch costs)"
        ),
    )
    loss_weight: Literal["target", "batch"] = setting(
        "target",
        (
            "target = every training target weighs the same in an epoch (a batch's summed loss over the "
            "epoch's mean targets per batch); batch = the mean over each batch's targets, which over-weights "
            "the targets of batches of short windows (bench/results/batching-beauty.json)"
        ),
        before="batch",
    )
    lr: float = setting(1e-3, "AdamW learning rate (the peak, with a schedule)", positive=True)
    lr_schedule: Literal["constant", "cosine"] = setting(
        "constant",
        (
            "constant = --lr every epoch; cosine = a linear warm-up over --warmup-epochs, then a cosine from "
            "--lr down to 0 at the end of --lr-cycle epochs (set once per epoch)"
        ),
        before="constant",
    )
    warmup_epochs: int = setting(0, "epochs of linear warm-up (cosine schedule)", before=0)
    lr_cycle: int | None = setting(
        None, "epochs the cosine spans, and then the run ends (default: --epochs)", before=None
    )
    weight_decay: float = setting(0.0, "AdamW weight decay")
    loss: Literal["ce", "bce"] = setting(
        "ce", "'ce' (softmax over all items) or 'bce' (one sampled negative per position)"
    )
    patience: int = setting(10, "epochs without a better validation --select-metric before stopping", at_least=1)
    select_metric: str = setting("NDCG@10", "validation metric for early stopping")
    min_delta: float = setting(0.0, "smallest validation gain that counts as better")
    grad_clip: float = setting(5.0, "max gradient norm (0 = off)")
    precision: Precision = precision_field("the training forward pass", "--bf16", "bf16")
    seed: int = setting(42, "seeds init, shuffling, dropout and negatives")

    def __post_init__(self) -> None:
        check_allowed(self)
        require(self.warmup_epochs >= 0, self, "warmup_epochs", "must be 0 or more")
        require(self.lr_cycle is None or self.lr_cycle > self.warmup_epochs, self, "lr_cycle", "must exceed warm-up")
        for name in ("warmup_epochs", "lr_cycle"):  # a constant rate reads neither
            require_unset_unless(self.lr_schedule == "cosine", self, name, "read by --lr-schedule cosine only")
        require(self.grad_clip >= 0, self, "grad_clip", "must be 0 (off) or positive")
        require(is_metric_name(self.select_metric), self, "select_metric", METRIC_HINT)


def planned_epochs(cfg: TrainConfig) -> int:
    """The epochs a run may train: `epochs`, or fewer where a cosine cycle ends first (its rate is 0 after it)."""
    return min(cfg.epochs, cfg.lr_cycle) if cfg.lr_schedule == "cosine" and cfg.lr_cycle else cfg.epochs


def epoch_lr(cfg: TrainConfig, epoch: int) -> float:
    """The learning rate of epoch `epoch` (0-based): a function of the epoch alone, so a resumed run continues the
    schedule without saving it."""
    if cfg.lr_schedule == "constant":
        return cfg.lr
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / (cfg.warmup_epochs + 1)
    span = (cfg.lr_cycle or cfg.epochs) - cfg.warmup_epochs
    done = min(1.0, (epoch - cfg.warmup_epochs) / span)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * done))


@dataclass
class TrainResult:
    """What a training run produced."""

    best_epoch: int
    epochs_run: int
    valid: EvalResult
    test: EvalResult
    history: list[dict] = field(default_factory=list)  # per epoch: loss, valid metric, seconds
    seconds_to_best: float = 0.0  # wall time until the best epoch finished (training + validation)
    seconds_per_epoch: float = 0.0  # mean training seconds per epoch
    peak_memory_mb: float = 0.0  # peak RSS (CPU) or peak allocated (CUDA)
    earlier_seconds: float = 0.0  # training + validation seconds of the earlier processes a resumed run continues


def score_users(model: SequentialRecommender, precision: str = "float32"):
    """score_fn for `evaluate`: scores [B, N+1] in float32; with `precision` bf16 the encoder runs under autocast."""

    def score(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with autocast(seq.device, resolve_precision(precision, seq.device)):
            state = model(seq, lengths)  # [B, H]
        return model.score(state.float(), seq)  # the item table is built outside autocast: float32

    return score


def evaluate_split(model: SequentialRecommender, split: EvalSplit, cfg: EvalConfig, device: torch.device) -> EvalResult:
    """Evaluate `model` on one split (eval mode, no grad)."""
    with eval_mode(model):
        return evaluate(score_users(model, cfg.precision), split, cfg, device=device)


GROWABLE = "TrainConfig.epochs"  # may grow on resume (see the module docstring)


def growable(cfg: TrainConfig) -> tuple[str, ...]:
    """The budget settings a resume may raise: none where the schedule's shape depends on `epochs` (a cosine without
    `lr_cycle`: a larger budget would move every later epoch's rate, so the resumed run would follow neither)."""
    return () if cfg.lr_schedule == "cosine" and cfg.lr_cycle is None else (GROWABLE,)


def run_settings(
    model: SequentialRecommender, cfg: TrainConfig, eval_cfg: EvalConfig, extra: dict | None
) -> RunSettings:
    """The settings a checkpoint or finished run is tied to: the model class and the settings of its config it
    reads, train and eval config, plus the caller's (JSON-able values)."""
    values: dict[str, Any] = {"model": type(model).__name__}
    if is_dataclass(getattr(model, "cfg", None)):
        values["BackboneConfig"] = settings_read_by(asdict(model.cfg), [type(model).__name__])
    values.update(TrainConfig=asdict(cfg), EvalConfig=asdict(eval_cfg), **(extra or {}))
    configs = {"TrainConfig": TrainConfig(), "EvalConfig": EvalConfig(), "BackboneConfig": BackboneConfig()}
    return RunSettings(plain(values), configs, growable=growable(cfg), read=_as_read_by_its_model)


def _as_read_by_its_model(saved: dict) -> dict:
    """A recorded run's settings less the model settings its model class does not read (a Caser setting does not
    bind a SASRec run; an older version recorded them all)."""
    if isinstance(saved.get("BackboneConfig"), dict):
        return {**saved, "BackboneConfig": settings_read_by(saved["BackboneConfig"], [saved.get("model")])}
    return saved


def train_step(
    model: SequentialRecommender,
    opt: torch.optim.Optimizer,
    windows: TrainWindows,
    idx: torch.Tensor,
    weight: float,
    cfg: TrainConfig,
    device: torch.device,
    gen: torch.Generator | None,
) -> torch.Tensor:
    """One optimizer step on the windows `idx` [B] (all-padding columns trimmed); the batch's mean loss, detached.
    weight: the batch's share of the epoch's targets (`target_weights`), so every target weighs the same."""
    width = int(windows.lengths[idx].max())
    inputs = windows.inputs[idx, :width].to(device)  # [B, width]
    targets = windows.targets[idx, :width].to(device)  # [B, width]
    with autocast(device, cfg.precision):
        loss = model.loss(inputs, targets, cfg.loss, gen)
    opt.zero_grad(set_to_none=True)
    (loss * weight).backward()
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt.step()
    return loss.detach()


def train(
    model: SequentialRecommender,
    splits: LeaveOneOutSplits,
    cfg: TrainConfig,
    device: torch.device,
    eval_cfg: EvalConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    settings: dict | None = None,
    force: bool = False,
    on_epoch: Callable[[dict, str], None] | None = None,
) -> TrainResult:
    """Train with early stopping on validation; restore the best weights; evaluate test once.

    on_epoch(history entry, best so far as text) is called after every epoch (one-line logs without a bar).

    If `checkpoint` is given, the full state (weights, optimizer, CPU/CUDA RNG, negative-sampling
    generator) is saved there after every epoch, with the settings it was trained under: the
    model's config, `cfg`, `eval_cfg` and `settings` (what else shapes the result, e.g. the data
    and side-information files, as JSON-able values). A run started again with the same ones
    resumes from it; with others it raises InputError naming the first changed setting
    (e.g. `TrainConfig.lr`). force: discard an existing checkpoint and start over.
    """
    cfg, eval_cfg = resolved(cfg, device), resolved(eval_cfg or EvalConfig(), device)  # what `auto` is here
    score_key = eval_cfg.metric_key(cfg.select_metric)  # a cut-off this evaluation does not report fails here
    current = run_settings(model, cfg, eval_cfg, settings)
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = RunState()  # counts epochs; history: one entry per epoch
    earlier_seconds = 0.0  # what the processes before a resume spent (their epochs are in `state`)
    best_weights = copy.deepcopy(model.state_dict())
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1) if cfg.loss == "bce" else None
    ckpt = (
        Checkpoint(checkpoint, current, device, generators={"gen": gen}, growable={GROWABLE: "epoch"})
        if checkpoint
        else None
    )
    if ckpt is not None and force:
        ckpt.discard()
    saved = ckpt.load() if ckpt is not None else None
    if saved is not None:
        state = ckpt.restore(saved, model.load_state_dict, opt)
        best_weights = saved["best_model"]
        earlier_seconds = state.elapsed
    bar = tqdm(
        total=planned_epochs(cfg),
        initial=state.epoch,
        desc=f"train {type(model).__name__}",
        disable=not progress,
        unit="epoch",
        dynamic_ncols=True,
    )
    while state.epoch < planned_epochs(cfg) and not state.stopped:
        t0 = time.perf_counter()
        model.train()
        for group in opt.param_groups:
            group["lr"] = epoch_lr(cfg, state.epoch)
        windows = splits.windows(cfg.windows, np.random.default_rng([cfg.seed, state.epoch]))
        batches = epoch_batches(
            windows.lengths, cfg.batch_size, cfg.batching, torch.Generator().manual_seed(cfg.seed * 1000 + state.epoch)
        )
        weights = target_weights(windows.targets, batches) if cfg.loss_weight == "target" else [1.0] * len(batches)
        total = torch.zeros((), device=device)  # summed on the device: no host sync per step
        positions = 0  # encoder positions, padding included: the cost the batching decides
        for idx, weight in zip(batches, weights):
            positions += int(windows.lengths[idx].max()) * len(idx)
            total += train_step(model, opt, windows, idx, weight, cfg, device, gen)
        steps = len(batches)
        train_seconds = time.perf_counter() - t0
        try:
            valid = evaluate_split(model, splits.valid, eval_cfg, device)
        except DivergedError as e:
            raise DivergedError(
                f"{checkpoint or 'training'}: the model diverged in epoch {state.epoch + 1} ({e}); "
                "start over (--force) with a lower --lr or a --grad-clip"
            ) from None
        score = valid.metrics[score_key]
        state.epoch += 1
        state.elapsed += time.perf_counter() - t0
        state.train_seconds += train_seconds
        mean_loss = float(total) / max(steps, 1)
        state.history.append(
            {
                "epoch": state.epoch,
                "lr": epoch_lr(cfg, state.epoch - 1),
                "loss": mean_loss,
                f"valid_{cfg.select_metric}": score,
                "train_seconds": train_seconds,
                "elapsed_seconds": state.elapsed,  # since the start: training and validation
                "targets": windows.num_targets,
                "positions": positions,
            }
        )
        if state.record(score, state.epoch, higher_is_better=True, min_delta=cfg.min_delta):
            best_weights = copy.deepcopy(model.state_dict())
        state.stopped = state.should_stop(cfg.patience)
        bar.update(1)
        bar.set_postfix(loss=f"{mean_loss:.4f}", val=f"{score:.4f}", best=state.best_text())
        if on_epoch is not None:
            on_epoch(state.history[-1], state.best_text())
        if ckpt is not None:
            ckpt.save(model.state_dict(), opt, state, best_weights)
    bar.close()
    model.load_state_dict(best_weights)
    return TrainResult(
        best_epoch=state.best_at,
        epochs_run=state.epoch,
        valid=evaluate_split(model, splits.valid, eval_cfg, device),
        test=evaluate_split(model, splits.test, eval_cfg, device),
        history=state.history,
        seconds_to_best=state.seconds_to_best,
        seconds_per_epoch=sum(h["train_seconds"] for h in state.history) / max(len(state.history), 1),
        peak_memory_mb=peak_memory_mb(device),
        earlier_seconds=earlier_seconds,
    )
