"""Seed statistics and paired significance tests for the fusion ablation (tensors in, numbers out).

Across seeds: mean and sample standard deviation (ddof = 1; 0.0 for a single seed).
Against the baseline: a paired t-test (scipy.stats.ttest_rel) on per-user metric vectors of
the same users, each first averaged over the seeds both runs share, as the evaluation
protocol asks. Identical vectors (every difference zero) give t = 0, p = 1; a constant
non-zero difference gives t = ±inf, p = 0 (scipy would return NaN for both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class PairedTest:
    """ttest_rel(variant, baseline) on per-user values."""

    mean_diff: float  # mean over users of variant - baseline
    t: float  # t statistic (positive = variant better)
    p: float  # two-sided p-value
    users: int  # number of paired users

    def significant(self, alpha: float = 0.05) -> bool:
        return not math.isnan(self.p) and self.p <= alpha


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample std (ddof=1) of per-seed values; std 0.0 for one value, NaNs for none."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def seed_average(per_seed: Sequence[torch.Tensor]) -> torch.Tensor:
    """[S] vectors of shape [U] -> [U] mean over seeds (float64)."""
    if not per_seed:
        raise ValueError("need at least one per-user vector")
    return torch.stack([torch.as_tensor(v).double() for v in per_seed]).mean(dim=0)  # [U]


def paired_t_test(variant: torch.Tensor, baseline: torch.Tensor) -> PairedTest:
    """Paired t-test of variant [U] against baseline [U] (the same users in the same order)."""
    from scipy.stats import ttest_rel

    a = torch.as_tensor(variant).double().numpy()
    b = torch.as_tensor(baseline).double().numpy()
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired vectors must be [U] and equal in shape, got {a.shape} and {b.shape}")
    diff = a - b
    if a.size < 2:
        return PairedTest(float(diff.mean()) if a.size else float("nan"), float("nan"), float("nan"), int(a.size))
    if np.all(diff == diff[0]):  # zero variance of the differences: t is undefined
        same = diff[0] == 0
        return PairedTest(float(diff[0]), 0.0 if same else math.copysign(math.inf, diff[0]), 1.0 if same else 0.0,
                          int(a.size))
    res = ttest_rel(a, b)
    return PairedTest(float(diff.mean()), float(res.statistic), float(res.pvalue), int(a.size))
