"""The item-embedding seam: every backbone reads items through one of these modules.

`forward(ids) -> [..., H]` embeds input items; `table() -> [N+1, H]` is the matrix the
backbone scores users against. Swapping the module (ID table, cluster index, LLM table,
gated fusion) never touches scoring code.

Fusions (TSLRec stage 2). With e_id = E_id[i] (random init, trained), e_llm = W_p x_i + b_p
(x_i the exported LLM embedding, W_p trained), c_i the item's pre-grouping cluster:
  base          e = e_id
  ci            e = e_id + E_c[c_i]                              (the paper's CI variant)
  gate          g = sigmoid(W_g [e_id ; e_llm] + b_g) in R^H      (TSLRec, element-wise gate)
                e = g * e_llm + (1 - g) * e_id
  scalar-gate   a = sigmoid(w), one learned scalar; e = a * e_llm + (1 - a) * e_id
  add           e = e_id + e_llm
  concat        e = W_c [e_id ; e_llm] + b_c
  llm-only      e = e_llm                                         (no ID table)
  gate-matched  gate, with e_llm = W_p z_i, z_i = x_i standardised per dimension over the items and W_p drawn
                N(0, 0.02^2 / D): e_llm starts at the ID table's scale (std 0.02), where gate's starts ~50x larger
  gate-input    gate for the input items; users are scored against the ID table alone
The LLM table x is frozen by default (`finetune_llm_table=False`); W_p is always trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from tslrec.core.errors import InputError

FUSIONS = ("base", "ci", "gate", "scalar-gate", "add", "concat", "llm-only", "gate-matched", "gate-input")
LLM_FUSIONS = FUSIONS[2:]  # the fusions that read an LLM item table
GATED = ("gate", "gate-matched", "gate-input")  # g = sigmoid(W_g [e_id ; e_llm] + b_g), e = g e_llm + (1 - g) e_id
ID_INIT_STD = 0.02  # IDEmbedding's init


@dataclass
class FusionConfig:
    """How item embeddings are built."""

    kind: str = field(default="base", metadata={"help": "one of FUSIONS"})
    finetune_llm_table: bool = field(
        default=False, metadata={"help": "train the LLM table itself (ablation) instead of keeping it frozen"}
    )


class IDEmbedding(nn.Module):
    """A plain ID table; row 0 is padding and stays zero."""

    def __init__(self, num_items: int, hidden: int):
        super().__init__()
        self.weight = nn.Embedding(num_items + 1, hidden, padding_idx=0)
        nn.init.normal_(self.weight.weight, std=ID_INIT_STD)
        with torch.no_grad():
            self.weight.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        return self.weight(ids)

    def table(self) -> torch.Tensor:  # [N+1, H]
        return self.weight.weight


class FusedItemEmbedding(nn.Module):
    """ID embedding fused with side information (cluster index or LLM table); see the module docstring."""

    def __init__(
        self,
        num_items: int,
        hidden: int,
        cfg: FusionConfig,
        llm_table: torch.Tensor | None = None,
        clusters: torch.Tensor | None = None,
    ):
        super().__init__()
        if cfg.kind not in FUSIONS:
            raise InputError(f"FusionConfig.kind: unknown fusion '{cfg.kind}'; choose one of {', '.join(FUSIONS)}")
        self.kind = cfg.kind
        self.num_items = num_items
        self.id = IDEmbedding(num_items, hidden) if cfg.kind != "llm-only" else None
        if cfg.kind == "ci":
            if clusters is None or clusters.shape != (num_items + 1,):
                raise InputError(
                    f"fusion 'ci': needs one cluster index per item ({num_items + 1} rows with padding); "
                    "pass the stage-1 group map"
                )
            self.register_buffer("clusters", clusters.long().clamp(min=0))  # [N+1]
            self.cluster_emb = nn.Embedding(int(clusters.max()) + 1, hidden)
            nn.init.normal_(self.cluster_emb.weight, std=0.02)
        if cfg.kind in LLM_FUSIONS:
            if llm_table is None or llm_table.shape[0] != num_items + 1:
                raise InputError(
                    f"fusion '{cfg.kind}': needs an LLM item table with {num_items + 1} rows (row 0 = padding); "
                    "pass the stage-2 export"
                )
            table = llm_table.float().clone()
            table[0] = 0.0
            if cfg.kind == "gate-matched":
                table[1:] = standardised(table[1:])
            if cfg.finetune_llm_table:
                self.llm_table = nn.Parameter(table)  # [N+1, D]
            else:
                self.register_buffer("llm_table", table)  # [N+1, D]
            self.proj = nn.Linear(table.shape[1], hidden)
            if cfg.kind == "gate-matched":
                nn.init.normal_(self.proj.weight, std=ID_INIT_STD / table.shape[1] ** 0.5)
                nn.init.zeros_(self.proj.bias)
                self.proj.keeps_own_init = True  # the backbone's init_weights must not redraw it
            if cfg.kind in GATED:
                self.gate = nn.Linear(2 * hidden, hidden)
            elif cfg.kind == "scalar-gate":
                self.gate_logit = nn.Parameter(torch.zeros(()))
            elif cfg.kind == "concat":
                self.merge = nn.Linear(2 * hidden, hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        e_id = self.id(ids) if self.id is not None else None
        if self.kind == "base":
            return e_id
        if self.kind == "ci":
            return e_id + self.cluster_emb(self.clusters[ids]) * (ids > 0).unsqueeze(-1)  # padding stays 0
        e_llm = self.proj(self.llm_table[ids]) * (ids > 0).unsqueeze(-1)  # [..., H], padding stays 0
        if self.kind == "llm-only":
            return e_llm
        if self.kind == "add":
            return e_id + e_llm
        if self.kind == "concat":
            return self.merge(torch.cat([e_id, e_llm], dim=-1)) * (ids > 0).unsqueeze(-1)
        if self.kind == "scalar-gate":
            a = torch.sigmoid(self.gate_logit)
            return a * e_llm + (1 - a) * e_id
        g = torch.sigmoid(self.gate(torch.cat([e_id, e_llm], dim=-1)))  # [..., H]
        return g * e_llm + (1 - g) * e_id

    def table(self) -> torch.Tensor:  # [N+1, H]
        if self.kind == "gate-input":
            return self.id.table()
        ids = torch.arange(self.num_items + 1, device=self._device())
        return self.forward(ids)

    def _device(self) -> torch.device:
        return next(self.parameters()).device


def standardised(x: torch.Tensor) -> torch.Tensor:
    """x [N, D] with each column at mean 0 and std 1 over the N rows (a constant column stays 0)."""
    return (x - x.mean(0)) / x.std(0).clamp(min=1e-6)


def build_item_embedding(
    num_items: int,
    hidden: int,
    cfg: FusionConfig | None = None,
    llm_table: torch.Tensor | None = None,
    clusters: torch.Tensor | None = None,
) -> nn.Module:
    """The seam's factory: a plain ID table for 'base', a fused module otherwise."""
    cfg = cfg or FusionConfig()
    if cfg.kind == "base":
        return IDEmbedding(num_items, hidden)
    return FusedItemEmbedding(num_items, hidden, cfg, llm_table=llm_table, clusters=clusters)
