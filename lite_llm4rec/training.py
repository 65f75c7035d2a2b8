"""Train Lite-LLM4Rec: AdamW on the LLM (LoRA or full), adapter, head (and optionally the item
vectors); validation NDCG@10 picks the checkpoint; test is read once from it.

Evaluation is the foundation's `evaluate` (full ranking over all items, ties against the
model, per-user vectors) on leave-one-out splits. A checkpoint written at every validation
lets a killed run resume with the same arguments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from tslrec.core.checkpoint import Checkpoint
from tslrec.core.errors import DivergedError, InputError
from tslrec.core.modules import eval_mode, load_trainable_state, peak_memory_mb, trainable_state
from tslrec.core.precision import Precision, autocast, precision_field, resolve_precision, resolved
from tslrec.core.run_settings import RunSettings
from tslrec.core.run_state import RunState
from tslrec.core.settings import check_allowed, require, require_unset_unless, setting
from tslrec.data.splits import EvalSplit, LeaveOneOutSplits
from tslrec.evaluation.ranking import METRIC_HINT, EvalConfig, EvalResult, evaluate, is_metric_name

from .model import LiteLLM4Rec
from .segments import TrainRows, all_prefix_rows, collate, sampling_rows


@dataclass
class LiteTrainConfig:
    """Optimisation and model selection."""

    strategy: Literal["sampling", "all"] = setting(
        "sampling", "sampling (one random segment per user per epoch) | all (every training prefix)"
    )
    negatives: Literal["all", "unseen"] = setting(
        "all",
        (
            "all = the softmax runs over every item, the user's earlier items included; unseen = the paper's "
            "objective (its §3.4): the items already in the user's input are no negatives"
        ),
    )
    segment_len: int = setting(21, "sampling: at most this many items per segment (inputs + the target)")
    epochs: int = setting(10, "passes over the training rows", at_least=1)
    max_steps: int | None = setting(None, "cap on optimizer steps (quick runs; None = epochs decide)", at_least=1)
    batch_size: int = setting(16, "training rows per step", at_least=1)
    lr: float = setting(
        5e-4, "AdamW lr of the LLM weights (LoRA adapters, or all weights with finetune=full)", positive=True
    )
    head_lr: float = setting(
        2e-3, "AdamW lr of the adapter, the item head and tuned item vectors (trained from scratch)", positive=True
    )
    weight_decay: float = setting(0.0, "AdamW weight decay")
    grad_clip: float = setting(1.0, "max gradient norm (0 = off)")
    precision: Precision = precision_field("the LLMs' forward and backward", "--no-bf16", "float32")
    eval_every: int | None = setting(None, "validate every N optimizer steps (None = after each epoch)", at_least=1)
    patience: int = setting(3, "validations without a better validation metric before stopping", at_least=1)
    select_metric: str = setting("NDCG@10", "validation metric that picks the checkpoint")
    seed: int = setting(42, "seeds segments, order, LoRA/adapter/head init")

    def __post_init__(self) -> None:
        check_allowed(self)
        require(self.segment_len >= 2, self, "segment_len", "need at least 2 (one input, one target)")
        require_unset_unless(self.strategy == "sampling", self, "segment_len", "read by strategy sampling only")
        require(is_metric_name(self.select_metric), self, "select_metric", METRIC_HINT)


GROWABLE = ("LiteTrainConfig.epochs", "LiteTrainConfig.max_steps")  # a larger budget continues a run


@dataclass
class LiteTrainResult:
    """What a training run produced."""

    best_step: int  # optimizer step of the selected checkpoint (0 = untrained)
    steps: int  # optimizer steps run
    epochs_run: float  # steps / steps per epoch
    valid: EvalResult
    test: EvalResult
    train_targets_per_epoch: int  # next-item targets in one epoch of training rows
    history: list[dict] = field(default_factory=list)  # per validation: step, epoch, loss, metric, seconds
    seconds_to_best: float = 0.0  # training + validation wall time until the selected checkpoint
    train_seconds: float = 0.0  # time in training steps only
    positions_per_second: float = 0.0  # LLM input positions per training second
    peak_memory_mb: float = 0.0  # peak RSS (CPU) or peak allocated (CUDA)
    earlier_seconds: float = 0.0  # training + validation seconds of the earlier processes a resumed run continues


@dataclass
class LiteRunState(RunState):
    """RunState (counting optimizer steps; history: one entry per validation) plus Lite's own counters."""

    positions: int = 0  # LLM input positions in training batches (for positions per second)
    loss_sum: float = 0.0  # training loss summed over the steps since the last validation
    loss_steps: int = 0  # steps in loss_sum


def make_rows(
    train_sequences: list[np.ndarray], cfg: LiteTrainConfig, max_len: int, epoch: int, share_prefixes: bool
) -> TrainRows:
    """The training rows of one epoch (sampling draws new segments every epoch, seeded)."""
    if cfg.strategy == "sampling":
        return sampling_rows(train_sequences, cfg.segment_len, np.random.default_rng([cfg.seed, epoch]))
    return all_prefix_rows(train_sequences, max_len, share_prefixes)


@torch.no_grad()
def evaluate_lite(model: LiteLLM4Rec, split: EvalSplit, eval_cfg: EvalConfig, device: torch.device) -> EvalResult:
    """Full-ranking metrics of `model` on one split (eval mode, no grad), users encoded at `eval_cfg.precision`."""
    precision = resolve_precision(eval_cfg.precision, device)

    def score(seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        with autocast(device, precision):
            h = model(seq, lengths)  # [B, H]: the LLM may run in bf16
        return model.score(h.float())  # [B, N+1] in float32: bf16 logits tie, and ties count against the model

    with eval_mode(model):
        return evaluate(score, split, eval_cfg, device=device)


def _optimizer(model: LiteLLM4Rec, cfg: LiteTrainConfig) -> torch.optim.Optimizer:
    llm = [p for p in model.rec.llm.parameters() if p.requires_grad]
    llm_ids = {id(p) for p in llm}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in llm_ids]
    groups = [g for g in ({"params": llm, "lr": cfg.lr}, {"params": rest, "lr": cfg.head_lr}) if g["params"]]
    return torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)


def check_segment_len(cfg: LiteTrainConfig, max_len: int) -> None:
    """A sampled segment's inputs must fit the model's window: `collate` keeps the last `max_len` of them."""
    if cfg.strategy == "sampling" and cfg.segment_len - 1 > max_len:
        raise InputError(
            f"LiteTrainConfig.segment_len={cfg.segment_len}: its {cfg.segment_len - 1} inputs exceed "
            f"DataConfig.max_len={max_len}, which would cut them; raise max_len or lower segment_len"
        )


def train_lite(
    model: LiteLLM4Rec,
    train_sequences: list[np.ndarray],
    splits: LeaveOneOutSplits,
    cfg: LiteTrainConfig,
    max_len: int,
    device: torch.device,
    eval_cfg: EvalConfig | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
    settings: dict | None = None,
    force: bool = False,
) -> LiteTrainResult:
    """Train, validate every `eval_every` steps (or epoch), keep the best, evaluate test once.

    train_sequences: each user's training items (all but validation and test), internal ids.
    splits: leave-one-out valid/test inputs (history = most recent `max_len` items).
    checkpoint: written at every validation with the settings it was trained under (`cfg`, `eval_cfg` and
    `settings`: what else shapes the result, as dataclass configs or JSON-able values); a run started again with
    the same ones resumes from it, with others it raises InputError naming the first changed one. A larger
    `epochs` or `max_steps` continues the run. force: discard an existing checkpoint and start over.
    """
    check_segment_len(cfg, max_len)
    cfg, eval_cfg = resolved(cfg, device), resolved(eval_cfg or EvalConfig(batch_size=64), device)
    score_key = eval_cfg.metric_key(cfg.select_metric)  # a cut-off this evaluation does not report fails here
    model.to(device)
    model.train()
    opt = _optimizer(model, cfg)
    share = model.rec.causal
    steps_per_epoch = -(-len(make_rows(train_sequences, cfg, max_len, 0, share)) // cfg.batch_size)
    if steps_per_epoch == 0:
        raise InputError("no user has two or more training items; Lite-LLM4Rec needs sequences of at least 4 items")
    total_steps = min(cfg.max_steps or steps_per_epoch * cfg.epochs, steps_per_epoch * cfg.epochs)
    state = LiteRunState()
    earlier_seconds = 0.0  # what the processes before a resume spent (their steps are in `state`)
    best = trainable_state(model)
    ckpt = None
    if checkpoint:
        current = RunSettings.of({"LiteTrainConfig": cfg, "EvalConfig": eval_cfg, **(settings or {})}, GROWABLE)
        ckpt = Checkpoint(checkpoint, current, device, growable=dict(zip(GROWABLE, ("epoch", "step"))))
        if force:
            ckpt.discard()
    saved = ckpt.load() if ckpt is not None else None
    if saved is not None:
        state = ckpt.restore(saved, lambda w: load_trainable_state(model, w, checkpoint), opt, LiteRunState)
        best, earlier_seconds = saved["best_model"], state.elapsed

    best_valid: list[EvalResult] = []  # the selected checkpoint's validation result (not recomputed at the end)

    def validate() -> None:
        t0 = time.perf_counter()
        try:
            result = evaluate_lite(model, splits.valid, eval_cfg, device)
        except DivergedError as e:
            raise DivergedError(
                f"{checkpoint or 'training'}: the model diverged by step {state.step} ({e}); "
                "start over with a lower --lr"
            ) from None
        score = result.metrics[score_key]
        state.elapsed += time.perf_counter() - t0
        state.history.append(
            {
                "step": state.step,
                "epoch": round(state.step / steps_per_epoch, 3),
                "loss": state.loss_sum / max(state.loss_steps, 1),
                f"valid_{cfg.select_metric}": score,
                "elapsed_seconds": round(state.elapsed, 1),
            }
        )
        state.loss_sum, state.loss_steps = 0.0, 0
        if state.record(score, state.step, higher_is_better=True):
            best.clear()
            best.update(trainable_state(model))
            best_valid[:] = [result]
        state.stopped = state.should_stop(cfg.patience)
        if ckpt is not None:
            ckpt.save(trainable_state(model), opt, state, best)

    bar = tqdm(
        total=total_steps,
        initial=state.step,
        desc=f"lite {cfg.strategy}",
        disable=not progress,
        unit="step",
        dynamic_ncols=True,
    )
    while not state.stopped and state.step < total_steps and state.epoch < cfg.epochs:
        rows = make_rows(train_sequences, cfg, max_len, state.epoch, share)
        order = np.random.default_rng([cfg.seed, 7, state.epoch]).permutation(len(rows))
        batches = [order[s : s + cfg.batch_size] for s in range(0, len(order), cfg.batch_size)]
        for b in range(state.batch, len(batches)):
            t0 = time.perf_counter()
            ids, targets = collate(rows, batches[b], max_len)
            ids, targets = ids.to(device), targets.to(device)
            with autocast(device, cfg.precision):
                loss, _ = model.loss(ids, targets, cfg.negatives)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.grad_clip)
            opt.step()
            seconds = time.perf_counter() - t0
            state.step, state.batch = state.step + 1, b + 1
            state.train_seconds += seconds
            state.elapsed += seconds
            state.loss_sum += loss.item()
            state.loss_steps += 1
            state.positions += int((ids > 0).sum()) + ids.shape[0] * model.rec.num_prefix
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", best=state.best_text())
            if cfg.eval_every and state.step % cfg.eval_every == 0:
                validate()
            if state.stopped or state.step >= total_steps:
                break
        if state.batch >= len(batches):
            state.epoch, state.batch = state.epoch + 1, 0
            if not cfg.eval_every and not state.stopped:
                validate()
    if not state.history or state.history[-1]["step"] != state.step:
        validate()  # the last weights are a candidate too
    bar.close()
    load_trainable_state(model, best, "best weights")
    valid = best_valid[0] if best_valid else evaluate_lite(model, splits.valid, eval_cfg, device)
    test = evaluate_lite(model, splits.test, eval_cfg, device)
    return LiteTrainResult(
        best_step=state.best_at,
        steps=state.step,
        epochs_run=round(state.step / steps_per_epoch, 3),
        valid=valid,
        test=test,
        train_targets_per_epoch=make_rows(train_sequences, cfg, max_len, 0, share).num_targets,
        history=state.history,
        seconds_to_best=state.seconds_to_best,
        train_seconds=state.train_seconds,
        positions_per_second=state.positions / max(state.train_seconds, 1e-9),
        peak_memory_mb=peak_memory_mb(device),
        earlier_seconds=earlier_seconds,
    )
