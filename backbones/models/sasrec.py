"""SASRec (Kang & McAuley, 2018): causal self-attention over the item sequence.

Pre-norm blocks, x + Drop(Attn(LN(x))) then x + Drop(FFN(LN(x))) (no dropout inside the FFN, as in
RecBole). Attention goes through `scaled_dot_product_attention(is_causal=True)`, PyTorch's fused
kernel, for inference; training uses the plain form, which has dropout on the attention weights and
whose backward pass is the faster of the two on a CPU.
Positions count from the oldest item of the window (right padding, as SASRec+ does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tslrec.core.settings import require

from ..base import BackboneConfig, SequentialRecommender
from ..dropout import FastDropout
from ..registry import register_backbone


class CausalSelfAttentionBlock(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.norm1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.drop = FastDropout(dropout)
        self.attn_drop = FastDropout(attn_dropout)

    def forward(self, x: torch.Tensor, query: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L, H] -> [B, L, H]; with `query` [B] (one position per row) -> [B, 1, H], that position only."""
        B, L, H = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        if query is not None:  # inference at one position per row: it attends to positions 0..query
            rows = torch.arange(B, device=x.device)
            visible = torch.arange(L, device=x.device) <= query[:, None]  # [B, L]
            a = F.scaled_dot_product_attention(q[rows, :, query, None], k, v, attn_mask=visible[:, None, None, :])
            x = x[rows, query, None]  # [B, 1, H]
            x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, 1, H)))
            return x + self.drop(self.ffn(self.norm2(x)))
        if self.training:  # unfused: dropout on the attention weights, and a faster backward pass on a CPU
            w = (q @ k.transpose(-1, -2)) * (q.size(-1) ** -0.5)  # [B, heads, L, L]
            w = w.masked_fill(torch.ones(L, L, dtype=torch.bool, device=x.device).triu(1), float("-inf"))
            a = self.attn_drop(torch.softmax(w, dim=-1)) @ v  # [B, heads, L, H/heads]
        else:  # position t attends to 0..t
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # [B, heads, L, H/heads]
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, H)))
        return x + self.drop(self.ffn(self.norm2(x)))


@register_backbone("sasrec")
class SASRec(SequentialRecommender):
    reads = (*SequentialRecommender.reads, "num_layers", "num_heads", "attn_dropout")

    @classmethod
    def check(cls, cfg: BackboneConfig) -> None:
        require(cfg.hidden % cfg.num_heads == 0, cfg, "num_heads", f"SASRec's heads must divide hidden={cfg.hidden}")

    def __init__(self, cfg: BackboneConfig, item_embedding: nn.Module):
        super().__init__(cfg, item_embedding)
        self.pos = nn.Embedding(cfg.max_len, cfg.hidden)
        self.drop = FastDropout(cfg.dropout)
        attn_dropout = cfg.dropout if cfg.attn_dropout is None else cfg.attn_dropout
        self.blocks = nn.ModuleList(
            CausalSelfAttentionBlock(cfg.hidden, cfg.num_heads, cfg.dropout, attn_dropout)
            for _ in range(cfg.num_layers)
        )
        self.norm = nn.LayerNorm(cfg.hidden)

    def _embed(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        L = seq.size(1)
        return self.drop(self.item_embedding(seq) * (self.cfg.hidden**0.5) + self.pos.weight[:L])

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        x = self._embed(seq)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, seq: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:  # -> [B, H]
        """The state after each user's last item; the last block runs at that position only."""
        x = self._embed(seq)
        for block in self.blocks[:-1]:
            x = block(x)
        return self.norm(self.blocks[-1](x, query=(lengths - 1).clamp(min=0))).squeeze(1)
