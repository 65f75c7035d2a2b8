"""The paper's two analyses of stage 2 (Fig. 4 and Fig. 5), tensors in, numbers out.

Category agreement (Fig. 4): for every item, compare the category the tuned LLM infers for
it alone (the argmax of its stage-2 `category_probs`) with its k-means pre-grouping index.
The three classes are disjoint and sum to 1:
  C1  the LLM's top-1 category is the item's group
  C2  the item's group is in the LLM's top-3 but not its top-1
  C3  the rest

Activity groups (Fig. 5): users sorted by sequence length (stable, shortest first) and cut
into G groups of equal size (sizes differ by at most one); a metric averaged within each.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CategoryAgreement:
    """Fractions of items in C1/C2/C3 (see the module docstring)."""

    c1: float  # LLM top-1 == k-means group
    c2: float  # k-means group in LLM top-`top` but not top-1
    c3: float  # neither
    items: int  # items compared (padding excluded)
    k: int  # number of categories
    top: int  # the cut-off of C2 (3 in the paper)

    @property
    def within_top(self) -> float:
        """C1 + C2: the group is anywhere in the LLM's top-`top`."""
        return self.c1 + self.c2

    def as_dict(self) -> dict:
        return {
            "C1": self.c1,
            "C2": self.c2,
            "C3": self.c3,
            f"top{self.top}": self.within_top,
            "items": self.items,
            "k": self.k,
            "chance_top1": 1.0 / self.k,
            f"chance_top{self.top}": min(self.top, self.k) / self.k,
        }


def category_agreement(category_probs: torch.Tensor, item_groups: torch.Tensor, top: int = 3) -> CategoryAgreement:
    """category_probs [N+1, K] and item_groups [N+1] (row 0 = padding, skipped) -> C1/C2/C3 fractions."""
    probs = category_probs[1:].float()  # [N, K]
    groups = item_groups[1:].long()  # [N]
    if probs.shape[0] != groups.shape[0]:
        raise ValueError(f"category_probs has {probs.shape[0]} items but item_groups has {groups.shape[0]}")
    k = probs.shape[1]
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= k):
        raise ValueError(f"item_groups must lie in [0, {k}) for items 1..N")
    n = max(groups.numel(), 1)
    ranked = probs.argsort(dim=1, descending=True, stable=True)[:, : min(top, k)]  # [N, top]
    hit1 = ranked[:, 0] == groups  # [N]
    hit_top = (ranked == groups.unsqueeze(1)).any(dim=1)  # [N]
    c1 = float(hit1.sum()) / n
    c2 = float((hit_top & ~hit1).sum()) / n
    return CategoryAgreement(
        c1=c1, c2=c2, c3=1.0 - c1 - c2 if groups.numel() else 0.0, items=int(groups.numel()), k=k, top=top
    )


@dataclass
class ActivityGroups:
    """Users cut into groups by sequence length."""

    group_of_user: torch.Tensor  # [U] int64 group index 0..G-1 (0 = least active)
    min_length: list[int]  # shortest sequence in each group
    max_length: list[int]  # longest sequence in each group
    users: list[int]  # users per group

    @property
    def labels(self) -> list[str]:
        return [f"{lo}-{hi}" for lo, hi in zip(self.min_length, self.max_length)]


def activity_groups(lengths: torch.Tensor, num_groups: int) -> ActivityGroups:
    """lengths [U] (items per user) -> G equal-size groups, shortest sequences first."""
    if num_groups < 1:
        raise ValueError(f"num_groups must be at least 1, got {num_groups}")
    lengths = torch.as_tensor(lengths).long()  # [U]
    g = min(num_groups, max(int(lengths.numel()), 1))
    order = torch.argsort(lengths, stable=True)  # [U]
    group_of_user = torch.empty_like(lengths)
    mins, maxs, sizes = [], [], []
    for gi, members in enumerate(torch.tensor_split(order, g)):
        group_of_user[members] = gi
        mins.append(int(lengths[members].min()) if members.numel() else 0)
        maxs.append(int(lengths[members].max()) if members.numel() else 0)
        sizes.append(int(members.numel()))
    return ActivityGroups(group_of_user, mins, maxs, sizes)


def mean_by_group(per_user: torch.Tensor, groups: ActivityGroups) -> list[float]:
    """per_user [U] metric values -> mean within each activity group."""
    per_user = torch.as_tensor(per_user).double()
    if per_user.shape != groups.group_of_user.shape:
        raise ValueError(
            f"per-user vector has {per_user.numel()} users but the groups cover {groups.group_of_user.numel()}"
        )
    return [
        float(per_user[groups.group_of_user == gi].mean()) if n else float("nan") for gi, n in enumerate(groups.users)
    ]
