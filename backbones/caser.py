"""Caser (Tang & Wang, 2018): horizontal and vertical convolutions over the last W items.

Every position gets its own window of the W most recent items (zero-padded at the start),
so one pass trains on every position. The per-user embedding of the original is left out:
the model is a pure sequence encoder, like the other backbones.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import BackboneConfig, SequentialRecommender
from .dropout import FastDropout


class Caser(SequentialRecommender):
    def __init__(self, cfg: BackboneConfig, item_embedding: nn.Module):
        super().__init__(cfg, item_embedding)
        W, H = cfg.caser_window, cfg.hidden
        self.vertical = nn.Conv2d(1, cfg.caser_v_filters, (W, 1))
        self.horizontal = nn.ModuleList(nn.Conv2d(1, cfg.caser_h_filters, (h, H)) for h in range(1, W + 1))
        self.drop = FastDropout(cfg.dropout)
        self.fc = nn.Linear(cfg.caser_v_filters * H + cfg.caser_h_filters * W, H)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        B, L = seq.shape
        W = self.cfg.caser_window
        windows = F.pad(seq, (W - 1, 0)).unfold(1, W, 1)  # [B, L, W]: items t-W+1..t
        x = self.item_embedding(windows).reshape(B * L, 1, W, -1)  # [B*L, 1, W, H]
        v = self.vertical(x).flatten(1)  # [B*L, n_v * H]
        hs = [F.relu(conv(x)).squeeze(3).amax(dim=2) for conv in self.horizontal]  # each [B*L, n_h]
        z = torch.cat([v, *hs], dim=1)
        return F.relu(self.fc(self.drop(z))).view(B, L, -1)
