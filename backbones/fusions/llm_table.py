"""The fusions that read an LLM item table x [N+1, D], frozen unless cfg.finetune_llm_table: each mixes the ID
embedding e_id with e_llm = W_p x_i + b_p (W_p always trained; the padding row stays 0)."""

from typing import ClassVar

import torch
from torch import nn

from tslrec.backbones.item_embedding import ID_INIT_STD, Fusion, FusionConfig, IDEmbedding, register_fusion
from tslrec.core.errors import InputError


class LLMTableFusion(Fusion):
    """The parts every LLM-table fusion shares: the ID table (if `has_id_table`), x, W_p and e_llm."""

    reads_llm_table = True
    has_id_table: ClassVar[bool] = True

    def __init__(self, num_items: int, hidden: int, cfg: FusionConfig, llm_table: torch.Tensor | None, *_: object):
        super().__init__()
        self.num_items = num_items
        self.id = IDEmbedding(num_items, hidden) if self.has_id_table else None
        if llm_table is None or llm_table.shape[0] != num_items + 1:
            raise InputError(
                f"fusion '{cfg.kind}': needs an LLM item table with {num_items + 1} rows (row 0 = padding); "
                "pass the stage-2 export"
            )
        table = llm_table.float().clone()
        table[0] = 0.0
        table = self.prepared(table)
        if cfg.finetune_llm_table:
            self.llm_table = nn.Parameter(table)  # [N+1, D]
        else:
            self.register_buffer("llm_table", table)  # [N+1, D]
        self.proj = self.projection(table.shape[1], hidden)

    def prepared(self, table: torch.Tensor) -> torch.Tensor:  # [N+1, D]: x as this fusion reads it
        return table

    def projection(self, dim: int, hidden: int) -> nn.Linear:  # W_p: [D] -> [H]
        return nn.Linear(dim, hidden)

    def e_llm(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        return self.proj(self.llm_table[ids]) * (ids > 0).unsqueeze(-1)


@register_fusion("gate")
class Gate(LLMTableFusion):
    """TSLRec: g = sigmoid(W_g [e_id ; e_llm] + b_g) in R^H, an element-wise gate; e = g * e_llm + (1 - g) * e_id."""

    def __init__(self, num_items: int, hidden: int, cfg: FusionConfig, llm_table: torch.Tensor | None, *_: object):
        super().__init__(num_items, hidden, cfg, llm_table)
        self.gate = nn.Linear(2 * hidden, hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        e_id, e_llm = self.id(ids), self.e_llm(ids)  # [..., H] each
        g = torch.sigmoid(self.gate(torch.cat([e_id, e_llm], dim=-1)))  # [..., H]
        return g * e_llm + (1 - g) * e_id


@register_fusion("scalar-gate")
class ScalarGate(LLMTableFusion):
    """a = sigmoid(w), one learned scalar; e = a * e_llm + (1 - a) * e_id."""

    def __init__(self, num_items: int, hidden: int, cfg: FusionConfig, llm_table: torch.Tensor | None, *_: object):
        super().__init__(num_items, hidden, cfg, llm_table)
        self.gate_logit = nn.Parameter(torch.zeros(()))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        e_id, e_llm = self.id(ids), self.e_llm(ids)  # [..., H] each
        a = torch.sigmoid(self.gate_logit)
        return a * e_llm + (1 - a) * e_id


@register_fusion("add")
class Add(LLMTableFusion):
    """e = e_id + e_llm."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        return self.id(ids) + self.e_llm(ids)


@register_fusion("concat")
class Concat(LLMTableFusion):
    """e = W_c [e_id ; e_llm] + b_c."""

    def __init__(self, num_items: int, hidden: int, cfg: FusionConfig, llm_table: torch.Tensor | None, *_: object):
        super().__init__(num_items, hidden, cfg, llm_table)
        self.merge = nn.Linear(2 * hidden, hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        return self.merge(torch.cat([self.id(ids), self.e_llm(ids)], dim=-1)) * (ids > 0).unsqueeze(-1)


@register_fusion("llm-only")
class LLMOnly(LLMTableFusion):
    """e = e_llm, no ID table."""

    has_id_table = False

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # [...] -> [..., H]
        return self.e_llm(ids)


@register_fusion("gate-matched")
class GateMatched(Gate):
    """gate with e_llm = W_p z_i, z_i = x_i standardised per dimension over the items and W_p drawn N(0, 0.02^2 / D):
    e_llm starts at the ID table's scale (std 0.02), where gate's starts ~50x larger."""

    def prepared(self, table: torch.Tensor) -> torch.Tensor:  # [N+1, D]; a constant column becomes 0
        table[1:] = (table[1:] - table[1:].mean(0)) / table[1:].std(0).clamp(min=1e-6)
        return table

    def projection(self, dim: int, hidden: int) -> nn.Linear:
        proj = nn.Linear(dim, hidden)
        nn.init.normal_(proj.weight, std=ID_INIT_STD / dim**0.5)
        nn.init.zeros_(proj.bias)
        proj.keeps_own_init = True  # the backbone's init_weights must not redraw it
        return proj


@register_fusion("gate-input")
class GateInput(Gate):
    """gate for the input items; users are scored against the ID table alone."""

    def table(self) -> torch.Tensor:  # [N+1, H]
        return self.id.table()
