"""Instance-level SFT baseline (E4SRec style) and the cost comparison with user-level SFT.

Instance level: every prefix of every training sequence is one training instance,
    prompt = [prefix text ; item_proj(e_1 .. e_t) ; "Response:"],  target = item t+1,
trained with cross-entropy over all items: sum_u (|S_u| - 1) LLM passes per epoch.
User level (stage 1): one pass per user per epoch, M passes. Both use the same
`LLMSequenceEncoder`, LLM, LoRA settings and batch size, so the measured difference is
the number and length of the prompts.

`measure_sft_cost` runs a few optimizer steps of each and extrapolates seconds per epoch
from the measured seconds per step; pass and token counts per epoch are exact.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from tslrec.core.precision import autocast, resolve_precision
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.soft_prompt import left_pad_ids

from .config import Stage1Config
from .data import UserBatches, prepare_stage1_data
from .evaluation import reconstruction_loss
from .model import LLMSequenceEncoder
from .model_io import build_reconstruction_model, with_lora

INSTANCE_PREFIX = "Given the user's purchase history, predict the next item."


def training_instances(train_sequences: list[np.ndarray], users: np.ndarray) -> np.ndarray:
    """All (user, t) with 1 <= t < len: the prefix seq[:t] predicts seq[t]. int64 [M, 2]."""
    rows = [(int(u), t) for u in users for t in range(1, len(train_sequences[u]))]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


class NextItemModel(nn.Module):
    """LLMSequenceEncoder + a linear head over all items (E4SRec's prediction layer)."""

    def __init__(self, encoder: LLMSequenceEncoder, num_items: int):
        super().__init__()
        self.encoder = encoder
        self.item_head = nn.Linear(encoder.hidden, num_items + 1)  # column 0 = padding, never a target

    def forward(self, item_embs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """item_embs [B, T, D], mask [B, T] -> logits [B, N+1] (padding column at -inf)."""
        h = self.encoder(item_embs, mask)  # [B, H]
        logits = self.item_head(h.to(self.item_head.weight.dtype)).float()  # [B, N+1]
        return logits.index_fill(1, torch.zeros(1, dtype=torch.long, device=logits.device), float("-inf"))


def epoch_cost(lengths: np.ndarray, max_items: int, text_tokens: int) -> dict[str, dict[str, int]]:
    """Exact LLM passes and real tokens per epoch for both paradigms, from training lengths."""
    lengths = np.asarray(lengths, dtype=np.int64)
    user_tokens = int((np.minimum(lengths, max_items) + text_tokens).sum())
    t = [np.arange(1, n) for n in lengths if n > 1]
    prefix_lengths = np.concatenate(t) if t else np.zeros(0, dtype=np.int64)
    inst_tokens = int((np.minimum(prefix_lengths, max_items) + text_tokens).sum())
    return {
        "user_level": {"passes": int(len(lengths)), "tokens": user_tokens},
        "instance_level": {"passes": int(len(prefix_lengths)), "tokens": inst_tokens},
    }


def _time_steps(
    model: nn.Module, batches: list, table: torch.Tensor, loss_fn, lr: float, precision: str, device: torch.device
) -> dict[str, float]:
    """Run one warm-up step plus len(batches)-1 timed optimizer steps; return timing and counts."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    enc = model.encoder
    seconds, passes0, tokens0 = 0.0, 0, 0
    for i, (ids, mask, target) in enumerate(batches):
        if i == 1:  # the first step warms up kernels and allocators; it is not timed
            passes0, tokens0 = enc.llm_passes, enc.llm_tokens
        t0 = time.perf_counter()
        with autocast(device, resolve_precision(precision, device)):
            out = model(table[ids.to(device)], mask.to(device))
        loss = loss_fn(out, target.to(device))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 1:
            seconds += time.perf_counter() - t0
    steps = len(batches) - 1
    return {
        "steps_timed": steps,
        "seconds_timed": seconds,
        "seconds_per_step": seconds / steps,
        "passes_timed": enc.llm_passes - passes0,
        "tokens_timed": enc.llm_tokens - tokens0,
    }


def measure_sft_cost(
    item_embeddings: np.ndarray,
    train_sequences: list[np.ndarray],
    cfg: Stage1Config | None = None,
    llm_cfg: LLMConfig | None = None,
    steps: int = 5,
    device: str = "cpu",
) -> dict[str, Any]:
    """Seconds per epoch, LLM passes and tokens of user-level vs instance-level SFT on the same data and model.

    Runs `steps` timed optimizer steps of each (after one untimed warm-up step), batches of
    cfg.batch_size drawn at random from all users / all instances, and extrapolates
    seconds_per_epoch = seconds_per_step * steps_per_epoch.
    """
    cfg = cfg or Stage1Config()
    llm_cfg = llm_cfg or LLMConfig()
    dev = torch.device(device)
    data = prepare_stage1_data(item_embeddings, train_sequences, cfg)
    table = data.item_embeddings.to(dev)
    rng = np.random.default_rng(cfg.seed)
    B = cfg.batch_size
    results: dict[str, Any] = {}

    # user level: the stage 1 model and loss
    llm, tok = load_llm(llm_cfg)
    torch.manual_seed(cfg.seed)
    user_model = build_reconstruction_model(llm, tok, table.shape[1], cfg, llm_cfg).to(dev)
    collate = UserBatches(data, cfg.max_items)
    order = rng.permutation(data.train_users)
    user_batches = [collate([int(u) for u in order[(i * B) % len(order) :][:B]]) for i in range(steps + 1)]
    timing = _time_steps(
        user_model,
        user_batches,
        table,
        lambda out, y: reconstruction_loss(out[1], y, cfg.loss_reduction),
        cfg.lr,
        cfg.precision,
        dev,
    )
    text_tokens = user_model.encoder.prompt.num_text_tokens
    results["user_level"] = timing
    del user_model, llm

    # instance level: same LLM, LoRA and projection shape, next-item head
    llm, tok = load_llm(llm_cfg)
    torch.manual_seed(cfg.seed)
    llm = with_lora(llm, cfg, llm_cfg)
    encoder = LLMSequenceEncoder.from_config(llm, tok, table.shape[1], cfg, INSTANCE_PREFIX)
    inst_model = NextItemModel(encoder, table.shape[0] - 1).to(dev)
    instances = training_instances(data.train_sequences, data.train_users)
    picks = instances[rng.choice(len(instances), size=min(len(instances), B * (steps + 1)), replace=False)]
    inst_batches = []
    for i in range(steps + 1):
        chunk = picks[(i * B) % len(picks) :][:B]
        ids, mask = left_pad_ids([data.train_sequences[u][:t] for u, t in chunk], cfg.max_items)
        target = torch.as_tensor([int(data.train_sequences[u][t]) for u, t in chunk], dtype=torch.long)
        inst_batches.append((ids, mask, target))
    results["instance_level"] = _time_steps(
        inst_model, inst_batches, table, nn.functional.cross_entropy, cfg.lr, cfg.precision, dev
    )
    instance_text_tokens = encoder.prompt.num_text_tokens

    lengths = np.array([len(data.train_sequences[u]) for u in data.train_users])
    per_epoch = epoch_cost(lengths, cfg.max_items, text_tokens)
    per_epoch["instance_level"] = epoch_cost(lengths, cfg.max_items, instance_text_tokens)["instance_level"]
    for name in ("user_level", "instance_level"):
        r = results[name]
        r.update(per_epoch[name])
        r["steps_per_epoch"] = int(np.ceil(r["passes"] / B))
        r["seconds_per_epoch_extrapolated"] = r["seconds_per_step"] * r["steps_per_epoch"]
        r["tokens_per_second"] = r["tokens_timed"] / r["seconds_timed"] if r["seconds_timed"] else None
    u, i = results["user_level"], results["instance_level"]
    results["ratio_instance_over_user"] = {
        "passes": i["passes"] / u["passes"],
        "tokens": i["tokens"] / u["tokens"],
        "seconds_per_epoch": i["seconds_per_epoch_extrapolated"] / u["seconds_per_epoch_extrapolated"],
    }
    results["note"] = (
        f"seconds per epoch extrapolated from {steps} timed optimizer steps of batch {B} "
        "(after 1 warm-up step); passes and tokens per epoch are exact counts"
    )
    results["train_users"] = int(len(data.train_users))
    return results
