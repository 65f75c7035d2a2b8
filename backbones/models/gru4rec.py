"""GRU4Rec (Hidasi et al., 2016), the sequential-recommendation form used by RecBole and the TSLRec paper."""

from __future__ import annotations

import torch
from torch import nn

from ..base import BackboneConfig, SequentialRecommender
from ..dropout import FastDropout
from ..registry import register_backbone


@register_backbone("gru4rec")
class GRU4Rec(SequentialRecommender):
    reads = (*SequentialRecommender.reads, "gru_layers")

    def __init__(self, cfg: BackboneConfig, item_embedding: nn.Module):
        super().__init__(cfg, item_embedding)
        self.drop = FastDropout(cfg.dropout)
        self.gru = nn.GRU(cfg.hidden, cfg.hidden, num_layers=cfg.gru_layers, batch_first=True)
        self.dense = nn.Linear(cfg.hidden, cfg.hidden)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        out, _ = self.gru(self.drop(self.item_embedding(seq)))  # causal by construction
        return self.dense(out)
