"""Which items a model has in its input: the support of the learned input-item bias.

With `BackboneConfig.input_item_bias`, a backbone adds one learned scalar b to the score of every
item that occurs in its own input so far (position t: items 0..t of the window), once per item
however often it occurs. b starts at 0 (no effect) and learns whether a data set's users come back
to items (b > 0) or move on (b < 0: ML-1M has no repeated ratings). It reads the model's input only,
never the user's older history, so it is a model feature, not an evaluation mask.
"""

from __future__ import annotations

import torch


def first_occurrences(seq: torch.Tensor) -> torch.Tensor:
    """[B, L] item ids (0 = pad) -> bool [B, L]: a real item not already earlier in its row."""
    L = seq.shape[1]
    earlier = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril(-1)  # [t, s]: s < t
    repeat = ((seq[:, :, None] == seq[:, None, :]) & earlier).any(-1)  # [B, L]
    return (seq > 0) & ~repeat


def prefix_items(seq: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The items each position has seen, for the positions selected by `rows`.

    seq [B, L] item ids, rows bool [B, L] (T selected) -> (items [T, L] ids, once [T, L] bool):
    row i lists its window's items and marks with `once` those at or before its position, each item once.
    """
    L = seq.shape[1]
    upto = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()  # [t, s]: s <= t
    once = first_occurrences(seq)[:, None, :] & upto  # [B, L, L]
    return seq[:, None, :].expand(-1, L, -1)[rows], once[rows]


def add_input_item_bias(scores: torch.Tensor, seq: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """scores [B, N+1] + bias on each item of seq [B, L] (once per item; padding untouched)."""
    return scores.scatter_add(1, seq, first_occurrences(seq).to(scores.dtype) * bias.to(scores.dtype))
