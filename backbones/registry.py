"""Backbones by name: `@register_backbone` classes, one per module of backbones/models/."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, fields
from typing import TypeVar

import torch
from torch import nn

from tslrec.core.errors import InputError
from tslrec.core.settings import require

from .base import BackboneConfig, SequentialRecommender, init_weights
from .item_embedding import FusionConfig, build_item_embedding

BACKBONES: dict[str, type[SequentialRecommender]] = {}  # name -> class, backbones/models/ in file order
B = TypeVar("B", bound=type[SequentialRecommender])


def register_backbone(name: str) -> Callable[[B], B]:
    """Class decorator: `name` becomes a value of --backbone and --backbones."""

    def add(cls: B) -> B:
        BACKBONES[name] = cls
        return cls

    return add


def settings_read_by(config: dict, models: Iterable[str | None]) -> dict:
    """A BackboneConfig as a dict of the fields that at least one of `models` (class names) reads (`reads`): a
    Caser setting does not bind a SASRec run, so changing its default leaves finished SASRec runs valid. An unknown
    name reads the fields every backbone reads."""
    by_class = {cls.__name__: cls for cls in BACKBONES.values()}
    read = {name for m in models for name in getattr(by_class.get(m or ""), "reads", SequentialRecommender.reads)}
    return {k: v for k, v in config.items() if k in read}


def require_read_by(config: BackboneConfig, models: Iterable[str]) -> None:
    """InputError for a setting away from its default that none of `models` (class names) reads (`--heads 4` on a
    GRU4Rec run would otherwise train the run it names and record nothing of the flag), and for settings one of
    `models` cannot use together (its `check`), before any of them trains."""
    models = list(models)
    for cls in BACKBONES.values():
        if cls.__name__ in models:
            cls.check(config)
    default, read = BackboneConfig(), settings_read_by(asdict(config), models)
    for f in fields(BackboneConfig):
        if f.name not in read and getattr(config, f.name) != getattr(default, f.name):
            readers = " and ".join(cls.__name__ for cls in BACKBONES.values() if f.name in cls.reads)
            require(False, config, f.name, f"read by {readers} only, which this run does not train; drop it")


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


importlib.import_module(".models", __package__)  # registers the backbones in backbones/models/
