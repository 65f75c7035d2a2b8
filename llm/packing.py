"""Pack the prompts of a batch into few rows instead of one padded row each.

A batch of prompts that continue from one shared prefix (`LLMSequenceEncoder.shared_prefix_forward`) has tails of
very different lengths: stage 1's windowed prompts hold 1 to `max_items` items, and a padded batch is as long as
its longest prompt. Packing puts several tails one after another in a row, each with its own positions (counted on
from the prefix) and an attention mask that lets a token see the prefix and the earlier tokens of its own tail
only, so every prompt's hidden states are those of its own padded row. Stage 1's training and validation
forwards use it (`Stage1Config.pack_tokens`); only the attention mask and the row layout change.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class PackedTails:
    """Where each prompt's tail sits in the packed rows."""

    source: torch.Tensor  # [R, Lr] long: index into the flattened real tail tokens, -1 = padding
    segment: torch.Tensor  # [R, Lr] long: which prompt (0..B-1) each position belongs to, -1 = padding
    position: torch.Tensor  # [R, Lr] long: position within its own tail (0 = its first token), 0 for padding

    @property
    def rows(self) -> int:
        return int(self.source.shape[0])


def pack_tails(lengths: torch.Tensor, capacity: int) -> PackedTails:
    """lengths [B] (real tail tokens per prompt, each >= 1) -> rows of at most max(capacity, longest) tokens.

    First fit over the prompts from the longest down: few rows, each nearly full. Which prompts share a row
    changes nothing in what they compute, only the padding.
    """
    lens = [int(n) for n in lengths.tolist()]
    if not lens or min(lens) < 1:
        raise ValueError("pack_tails: every prompt needs at least one tail token")
    cap = max(capacity, max(lens))
    starts = [0] * len(lens)  # offset of prompt b in the flattened real tokens
    for b in range(1, len(lens)):
        starts[b] = starts[b - 1] + lens[b - 1]
    rows: list[list[int]] = []
    used: list[int] = []
    for b in sorted(range(len(lens)), key=lambda i: -lens[i]):
        for r, u in enumerate(used):
            if u + lens[b] <= cap:
                rows[r].append(b)
                used[r] += lens[b]
                break
        else:
            rows.append([b])
            used.append(lens[b])
    width = max(used)
    source = torch.full((len(rows), width), -1, dtype=torch.long)  # [R, Lr]
    segment = torch.full((len(rows), width), -1, dtype=torch.long)  # [R, Lr]
    position = torch.zeros((len(rows), width), dtype=torch.long)  # [R, Lr]
    for r, members in enumerate(rows):
        col = 0
        for b in members:
            n = lens[b]
            source[r, col : col + n] = torch.arange(starts[b], starts[b] + n)
            segment[r, col : col + n] = b
            position[r, col : col + n] = torch.arange(n)
            col += n
    return PackedTails(source, segment, position)


def packed_attention_mask(packed: PackedTails, prefix_len: int) -> torch.Tensor:
    """Boolean mask [R, 1, Lr, P + Lr] (True = may attend): every position sees the P prefix positions, and a
    tail token the tokens of its own tail up to itself. Padding positions see the prefix only (no empty row)."""
    seg, pos = packed.segment, packed.position  # [R, Lr] each
    R, Lr = seg.shape
    same = (seg.unsqueeze(2) == seg.unsqueeze(1)) & (seg.unsqueeze(1) >= 0)  # [R, Lr(q), Lr(k)]
    causal = pos.unsqueeze(1) <= pos.unsqueeze(2)  # [R, Lr(q), Lr(k)]: key position <= query position
    prefix = torch.ones(R, Lr, prefix_len, dtype=torch.bool)  # [R, Lr, P]
    return torch.cat([prefix, same & causal], dim=2).unsqueeze(1)  # [R, 1, Lr, P + Lr]
