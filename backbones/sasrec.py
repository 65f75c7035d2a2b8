"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence."""

from __future__ import annotations

import torch
from torch import nn

from .base import BackboneConfig, SequentialRecommender, causal_mask


class SASRec(SequentialRecommender):
    def __init__(self, cfg: BackboneConfig, item_embedding: nn.Module):
        super().__init__(cfg, item_embedding)
        self.pos = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(
            cfg.hidden,
            cfg.num_heads,
            dim_feedforward=cfg.hidden * 4,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.hidden)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        L = seq.size(1)
        x = self.item_embedding(seq) * (self.cfg.hidden**0.5) + self.pos.weight[:L]  # [B, L, H]
        x = self.blocks(self.drop(x), mask=causal_mask(L, seq.device), is_causal=True)
        return self.norm(x)
