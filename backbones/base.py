"""One contract for every backbone, as RecBole's SequentialRecommender.

A backbone implements `encode(seq) -> [B, L, H]`: a causal state at every position
(position t sees items 0..t only). The base class turns that into
  forward(seq, lengths) -> [B, H]      the user state after the last real item
  score(user_state, seq) -> [B, N+1]   dot product with every item (column 0 = padding), plus the
                                       learned input-item bias on the items of seq if the config asks for it
  loss(inputs, targets)                next-item loss at every position in one pass
Sequences are right-padded with 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from tslrec.core.settings import check_allowed, require, setting

from .input_items import add_input_item_bias, prefix_items
from .losses import full_softmax_ce, sampled_bce


@dataclass
class BackboneConfig:
    """Hyper-parameters of the backbones: the first five every backbone reads, the rest each backbone names in its
    `reads` (a run records, and may be given, only what its backbones read)."""

    num_items: int = setting(0, "N; ids are 1..N and 0 is padding (set from the dataset)", cli=False)
    hidden: int = setting(64, "H: embedding and state size", at_least=1)
    max_len: int = setting(50, "L: input window (set from DataConfig.max_len)", cli=False)
    num_layers: int = setting(2, "SASRec, FMLP-Rec: transformer / filter blocks", flag="--layers", at_least=1)
    gru_layers: int = setting(1, "GRU4Rec: stacked GRU layers (RecBole's default, 1)", at_least=1)
    num_heads: int = setting(2, "SASRec: attention heads", flag="--heads", at_least=1)
    dropout: float = setting(0.2, "dropout on embeddings and inside blocks")
    attn_dropout: float | None = setting(None, "SASRec: dropout on attention weights; unset = the same as dropout")
    input_item_bias: bool = setting(
        False,
        (
            "learn one scalar added to the score of each item already in the model's input (0 at start; "
            "negative where users do not return to items)"
        ),
    )
    caser_window: int = setting(
        10,
        (
            "Caser: items per convolution window (the paper's 5 comes with a user embedding; without one, 10 "
            "carries the longer-term taste, and scored higher on ML-100K validation)"
        ),
    )
    caser_h_filters: int = setting(16, "Caser: horizontal filters per height")
    caser_v_filters: int = setting(4, "Caser: vertical filters")

    def __post_init__(self) -> None:
        check_allowed(self)
        require(0.0 <= self.dropout < 1.0, self, "dropout", "must be in [0, 1)")
        require(self.attn_dropout is None or 0.0 <= self.attn_dropout < 1.0, self, "attn_dropout", "must be in [0, 1)")


class SequentialRecommender(nn.Module):
    """Base class: shared scoring, gathering and losses. Subclasses implement `encode`."""

    reads: ClassVar[tuple[str, ...]] = ("num_items", "hidden", "max_len", "dropout", "input_item_bias")  # cfg fields

    def __init__(self, cfg: BackboneConfig, item_embedding: nn.Module):
        super().__init__()
        self.cfg = cfg
        self.item_embedding = item_embedding  # the seam: forward(ids) -> [.., H], table() -> [N+1, H]
        self.input_item_bias = nn.Parameter(torch.zeros(())) if cfg.input_item_bias else None  # see input_items.py

    @classmethod
    def check(cls, cfg: BackboneConfig) -> None:
        """InputError for settings this backbone cannot use together (SASRec: heads that do not divide hidden)."""

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        raise NotImplementedError

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # -> [B, H]
        states = self.encode(seq)  # [B, L, H]
        last = (lengths - 1).clamp(min=0).view(-1, 1, 1).expand(-1, 1, states.size(-1))
        return states.gather(1, last).squeeze(1)

    def score(self, user_state: torch.Tensor, seq: torch.Tensor | None = None) -> torch.Tensor:  # -> [B, N+1]
        """user_state [B, H]; seq [B, L], the input the state was encoded from (needed with input_item_bias)."""
        scores = user_state @ self.item_embedding.table().t()
        if self.input_item_bias is None:
            return scores
        if seq is None:
            raise ValueError("score: input_item_bias is on, so pass the input sequence: score(state, seq)")
        return add_input_item_bias(scores, seq, self.input_item_bias)

    def loss(
        self, inputs: torch.Tensor, targets: torch.Tensor, kind: str = "ce", generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Next-item loss at every position with a target (> 0).

        kind='ce': softmax cross-entropy over all N items.
        kind='bce': binary cross-entropy against one uniformly sampled negative per position.
        """
        states = self.encode(inputs)  # [B, L, H]
        mask = targets > 0
        h, y = states[mask], targets[mask]  # [T, H], [T]
        table = self.item_embedding.table()  # [N+1, H]
        seen, bias = None, self.input_item_bias
        if bias is not None:
            items, once = prefix_items(inputs, mask)  # [T, L] each: what each position has in its input
            seen = ((items - 1).clamp(min=0), once)  # columns of table[1:]; padding is never `once`
        if kind == "ce":
            return full_softmax_ce(h, table[1:], y - 1, seen=seen, bias=bias)
        if kind == "bce":
            return sampled_bce(h, table, y, generator, seen=seen, bias=bias)
        raise ValueError(f"unknown loss '{kind}'")


def init_weights(module: nn.Module) -> None:
    """BERT-style init used by SASRec/FMLP-Rec implementations: N(0, 0.02) for linear and embedding weights.
    A module marked `keeps_own_init` (set where it was initialised on purpose, e.g. gate-matched's projection)
    keeps its weights."""
    if getattr(module, "keeps_own_init", False):
        return
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.Embedding) and module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
