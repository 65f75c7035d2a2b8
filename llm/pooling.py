"""Turn per-position hidden states into one vector per sequence. Shared by stage 1 and Lite-LLM4Rec."""

from __future__ import annotations

import torch

POOLINGS = ("last", "mean")


def last_token_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Hidden state at each row's last real position: hidden [B, L, H], mask [B, L] -> [B, H].

    Works for left padding (last position) and right padding (last 1 in the mask) alike.
    """
    L = mask.shape[1]
    positions = torch.arange(L, device=mask.device).unsqueeze(0)  # [1, L]
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values  # [B]
    last = last.clamp(min=0)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]  # [B, H]


def masked_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of hidden states over real positions: hidden [B, L, H], mask [B, L] -> [B, H]."""
    w = mask.to(hidden.dtype).unsqueeze(-1)  # [B, L, 1]
    return (hidden * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)  # [B, H]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Dispatch on `how` ("last" or "mean")."""
    if how == "last":
        return last_token_pool(hidden, mask)
    if how == "mean":
        return masked_mean_pool(hidden, mask)
    raise ValueError(f"pooling '{how}' is not one of {POOLINGS}")
