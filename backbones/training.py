"""One trainer for every backbone and fusion: AdamW, early stopping on validation NDCG@10,
the best weights restored before the single test evaluation, resumable after a kill.

A checkpoint carries the settings it was written under; a run started again with other
settings stops with an InputError that names the first changed one instead of resuming
(and so mixing two configurations). The one setting that may change is a larger
`TrainConfig.epochs`: nothing in an epoch depends on the budget, so a longer run continues
the same trajectory. On CPU a fixed seed gives the same numbers run after run for a fixed
thread count; a different `torch.get_num_threads()` can change the last bits of parallel
reductions (and so, eventually, of the result).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from tslrec.core.artifacts import atomic_path
from tslrec.core.errors import DivergedError, InputError
from tslrec.core.modules import eval_mode, peak_memory_mb
from tslrec.core.precision import autocast, precision_field, resolve_precision, resolved
from tslrec.core.run_state import RunState
from tslrec.core.settings import as_recorded_before, require, upgrade_recorded
from tslrec.data.splits import BATCHING, WINDOWS, EvalSplit, LeaveOneOutSplits, epoch_batches, target_weights
from tslrec.evaluation.ranking import EvalConfig, EvalResult, evaluate, is_metric_name

from .base import BackboneConfig, SequentialRecommender, settings_read_by

LOSS_WEIGHTS = ("target", "batch")  # how a batch's loss is weighted (TrainConfig.loss_weight)


@dataclass
class TrainConfig:
    """Optimisation and model-selection settings."""

    epochs: int = field(default=200, metadata={"help": "maximum epochs"})
    batch_size: int = field(default=128, metadata={"help": "training windows per step (see windows)"})
    windows: str = field(
        default="fixed",
        metadata={
            "choices": WINDOWS,
            "help": (
                "how each user's training items become max_len windows: fixed = non-overlapping, counted back "
                "from the most recent (every item a target each epoch); shifted = the same with a random offset "
                "each epoch; overlap = windows overlapping by half, each target trained once with at least "
                "max_len/2 items before it (twice the encoder positions); last = only the most recent window"
            ),
        },
    )
    batching: str = field(
        default="length",
        metadata={
            "choices": BATCHING,
            "help": (
                "length = windows of similar length share a batch (little padding); random = a uniform shuffle, "
                "each batch padded to its longest window (the history's `positions` counts what an epoch costs)"
            ),
        },
    )
    loss_weight: str = field(
        default="target",
        metadata={
            "choices": LOSS_WEIGHTS,
            "before": "batch",  # what runs recorded before this setting existed did
            "help": (
                "target = every training target weighs the same in an epoch (a batch's summed loss over the "
                "epoch's mean targets per batch); batch = the mean over each batch's targets, which over-weights "
                "the targets of batches of short windows (bench/results/batching-beauty.json)"
            ),
        },
    )
    lr: float = field(default=1e-3, metadata={"help": "AdamW learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    loss: str = field(
        default="ce",
        metadata={
            "choices": ("ce", "bce"),
            "help": "'ce' (softmax over all items) or 'bce' (one sampled negative per position)",
        },
    )
    patience: int = field(default=10, metadata={"help": "epochs without a better validation NDCG@10 before stopping"})
    select_metric: str = field(default="NDCG@10", metadata={"help": "validation metric for early stopping"})
    min_delta: float = field(default=0.0, metadata={"help": "smallest validation gain that counts as better"})
    grad_clip: float = field(default=5.0, metadata={"help": "max gradient norm (0 = off)"})
    precision: str = precision_field("the training forward pass", "--bf16", "bf16")
    seed: int = field(default=42, metadata={"help": "seeds init, shuffling, dropout and negatives"})

    def __post_init__(self) -> None:
        require(self.epochs >= 1, self, "epochs", "need at least 1")
        require(self.batch_size >= 1, self, "batch_size", "need at least 1")
        require(self.batching in BATCHING, self, "batching", f"use {' or '.join(BATCHING)}")
        require(self.loss_weight in LOSS_WEIGHTS, self, "loss_weight", f"use {' or '.join(LOSS_WEIGHTS)}")
        require(self.lr > 0, self, "lr", "must be positive")
        require(self.patience >= 1, self, "patience", "need at least 1")
        require(self.grad_clip >= 0, self, "grad_clip", "must be 0 (off) or positive")
        require(is_metric_name(self.select_metric), self, "select_metric", "use HR@K, Recall@K, NDCG@K or MRR@K")


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


class _Missing:
    """A setting absent on one side of a comparison."""

    def __repr__(self) -> str:
        return "<unset>"


MISSING = _Missing()
GROWABLE = "TrainConfig.epochs"  # may grow on resume (see the module docstring)


def _flatten(settings: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def setting_changes(old: dict, new: dict, before: dict | None = None) -> list[tuple[str, Any, Any]]:
    """(dotted name, old value, new value) of every setting that differs between two nested settings dicts,
    in the order of `new` (then the settings only `old` has). A setting `old` lacks (added to the code since)
    is no change when `new` has the value that `before` says runs behaved as before it existed."""
    a, b, d = _flatten(old), _flatten(new), _flatten(before or {})
    return [
        (k, a.get(k, MISSING), b.get(k, MISSING))
        for k in [*b, *(k for k in a if k not in b)]
        if a.get(k, MISSING) != b.get(k, MISSING) and not (k not in a and k in d and b[k] == d[k])
    ]


def run_setting_changes(saved: dict, current: dict) -> list[tuple[str, Any, Any]]:
    """setting_changes between a run's recorded settings (resume_settings) and this run's: the model settings
    its model class does not read are left out on both sides, and a setting added since counts as the value runs
    behaved as before it (as_recorded_before), for every config alike; a setting recorded under an older name is
    read under its new one (upgrade_recorded)."""
    model = saved.get("model")
    saved = dict(saved)
    configs = {"TrainConfig": TrainConfig(), "EvalConfig": EvalConfig(), "BackboneConfig": BackboneConfig()}
    for name, config in configs.items():
        if isinstance(saved.get(name), dict):
            saved[name] = upgrade_recorded(config, saved[name])
    if isinstance(saved.get("BackboneConfig"), dict):
        saved["BackboneConfig"] = settings_read_by(saved["BackboneConfig"], [model])
    before = {name: as_recorded_before(config) for name, config in configs.items()}
    return setting_changes(saved, current, plain(before))


def refuse_changed_settings(source: str | Path, changes: list[tuple[str, Any, Any]], what: str = "checkpoint") -> None:
    """One-line InputError naming the first changed setting (if any) and the two ways out."""
    if not changes:
        return
    key, old, new = changes[0]
    more = f" (and {len(changes) - 1} other setting{'s' if len(changes) > 2 else ''})" if len(changes) > 1 else ""
    raise InputError(
        f"{source}: this {what} was written with {key}={old!r}, now {new!r}{more}; to start over and "
        f"discard it pass --force (force=True from Python), or write to another --out"
    )


def plain(obj: Any) -> Any:
    """`obj` as JSON types only (dicts, lists, strings, numbers, None): safe for torch.load(weights_only=True)."""
    return json.loads(json.dumps(obj, default=str))


def resume_settings(model: SequentialRecommender, cfg: TrainConfig, eval_cfg: EvalConfig, extra: dict | None) -> dict:
    """The settings a checkpoint is tied to: model class and config, train and eval config, plus the caller's."""
    settings: dict[str, Any] = {"model": type(model).__name__}
    if is_dataclass(getattr(model, "cfg", None)):
        settings["BackboneConfig"] = settings_read_by(asdict(model.cfg), [type(model).__name__])
    settings.update(TrainConfig=asdict(cfg), EvalConfig=asdict(eval_cfg), **(extra or {}))
    return plain(settings)


def _check_resume(ckpt: Path, saved: Any, settings: dict, epochs_done: int) -> None:
    if not isinstance(saved, dict):
        raise InputError(
            f"{ckpt}: this checkpoint records no settings (written by an older tslrec), so resuming could "
            "mix two configurations; to start over pass --force (force=True from Python)"
        )
    changes = [
        c
        for c in run_setting_changes(saved, settings)
        if not (c[0] == GROWABLE and isinstance(c[2], int) and c[2] >= epochs_done)
    ]
    refuse_changed_settings(ckpt, changes)


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
    current = resume_settings(model, cfg, eval_cfg, settings)
    torch.manual_seed(cfg.seed)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = RunState()  # counts epochs; history: one entry per epoch
    earlier_seconds = 0.0  # what the processes before a resume spent (their epochs are in `state`)
    best_weights = copy.deepcopy(model.state_dict())
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 1) if cfg.loss == "bce" else None
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and force:
        ckpt.unlink(missing_ok=True)
    if ckpt is not None and ckpt.is_file():
        try:
            saved = torch.load(ckpt, map_location="cpu", weights_only=True)
            epochs_done = int(saved["state"]["epoch"])
        except Exception as e:  # noqa: BLE001 - torch's weights-only reader raises many types on a damaged file
            raise InputError(
                f"{ckpt}: checkpoint is corrupt or truncated ({type(e).__name__}); "
                "start over with --force (force=True from Python)"
            ) from None
        _check_resume(ckpt, saved.get("settings"), current, epochs_done)
        try:
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
        except Exception as e:  # noqa: BLE001 - a wrong key or shape is a RuntimeError, a damaged entry anything
            raise InputError(
                f"{ckpt}: checkpoint does not fit this model ({type(e).__name__}); "
                "start over with --force (force=True from Python)"
            ) from None
        best_weights = saved["best_model"]
        state = RunState.from_dict(saved["state"], ckpt)
        earlier_seconds = state.elapsed
        torch.set_rng_state(saved["rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        if gen is not None and saved.get("gen") is not None:
            gen.set_state(saved["gen"])
    bar = tqdm(
        total=cfg.epochs,
        initial=state.epoch,
        desc=f"train {type(model).__name__}",
        disable=not progress,
        unit="epoch",
        dynamic_ncols=True,
    )
    while state.epoch < cfg.epochs and not state.stopped:
        t0 = time.perf_counter()
        model.train()
        windows = splits.windows(cfg.windows, np.random.default_rng([cfg.seed, state.epoch]))
        batches = epoch_batches(
            windows.lengths, cfg.batch_size, cfg.batching, torch.Generator().manual_seed(cfg.seed * 1000 + state.epoch)
        )
        weights = target_weights(windows.targets, batches) if cfg.loss_weight == "target" else [1.0] * len(batches)
        total = torch.zeros((), device=device)  # summed on the device: no host sync per step
        positions = 0  # encoder positions, padding included: the cost the batching decides
        for idx, weight in zip(batches, weights):
            width = int(windows.lengths[idx].max())  # trim all-padding columns
            positions += width * len(idx)
            inputs = windows.inputs[idx, :width].to(device)  # [B, width]
            targets = windows.targets[idx, :width].to(device)  # [B, width]
            with autocast(device, cfg.precision):
                loss = model.loss(inputs, targets, cfg.loss, gen)
            opt.zero_grad(set_to_none=True)
            (loss * weight).backward()  # target: the batch's share of the epoch's targets, not one batch's mean
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            total += loss.detach()
        steps = len(batches)
        train_seconds = time.perf_counter() - t0
        try:
            valid = evaluate_split(model, splits.valid, eval_cfg, device)
        except DivergedError as e:
            raise DivergedError(
                f"{ckpt or 'training'}: the model diverged in epoch {state.epoch + 1} ({e}); "
                "start over (--force) with a lower --lr or a --grad-clip"
            ) from None
        score = valid.metrics[eval_cfg.metric_key(cfg.select_metric)]
        state.epoch += 1
        state.elapsed += time.perf_counter() - t0
        state.train_seconds += train_seconds
        mean_loss = float(total) / max(steps, 1)
        state.history.append(
            {
                "epoch": state.epoch,
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
            with atomic_path(ckpt) as tmp:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": opt.state_dict(),
                        "best_model": best_weights,
                        "state": state.to_dict(),
                        "rng": torch.get_rng_state(),
                        "settings": current,
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "gen": gen.get_state() if gen is not None else None,
                    },
                    tmp,
                )
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


def config_dict(cfg) -> dict:
    """A dataclass config as a plain dict (for manifests)."""
    return asdict(cfg)
