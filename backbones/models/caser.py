"""Caser (Tang & Wang, 2018): horizontal and vertical convolutions over the last W items.

Every position gets its own window of the W most recent items (zero-padded at the start),
so one pass trains on every position. The per-user embedding of the original is left out:
the model is a pure sequence encoder, like the other backbones.

The convolutions run over the sequence once, not as Conv2d over one W x H image per position: the vertical one
as a matrix product over each position's window, the horizontal ones as a single Conv1d over the items, with a
sliding max. This is the same function as the Conv2d layers whose parameters it keeps (`conv2d_reference`),
without Conv2d's backward over one tiny image per position, which dominated a CPU training step, and its cost
grows with W^2 per position (not with W^2 tensor operations), so a wide window stays affordable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import BackboneConfig, SequentialRecommender
from ..dropout import FastDropout
from ..registry import register_backbone


@register_backbone("caser")
class Caser(SequentialRecommender):
    reads = (*SequentialRecommender.reads, "caser_window", "caser_h_filters", "caser_v_filters")

    def __init__(self, cfg: BackboneConfig, item_embedding: nn.Module):
        super().__init__(cfg, item_embedding)
        W, H = cfg.caser_window, cfg.hidden
        self.vertical = nn.Conv2d(1, cfg.caser_v_filters, (W, 1))
        self.horizontal = nn.ModuleList(nn.Conv2d(1, cfg.caser_h_filters, (h, H)) for h in range(1, W + 1))
        self.drop = FastDropout(cfg.dropout)
        self.fc = nn.Linear(cfg.caser_v_filters * H + cfg.caser_h_filters * W, H)

    def encode(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        B, L = seq.shape
        W = self.cfg.caser_window
        x = self.item_embedding(F.pad(seq, (W - 1, 0)))  # [B, L+W-1, H]: position t's window is rows t..t+W-1
        z = torch.cat([self._vertical(x, L), *self._horizontal(x, L)], dim=-1)  # [B, L, n_v*H + W*n_h]
        return F.relu(self.fc(self.drop(z)))

    def _vertical(self, x: torch.Tensor, L: int) -> torch.Tensor:  # [B, L+W-1, H] -> [B, L, n_v*H]
        """Conv2d (W, 1): per filter f and column c, sum_w V[f, w] x[t+w, c] + b[f], flattened f-major."""
        B, _, H = x.shape
        windows = x.unfold(1, self.cfg.caser_window, 1)  # [B, L, H, W] (a view)
        v = windows @ self.vertical.weight.flatten(1).t() + self.vertical.bias  # [B, L, H, n_v]
        return v.transpose(2, 3).reshape(B, L, -1)

    def _horizontal(self, x: torch.Tensor, L: int) -> list[torch.Tensor]:  # -> W tensors [B, L, n_h]
        """Conv2d (h, H) for h = 1..W is a Conv1d over the sequence with H input channels and kernel h. All heights
        run as one Conv1d with kernel W (a height-h kernel padded with zeros after its h rows); the sequence is
        padded with W - h ... W - 1 zero rows at the end so every height has its L + W - h window starts. Then
        ReLU and a max over the W - h + 1 starts inside each position's window (max_pool1d, stride 1)."""
        W, n_h = self.cfg.caser_window, self.cfg.caser_h_filters
        kernels = [
            F.pad(conv.weight.squeeze(1).transpose(1, 2), (0, W - h)) for h, conv in enumerate(self.horizontal, 1)
        ]
        weight = torch.cat(kernels)  # [W * n_h, H, W]: height h's filters in rows (h-1)*n_h .. h*n_h
        bias = torch.cat([conv.bias for conv in self.horizontal])  # [W * n_h]
        xt = F.pad(x.transpose(1, 2), (0, W - 1))  # [B, H, L + 2W - 2]
        g = F.conv1d(xt, weight.to(xt.dtype), bias.to(xt.dtype))  # [B, W * n_h, L + W - 1]: response per start
        out = []
        for h in range(1, W + 1):
            gh = F.relu(g[:, (h - 1) * n_h : h * n_h, : L + W - h])  # [B, n_h, L + W - h]: starts of height h
            out.append(F.max_pool1d(gh, W - h + 1, stride=1).transpose(1, 2))  # [B, L, n_h]
        return out

    def conv2d_reference(self, seq: torch.Tensor) -> torch.Tensor:  # [B, L] -> [B, L, H]
        """The same function through the Conv2d layers, one W x H image per position (tests compare the two)."""
        B, L = seq.shape
        W = self.cfg.caser_window
        windows = F.pad(seq, (W - 1, 0)).unfold(1, W, 1)  # [B, L, W]: items t-W+1..t
        x = self.item_embedding(windows).reshape(B * L, 1, W, -1)  # [B*L, 1, W, H]
        v = self.vertical(x).flatten(1)  # [B*L, n_v * H]
        hs = [F.relu(conv(x)).squeeze(3).amax(dim=2) for conv in self.horizontal]  # each [B*L, n_h]
        z = torch.cat([v, *hs], dim=1)
        return F.relu(self.fc(self.drop(z))).view(B, L, -1)
