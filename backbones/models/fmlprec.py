"""FMLP-Rec (Zhou et al., 2022): learnable filters instead of self-attention.

The original filter multiplies the sequence's FFT by a learned spectrum, a *circular*
convolution that lets every position see the future. Trained at every position in one
pass that would leak the targets, so this filter is the causal form of the same idea:
a learned per-channel kernel k[0..L-1] applied as a linear convolution
y[t] = sum_{s<=t} k[t-s] x[s], computed with zero-padded FFTs (size 2L) in O(L log L).
"""

from __future__ import annotations

import torch
from torch import nn

from ..base import BackboneConfig, SequentialRecommender
from ..dropout import FastDropout
from ..registry import register_backbone


class CausalFilter(nn.Module):
    def __init__(self, max_len: int, hidden: int, dropout: float):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(max_len, hidden) * 0.02)  # [L, H]
        self.drop = FastDropout(dropout)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, H] -> [B, L, H]
        L = x.size(1)
        n = 2 * L
        xf = torch.fft.rfft(x.float(), n=n, dim=1)  # [B, L+1, H]
        kf = torch.fft.rfft(self.kernel[:L].float(), n=n, dim=0)  # [L+1, H]
        y = torch.fft.irfft(xf * kf, n=n, dim=1)[:, :L].to(x.dtype)  # [B, L, H], causal part
        return self.norm(x + self.drop(y))


class FMLPBlock(nn.Module):
    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        self.filter = CausalFilter(cfg.max_len, cfg.hidden, cfg.dropout)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.hidden, 4 * cfg.hidden),
            nn.GELU(),
            nn.Linear(4 * cfg.hidden, cfg.hidden),
            FastDropout(cfg.dropout),
        )
        self.norm = nn.LayerNorm(cfg.hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, L, H]
        x = self.filter(x)
        return self.norm(x + self.ffn(x))


@register_backbone("fmlprec")
class FMLPRec(SequentialRecommender):
    reads = (*SequentialRecommender.reads, "num_layers")

    def __init__(self, cfg: BackboneConfig, item_embedding: nn.Module):
        super().__init__(cfg, item_embedding)
        self.pos = nn.Embedding(cfg.max_len, cfg.hidden)
        self.norm = nn.LayerNorm(cfg.hidden)
        self.drop = FastDropout(cfg.dropout)
        self.blocks = nn.ModuleList(FMLPBlock(cfg) for _ in range(cfg.num_layers))

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        L = seq.size(1)
        x = self.drop(self.norm(self.item_embedding(seq) + self.pos.weight[:L]))
        for block in self.blocks:
            x = block(x)
        return x
