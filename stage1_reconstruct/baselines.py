"""Reference points for the stage 1 MSE, all fitted on training users, chosen on validation users and
reported on test users (validation users when there is no test split), like the tuned model.

- global mean: predict the mean training distribution for everyone (grouping.global_mean_mse);
- untuned LLM: the LLM as is, a random projection, only a softmax head fitted on its user vectors;
- mean item embedding: no LLM at all, a softmax head on the mean embedding of the same last-N items
  the prompt shows. A sanity floor: if the LLM cannot beat it, stage 1 adds nothing on this data.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from tslrec.llm.soft_prompt import ItemTokens

from .config import Stage1Config
from .data import Stage1Data
from .evaluation import predict_distributions, reconstruction_loss
from .model import LLMSequenceEncoder, ReconstructionModel


def split_users(data: Stage1Data) -> dict[str, np.ndarray]:
    """train / val / report user ids (report = test users, or validation users if there are none)."""
    return {
        "train": data.train_users,
        "val": data.val_users,
        "report": data.test_users if len(data.test_users) else data.val_users,
    }


def fit_softmax_head(
    features: dict[str, torch.Tensor],
    targets: dict[str, torch.Tensor],
    cfg: Stage1Config,
    steps: int = 1000,
    lr: float = 3e-3,
) -> dict[str, Any]:
    """Fit softmax(W x + b) on standardised train features; pick the step on val; return val and report MSE.

    The head starts at the global-mean prediction (W = 0, b = log mean target), so a step is
    only chosen if it beats the global mean on validation users.
    """
    mu, sd = features["train"].mean(0), features["train"].std(0).clamp(min=1e-6)
    x = {k: (v - mu) / sd for k, v in features.items()}  # standardised features suit a linear head
    head = torch.nn.Linear(x["train"].shape[1], targets["train"].shape[1])
    with torch.no_grad():
        head.weight.zero_()
        head.bias.copy_(torch.log(targets["train"].mean(0).clamp(min=1e-8)))
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=1e-2)

    def mse(part: str) -> float:
        with torch.no_grad():
            return float(((torch.softmax(head(x[part]), -1) - targets[part]) ** 2).mean())

    best = {"val": mse("val"), "report": mse("report"), "step": 0}
    for step in range(1, steps + 1):
        loss = reconstruction_loss(torch.softmax(head(x["train"]), -1), targets["train"], cfg.loss_reduction)
        opt.zero_grad()
        loss.backward()
        opt.step()
        val = mse("val")
        if val < best["val"]:
            best = {"val": val, "report": mse("report"), "step": step}
    return best


def untuned_head_baseline(
    llm: torch.nn.Module,
    tokenizer,
    data: Stage1Data,
    cfg: Stage1Config,
    device: torch.device,
    progress: bool = True,
    titles: ItemTokens | None = None,
) -> dict[str, Any]:
    """Frozen LLM (no LoRA), random scale-matched projection, same prompt and pooling; only a head is fitted.
    titles: the items' title tokens when the prompt shows item text (Stage1Config.item_text)."""
    t0 = time.time()
    rng_state = torch.get_rng_state()
    torch.manual_seed(cfg.seed + 1)
    encoder = LLMSequenceEncoder.from_config(llm, tokenizer, data.item_embeddings.shape[1], cfg)
    encoder.match_token_scale(data.item_embeddings[1:][torch.randperm(data.item_embeddings.shape[0] - 1)[:2048]])
    if titles is not None:
        encoder.use_item_text(titles)
    frozen = ReconstructionModel(encoder, cfg.k, cfg.head_norm).to(device)
    table = data.item_embeddings.to(device)
    parts = split_users(data)
    order = np.concatenate(list(parts.values()))
    h_np, _ = predict_distributions(frozen, table, data, order, cfg, device, progress=progress)  # [U, H]
    bounds = np.cumsum([0] + [len(v) for v in parts.values()])
    feats = {k: torch.from_numpy(h_np[bounds[i] : bounds[i + 1]]).float() for i, k in enumerate(parts)}
    targets = {k: torch.from_numpy(data.targets[v]).float() for k, v in parts.items()}
    best = fit_softmax_head(feats, targets, cfg)
    torch.set_rng_state(rng_state)
    llm.train()
    return {
        "mse_untuned_llm": best["report"],
        "mse_untuned_llm_val": best["val"],
        "untuned_llm_best_step": best["step"],
        "untuned_llm_variant": "head (LLM frozen, random projection, head fitted)",
        "untuned_llm_seconds": time.time() - t0,
    }


def mean_embedding_baseline(data: Stage1Data, cfg: Stage1Config) -> dict[str, Any]:
    """No LLM: softmax head on the mean item embedding of each user's last max_items training items."""
    table = data.item_embeddings.numpy()
    parts = split_users(data)
    feats = {
        k: torch.from_numpy(np.stack([table[data.train_sequences[u][-cfg.max_items :]].mean(0) for u in v])).float()
        for k, v in parts.items()
    }
    targets = {k: torch.from_numpy(data.targets[v]).float() for k, v in parts.items()}
    best = fit_softmax_head(feats, targets, cfg)
    return {"mse_mean_embedding": best["report"], "mse_mean_embedding_val": best["val"]}
