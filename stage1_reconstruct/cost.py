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
from .data import UserBatches, epoch_batches, prepare_stage1_data
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


class Stage1Probe:
    """The model `train_stage1` would build (arguments as its), the first epoch's micro-batches, and steps on them
    to time. The model is trained by those steps: a throwaway."""

    def __init__(
        self,
        item_embeddings: np.ndarray,
        train_sequences: list[np.ndarray],
        cfg: Stage1Config,
        llm_cfg: LLMConfig,
        device: str = "auto",
        item_texts: list[str] | None = None,
    ) -> None:
        self.dev = resolve_device(device)
        self.cfg = cfg = resolved(cfg, self.dev)
        self.data = data = prepare_stage1_data(item_embeddings, train_sequences, cfg)
        t0 = time.perf_counter()
        llm, tokenizer = load_llm(llm_cfg, kind="causal_lm")
        titles = tokenize_item_texts(tokenizer, item_texts, cfg.item_text_tokens) if cfg.item_text else None
        torch.manual_seed(cfg.seed)
        self.model = build_reconstruction_model(llm, tokenizer, data.item_embeddings.shape[1], cfg, llm_cfg, titles)
        self.model.to(self.dev)
        self.load_seconds = time.perf_counter() - t0
        per_item = self.model.encoder.positions_per_item()  # [N+1] with item text, else None
        self.prompts = UserBatches(data, cfg.max_items, cfg.prompts, cfg.seed, 0, per_item)  # training prompts
        self.plan = epoch_batches(data.train_users, cfg.batch_size, cfg.seed, 0, cfg.batching, self.prompts)
        self.history = UserBatches(data, cfg.max_items, positions_per_item=per_item)  # validation, test, baseline
        self.table = data.item_embeddings.to(self.dev)  # [N+1, D]
        self.optimizer = stage1_optimizer(self.model, cfg)

    def train_step(self, users: list[int]) -> int:
        """Forward, backward and an optimizer step on `users`' training prompts; the positions computed."""
        ids, mask, targets = self.prompts(users)  # [B, T], [B, T], [B, K]
        ids = ids.to(self.dev)
        self.model.train()
        with autocast(self.dev, self.cfg.precision):
            _, probs = self.model(self.table[ids], mask.to(self.dev), ids)  # [B, K]
        reconstruction_loss(probs, targets.to(self.dev), self.cfg.loss_reduction).backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return ids.numel()

    def sample(self, batches: int) -> list[list[int]]:
        """`batches` micro-batches spread over the first epoch's plan."""
        return [self.plan[i] for i in spread(len(self.plan), batches)]

    def train_seconds_per_position(self, batches: int) -> float:
        """Seconds per prompt position of `train_step` on `batches` micro-batches, after an untimed one."""
        first, *timed = self.sample(batches + 1)
        self.train_step(first)
        t0, positions = time.perf_counter(), sum(self.train_step(users) for users in timed or [first])
        return (time.perf_counter() - t0) / max(positions, 1)

    def predict_seconds_per_position(self, users: np.ndarray) -> float:
        """Seconds per prompt position of `predict_distributions` over `users` (after an untimed quarter)."""
        model, table, data, cfg = self.model, self.table, self.data, self.cfg
        predict_distributions(model, table, data, users[: max(1, len(users) // 4)], cfg, self.dev)  # warm-up
        t0 = time.perf_counter()
        predict_distributions(model, table, data, users, cfg, self.dev)
        return (time.perf_counter() - t0) / max(predict_positions(self.history, users, cfg.eval_batch_size), 1)

    def cost(self, batches: int = 3) -> Stage1Cost:
        """Time `batches` training micro-batches and a validation pass over `batches` batches of users, and scale
        each to the run's plan."""
        cfg, data, plan = self.cfg, self.data, self.plan
        sizes = [len(b) * max(self.prompts.prompt_length(u) for u in b) for b in plan]  # positions of each batch
        train_rate = self.train_seconds_per_position(batches)
        sample = data.val_users[spread(len(data.val_users), batches * cfg.eval_batch_size)]
        predict_rate = self.predict_seconds_per_position(sample)

        def predict(users: np.ndarray) -> float:
            return predict_rate * predict_positions(self.history, users, cfg.eval_batch_size)

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
        return Stage1Cost(self.load_seconds, parts, self.model)
