"""The item-embedding seam: every backbone reads items through one of these modules.

`forward(ids) -> [..., H]` embeds input items; `table() -> [N+1, H]` is the matrix the
backbone scores users against. Swapping the module (ID table, cluster index, LLM table,
gated fusion) never touches scoring code.

Fusions (TSLRec stage 2) are `Fusion` classes registered by name with `@register_fusion`: `base` (the ID table,
e = e_id = E_id[i]) here, the others in backbones/fusions/, one family per file, each class with its formula.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import torch
from torch import nn

from tslrec.core.errors import InputError
from tslrec.core.settings import setting

ID_INIT_STD = 0.02  # IDEmbedding's init


@dataclass
class FusionConfig:
    """How item embeddings are built."""

    kind: str = setting("base", "one of FUSIONS")
    finetune_llm_table: bool = setting(False, "train the LLM table itself (ablation) instead of keeping it frozen")


class Fusion(nn.Module):
    """An item-embedding module, built as cls(num_items, hidden, cfg, llm_table, clusters); says what it reads."""

    reads_llm_table: ClassVar[bool] = False  # an LLM item table [N+1, D] (SideInfoConfig.item_embeddings)
    reads_clusters: ClassVar[bool] = False  # a k-means group per item [N+1] (SideInfoConfig.clusters)
    num_items: int

    def table(self) -> torch.Tensor:  # [N+1, H]
        return self(torch.arange(self.num_items + 1, device=next(self.parameters()).device))


F = TypeVar("F", bound=type[Fusion])
FUSIONS: dict[str, type[Fusion]] = {}  # name -> class: base, then backbones/fusions/ in file order


def register_fusion(name: str) -> Callable[[F], F]:
    """Class decorator: `name` becomes a fusion, a value of --fusion and --fusions."""

    def register(cls: F) -> F:
        FUSIONS[name] = cls
        return cls

    return register


def fusion_class(kind: str) -> type[Fusion]:
    if kind not in FUSIONS:
        raise InputError(f"FusionConfig.kind: unknown fusion '{kind}'; choose one of {', '.join(FUSIONS)}")
    return FUSIONS[kind]


def llm_table_fusions() -> list[str]:
    return [name for name, cls in FUSIONS.items() if cls.reads_llm_table]


@register_fusion("base")
class IDEmbedding(Fusion):
    """A plain ID table; row 0 is padding and stays zero."""

    def __init__(self, num_items: int, hidden: int, *side_information: object):  # which base does not read
        super().__init__()
        self.weight = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.weight.weight, std=ID_INIT_STD)
        with torch.no_grad():
            self.weight.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        return self.weight(ids)

    def table(self) -> torch.Tensor:  # [N+1, H]
        return self.weight.weight


def build_item_embedding(
    num_items: int,
    hidden: int,
    cfg: FusionConfig | None = None,
    llm_table: torch.Tensor | None = None,
    clusters: torch.Tensor | None = None,
) -> Fusion:
    """The seam's factory: the module of fusion `cfg.kind` (a plain ID table for 'base')."""
    cfg = cfg or FusionConfig()
    return fusion_class(cfg.kind)(num_items, hidden, cfg, llm_table, clusters)


importlib.import_module(".fusions", __package__)  # registers the fusions in backbones/fusions/
