"""What a stage-1 run costs on this machine, measured on a few batches before it runs (`tslrec run --dry-run`).

The LLM is loaded and the model built as `train_stage1` builds them. A few micro-batches spread over the first
epoch are timed forward and backward with an optimizer step, and a few validation batches forward alone; their
seconds per prompt position (padding included) scale to the positions the run's plan computes: its training
steps, its validations, the untuned-LLM baseline (a pass over every user; with head+proj, the run again without
LoRA), the test pass and the continuation over all users. Early stopping can end a run sooner, and `max_minutes`
caps its training. The cost does not depend on the item table's values, so a dry run may pass a random table of
stage 0's width.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from tslrec.core.artifacts import resolve_device
from tslrec.core.precision import autocast, resolved
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.soft_prompt import tokenize_item_texts

from .baselines import split_users
from .config import Stage1Config
from .data import Stage1Data, UserBatches, epoch_batches, prepare_stage1_data
from .evaluation import predict_distributions, reconstruction_loss
from .model import ReconstructionModel
from .model_io import build_reconstruction_model
from .training import stage1_optimizer


@dataclass
class Stage1Cost:
    """Seconds of a stage-1 run on this machine, part by part, and the model built to measure them."""

    load_seconds: float  # loading the LLM and building the model
    parts: dict[str, float]  # train, validate, untuned baseline, test, all-users continuation
    model: ReconstructionModel  # stage 2 times its items through it

    @property
    def seconds(self) -> float:
        return self.load_seconds + sum(self.parts.values())


def spread(n: int, count: int) -> list[int]:
    """`count` indices spread evenly over range(n) (all of them if n is smaller)."""
    return sorted({int(i) for i in np.linspace(0, n - 1, min(count, n))})


def predict_positions(prompts: UserBatches, users: np.ndarray, batch_size: int) -> int:
    """Prompt positions `predict_distributions` computes for `users`: length-sorted batches, each padded to its
    longest prompt."""
    lengths = np.sort([prompts.prompt_length(int(u)) for u in users])  # [U]
    return int(
        sum(
            lengths[i : i + batch_size].max() * len(lengths[i : i + batch_size])
            for i in range(0, len(lengths), batch_size)
        )
    )


def stage1_cost(
    item_embeddings: np.ndarray,
    train_sequences: list[np.ndarray],
    cfg: Stage1Config,
    llm_cfg: LLMConfig,
    device: str = "auto",
    item_texts: list[str] | None = None,
    batches: int = 3,
) -> Stage1Cost:
    """Time `batches` training micro-batches (after one untimed) and a validation pass over a few batches of users,
    and scale each to the run's plan (arguments as `train_stage1`'s)."""
    dev = resolve_device(device)
    cfg = resolved(cfg, dev)
    data = prepare_stage1_data(item_embeddings, train_sequences, cfg)
    t0 = time.perf_counter()
    llm, tokenizer = load_llm(llm_cfg, kind="causal_lm")
    titles = tokenize_item_texts(tokenizer, item_texts, cfg.item_text_tokens) if cfg.item_text else None
    torch.manual_seed(cfg.seed)
    model = build_reconstruction_model(llm, tokenizer, data.item_embeddings.shape[1], cfg, llm_cfg, titles).to(dev)
    load = time.perf_counter() - t0
    per_item = model.encoder.positions_per_item()  # [N+1] with item text, else None
    prompts = UserBatches(data, cfg.max_items, cfg.prompts, cfg.seed, 0, per_item)
    plan = epoch_batches(data.train_users, cfg.batch_size, cfg.seed, 0, cfg.batching, prompts)
    sizes = [len(b) * max(prompts.prompt_length(u) for u in b) for b in plan]  # positions of each micro-batch
    train_rate = _train_seconds_per_position(
        model, data, prompts, [plan[i] for i in spread(len(plan), batches + 1)], cfg, dev
    )
    history = UserBatches(data, cfg.max_items, positions_per_item=per_item)  # validation, test, baseline prompts
    sample = data.val_users[spread(len(data.val_users), batches * cfg.eval_batch_size)]
    predict_rate = _predict_seconds_per_position(model, data, history, sample, cfg, dev)

    def predict(users: np.ndarray) -> float:
        return predict_rate * predict_positions(history, users, cfg.eval_batch_size)

    steps_per_epoch = math.ceil(len(plan) / cfg.grad_accum)
    steps = max(1, math.ceil(cfg.epochs * steps_per_epoch - 1e-9))
    steps = steps if cfg.max_steps is None else min(steps, cfg.max_steps)
    train = train_rate * sum(sizes) * min(steps * cfg.grad_accum, cfg.epochs * len(plan)) / len(plan)
    if cfg.max_minutes is not None:
        train = min(train, 60 * cfg.max_minutes)
    validations = math.ceil(steps / steps_per_epoch) if cfg.eval_every is None else steps // cfg.eval_every + 1
    parts = {"train": train, "validate": validations * predict(data.val_users), "test": predict(data.test_users)}
    everyone = np.concatenate(list(split_users(data).values()))
    if cfg.untuned_baseline == "head":
        parts["untuned baseline"] = predict(everyone)
    elif cfg.untuned_baseline == "head+proj":  # the run again, the LLM frozen: its backward still runs through it
        parts["untuned baseline"] = sum(parts.values())
    if cfg.all_users_epochs > 0:
        parts["all users"] = train_rate * sum(sizes) * cfg.all_users_epochs * len(everyone) / len(data.train_users)
    return Stage1Cost(load, parts, model)


def _train_seconds_per_position(
    model: ReconstructionModel,
    data: Stage1Data,
    prompts: UserBatches,
    batches: list[list[int]],
    cfg: Stage1Config,
    dev: torch.device,
) -> float:
    """Seconds per prompt position of forward, backward and an optimizer step on `batches` (the first untimed)."""
    optimizer, table = stage1_optimizer(model, cfg), data.item_embeddings.to(dev)  # table [N+1, D]
    model.train()
    seconds, positions = 0.0, 0
    for n, users in enumerate(batches):
        ids, mask, targets = prompts(users)  # [B, T], [B, T], [B, K]
        t0 = time.perf_counter()
        ids = ids.to(dev)
        with autocast(dev, cfg.precision):
            _, probs = model(table[ids], mask.to(dev), ids)  # [B, K]
        reconstruction_loss(probs, targets.to(dev), cfg.loss_reduction).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if n or len(batches) == 1:
            seconds, positions = seconds + time.perf_counter() - t0, positions + ids.numel()
    return seconds / max(positions, 1)


def _predict_seconds_per_position(
    model: ReconstructionModel,
    data: Stage1Data,
    prompts: UserBatches,
    users: np.ndarray,
    cfg: Stage1Config,
    dev: torch.device,
) -> float:
    """Seconds per prompt position of `predict_distributions` over `users` (after an untimed batch)."""
    table = data.item_embeddings.to(dev)  # [N+1, D]
    predict_distributions(model, table, data, users[: max(1, len(users) // 4)], cfg, dev)  # warm-up
    t0 = time.perf_counter()
    predict_distributions(model, table, data, users, cfg, dev)
    return (time.perf_counter() - t0) / max(predict_positions(prompts, users, cfg.eval_batch_size), 1)
