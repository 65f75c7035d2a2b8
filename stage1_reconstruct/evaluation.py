"""Stage 1 loss and held-out evaluation (shared by training, baselines and the instance-level comparison)."""

from __future__ import annotations

import numpy as np
import torch
from tqdm.auto import tqdm

from tslrec.core.precision import autocast, resolve_precision
from tslrec.llm.loading import quantized_safe_eval

from .config import Stage1Config
from .data import Stage1Data, UserBatches
from .model import ReconstructionModel


def reconstruction_loss(probs: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
    """Squared error between predicted and target distributions (Eq. 3).

    probs, targets: [B, K]. "sum": summed over K, mean over users (the paper's form; its
    gradient is K times the per-element mean, which keeps it from vanishing for larger K).
    "mean": mean over users and K.
    """
    sq = (probs.float() - targets.float()) ** 2  # [B, K]
    return sq.sum(dim=1).mean() if reduction == "sum" else sq.mean()


@torch.no_grad()
def predict_distributions(
    model: ReconstructionModel,
    table: torch.Tensor,
    data: Stage1Data,
    users: np.ndarray,
    cfg: Stage1Config,
    device: torch.device,
    progress: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """(h_u [U, H], probs [U, K]) for the given users, in their order; batched by prompt length (less padding),
    no gradients."""
    users = np.asarray(users, dtype=np.int64)  # [U]
    collate = UserBatches(data, cfg.max_items, positions_per_item=model.encoder.positions_per_item())
    order = np.argsort([collate.prompt_length(int(u)) for u in users], kind="stable")  # [U]
    hs, ps = [], []
    with quantized_safe_eval(model):
        for start in tqdm(range(0, len(users), cfg.eval_batch_size), desc="predict", disable=not progress, leave=False):
            ids, mask, _ = collate([int(u) for u in users[order[start : start + cfg.eval_batch_size]]])
            ids = ids.to(device)
            with autocast(device, resolve_precision(cfg.precision, device)):
                h, p = model(table[ids], mask.to(device), ids)
            hs.append(h.float().cpu().numpy())
            ps.append(p.float().cpu().numpy())
    h_sorted, p_sorted = np.concatenate(hs), np.concatenate(ps)  # [U, H], [U, K] in `order`
    h_users, p_users = np.empty_like(h_sorted), np.empty_like(p_sorted)
    h_users[order], p_users[order] = h_sorted, p_sorted
    return h_users, p_users


def distribution_mse(probs: np.ndarray, targets: np.ndarray) -> tuple[float, float]:
    """(MSE averaged over users and K, squared error summed over K averaged over users) of predicted
    distributions `probs` [U, K] (from `predict_distributions`) against the users' `targets` [U, K]."""
    sq = (probs - targets) ** 2  # [U, K]
    return float(sq.mean()), float(sq.sum(axis=1).mean())
