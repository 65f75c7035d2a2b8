"""Seed statistics and significance tests for the fusion ablation (tensors in, numbers out).

Across seeds: mean and sample standard deviation (ddof = 1; 0.0 for a single seed).

Against the baseline, the headline test is one **across seeds**: a two-sample Welch t-test
(scipy.stats.ttest_ind, equal_var=False) over the per-seed test means, as the TSLRec paper
does. It accounts for training noise: two runs that differ only in their seed differ by about
the seed-to-seed spread, and only a difference larger than that spread is called significant.
A verdict ("better" / "worse" / "no significant difference") needs at least MIN_SEEDS seeds on
each side; with fewer, only the difference is reported.

Secondary, and labelled as conditional on the training runs: a paired t-test
(scipy.stats.ttest_rel) across users on per-user metric vectors, each first averaged over the
seeds both runs share. With thousands of users it calls differences far smaller than the
seed-to-seed spread significant, so it never gives the verdict. Identical vectors (every
difference zero) give t = 0, p = 1; a constant non-zero difference gives t = ±inf, p = 0
(scipy would return NaN for both).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

MIN_SEEDS = 3  # seeds needed on each side before a test across seeds gives a verdict
ALPHA = 0.05  # significance level of every verdict (the TSLRec paper's p <= 0.05)
SEED_TEST = "Welch t-test over per-seed means"
USER_TEST = "paired t-test over users (seed-averaged; conditional on these training runs)"


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
        return PairedTest(
            float(diff[0]), 0.0 if same else math.copysign(math.inf, diff[0]), 1.0 if same else 0.0, int(a.size)
        )
    res = ttest_rel(a, b)
    return PairedTest(float(diff.mean()), float(res.statistic), float(res.pvalue), int(a.size))


@dataclass
class SeedTest:
    """Welch's two-sample t-test of a variant's per-seed means against the baseline's."""

    mean_diff: float  # mean over the variant's seeds minus mean over the baseline's
    t: float  # Welch t statistic (positive = variant better); NaN when undefined
    p: float  # two-sided p-value; NaN when undefined (fewer than 2 seeds a side, or no spread at all)
    seeds: int  # seeds of the variant
    base_seeds: int  # seeds of the baseline
    name: str = SEED_TEST

    @property
    def has_verdict(self) -> bool:
        """Enough seeds on both sides for a better / worse verdict."""
        return min(self.seeds, self.base_seeds) >= MIN_SEEDS and not math.isnan(self.p)

    def verdict(self, alpha: float = ALPHA) -> str | None:
        """'better', 'worse' or 'no significant difference'; None with too few seeds for a verdict."""
        if not self.has_verdict:
            return None
        if self.p > alpha:
            return "no significant difference"
        return "better" if self.mean_diff > 0 else "worse"

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.verdict(alpha) in ("better", "worse")

    def text(self) -> str:
        """'+0.0030, p = 0.034: better' (bold when significant); the difference alone with too few seeds."""
        if min(self.seeds, self.base_seeds) < MIN_SEEDS:
            return f"{self.mean_diff:+.4f} (fewer than {MIN_SEEDS} seeds: no verdict)"
        if not self.has_verdict:
            return f"{self.mean_diff:+.4f} (no spread across seeds: the test is undefined)"
        text = f"{self.mean_diff:+.4f}, p = {format_p(self.p)}: {self.verdict()}"
        return f"**{text}**" if self.significant() else text


def format_p(p: float) -> str:
    """A p-value for a table: two significant digits, scientific below 1e-4."""
    return "n/a" if math.isnan(p) else (f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}")


def welch_seed_test(variant: Sequence[float], baseline: Sequence[float]) -> SeedTest:
    """Welch t-test of per-seed metric values (one number per training run) against the baseline's."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(variant, dtype=np.float64), np.asarray(baseline, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("need at least one seed on each side")
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return SeedTest(diff, float("nan"), float("nan"), int(a.size), int(b.size))
    if a.std() == 0 and b.std() == 0:  # no spread at all: equal means are no difference, unequal ones undefined
        return SeedTest(
            diff, 0.0 if diff == 0 else float("nan"), 1.0 if diff == 0 else float("nan"), int(a.size), int(b.size)
        )
    res = ttest_ind(a, b, equal_var=False)
    return SeedTest(diff, float(res.statistic), float(res.pvalue), int(a.size), int(b.size))
