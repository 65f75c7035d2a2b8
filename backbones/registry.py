"""Backbones by name."""

from __future__ import annotations

import torch
from torch import nn

from tslrec.core.errors import InputError

from .base import BackboneConfig, SequentialRecommender, init_weights
from .caser import Caser
from .fmlprec import FMLPRec
from .gru4rec import GRU4Rec
from .item_embedding import FusionConfig, build_item_embedding
from .sasrec import SASRec

BACKBONES: dict[str, type[SequentialRecommender]] = {
    "sasrec": SASRec,
    "gru4rec": GRU4Rec,
    "caser": Caser,
    "fmlprec": FMLPRec,
}


def build_backbone(
    name: str,
    cfg: BackboneConfig,
    fusion: FusionConfig | None = None,
    llm_table: torch.Tensor | None = None,
    clusters: torch.Tensor | None = None,
) -> SequentialRecommender:
    """A backbone with its item-embedding seam filled by `fusion` (default: plain IDs)."""
    if name not in BACKBONES:
        raise InputError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    item_embedding: nn.Module = build_item_embedding(cfg.num_items, cfg.hidden, fusion, llm_table, clusters)
    model = BACKBONES[name](cfg, item_embedding)
    model.apply(init_weights)
    return model
