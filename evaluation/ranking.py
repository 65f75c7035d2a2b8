"""Ranking evaluation: full ranking over all items by default, batched and vectorised.

rank = 1 + #{j != target : score_j >= score_target}, over items 1..N (ties count against
the model, so constant scores give rank N). HR@K = Recall@K = [rank <= K],
NDCG@K = 1/log2(rank+1) if rank <= K, MRR@K = 1/rank if rank <= K. Per-user values are kept.

`mask_history` (off by default, as in RecBole) removes every item the user interacted with
before the target from the candidates: the whole history (`s[:-1]` for test, `s[:-2]` for
validation), not only the model's input window. A target that also occurs earlier stays a
candidate. `sampled_negatives=99` ranks the target against 99 items the
user never interacted with instead; every key is then prefixed `sampled_` so the numbers
cannot be mistaken for full-ranking ones.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tslrec.core.errors import DivergedError, InputError
from tslrec.core.precision import Precision, precision_field
from tslrec.core.settings import check_allowed, require, require_unset_unless, setting
from tslrec.data.splits import EvalSplit

KS = (5, 10, 20)
METRIC_NAME = re.compile(r"(HR|Recall|NDCG|MRR)@([1-9][0-9]*)")
METRIC_HINT = "use HR@K, Recall@K, NDCG@K or MRR@K"


def is_metric_name(name: str) -> bool:
    """True for the shape of the names `evaluate` reports: HR@K, Recall@K, NDCG@K, MRR@K (which K: `EvalConfig.ks`)."""
    return METRIC_NAME.fullmatch(name) is not None


@dataclass
class EvalConfig:
    """How targets are ranked."""

    ks: tuple[int, ...] = setting(KS, "cut-offs K of HR@K, Recall@K, NDCG@K and MRR@K")
    mask_history: bool = setting(
        False, "drop every item the user had before the target (whole history) from the candidates"
    )
    sampled_negatives: int = setting(
        0, "0 = full ranking; N > 0 = rank against N sampled negatives (every metric then labelled sampled_)"
    )
    seed: int = setting(2024, "seed of the negative sampler", flag="--eval-seed")
    batch_size: int = setting(
        32, "users scored at once (small batches stay in cache)", flag="--eval-batch-size", at_least=1
    )
    precision: Precision = precision_field(
        "how users are encoded (scores are ranked in float32 always)", "--eval-bf16", "bf16", flag="--eval-precision"
    )

    def __post_init__(self) -> None:
        check_allowed(self)
        require(self.sampled_negatives >= 0, self, "sampled_negatives", "0 (full ranking) or a positive count")
        require(
            not (self.mask_history and self.sampled_negatives),
            self,
            "mask_history",
            "applies to full ranking only (sampled negatives are never the user's items already); drop one of the two",
        )
        ks_ok = bool(self.ks) and all(k >= 1 for k in self.ks) and len(set(self.ks)) == len(self.ks)
        require(ks_ok, self, "ks", "give distinct cut-offs of at least 1")
        require_unset_unless(self.sampled_negatives > 0, self, "seed", "seeds sampled negatives only; none here")

    def metric_key(self, name: str) -> str:
        """The key of metric `name` (e.g. NDCG@10) in this protocol's results (sampled_NDCG@10 when sampled); an
        InputError for a name this evaluation does not report (call it before training, not after an epoch)."""
        match = METRIC_NAME.fullmatch(name)
        if match is None or int(match[2]) not in self.ks:
            raise InputError(f"select_metric {name}: {METRIC_HINT} with K one of {', '.join(map(str, self.ks))}")
        return ("sampled_" if self.sampled_negatives else "") + name

    @property
    def protocol(self) -> str:
        if self.sampled_negatives:
            return f"sampled-{self.sampled_negatives}-negatives, none of them the user's items"
        return "full-ranking" + (", history masked" if self.mask_history else ", history not masked")


def ranks_full(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor | None = None) -> torch.Tensor:
    """Rank of each target among items 1..N. scores [B, N+1], targets [B], history [B, L] (0 = pad) -> [B]."""
    scores = scores.clone()
    scores[:, 0] = float("-inf")
    target_score = scores.gather(1, targets.view(-1, 1))  # [B, 1]
    if history is not None:
        scores.scatter_(1, history, float("-inf"))
        scores.scatter_(1, targets.view(-1, 1), target_score)  # a repeated target stays a candidate
        scores[:, 0] = float("-inf")
    return (scores >= target_score).sum(1)  # counts the target itself, so this is 1 + #{j != t: s_j >= s_t}


def ranks_sampled(
    scores: torch.Tensor, targets: torch.Tensor, seen: torch.Tensor, n_neg: int, generator: torch.Generator
) -> torch.Tensor:
    """Rank among the target and `n_neg` items the user never interacted with. seen [B, L] (all of the user's items)."""
    weights = torch.ones_like(scores, dtype=torch.float)  # [B, N+1]
    weights[:, 0] = 0
    weights.scatter_(1, seen, 0.0)
    weights.scatter_(1, targets.view(-1, 1), 0.0)
    neg = torch.multinomial(weights.cpu(), n_neg, replacement=False, generator=generator).to(scores.device)  # [B, n]
    target_score = scores.gather(1, targets.view(-1, 1))
    return (scores.gather(1, neg) >= target_score).sum(1) + 1


def metrics_from_ranks(ranks: torch.Tensor, ks: tuple[int, ...] = KS, prefix: str = "") -> dict[str, torch.Tensor]:
    """Per-user metric vectors keyed like 'HR@10'."""
    r = ranks.double()
    out: dict[str, torch.Tensor] = {}
    for k in ks:
        hit = (r <= k).double()
        out[f"{prefix}HR@{k}"] = hit
        out[f"{prefix}Recall@{k}"] = hit.clone()  # equal to HR@K under leave-one-out
        out[f"{prefix}NDCG@{k}"] = hit / torch.log2(r + 1)
        out[f"{prefix}MRR@{k}"] = hit / r
    return out


@dataclass
class EvalResult:
    """Mean metrics, per-user vectors, and the protocol that produced them."""

    metrics: dict[str, float]
    per_user: dict[str, torch.Tensor] = field(repr=False)
    ranks: torch.Tensor = field(repr=False)
    protocol: str = ""


@torch.no_grad()
def evaluate(
    score_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    split: EvalSplit,
    cfg: EvalConfig | None = None,
    device: torch.device | str = "cpu",
) -> EvalResult:
    """Rank `split.targets` for every user.

    score_fn(seq [B, L], lengths [B]) -> scores [B, N+1], computed and ranked in float32 (a bf16
    score raises: bf16 logits tie, and ties count against the model). With `cfg.mask_history`
    the candidates exclude the user's whole history before the target (`split.seen[:, :split.prior_len]`).
    """
    cfg = cfg or EvalConfig()
    gen = torch.Generator().manual_seed(cfg.seed)
    order = torch.argsort(split.lengths, stable=True)  # users of similar length together: less padding to encode
    ranks = torch.empty(len(split.targets), dtype=torch.long)
    for s in range(0, len(order), cfg.batch_size):
        users = order[s : s + cfg.batch_size]  # [B]
        lens = split.lengths[users]
        seq = split.history[users, : max(1, int(lens.max()))].to(device)  # [B, width]: right padding trimmed
        tgt = split.targets[users].to(device)
        scores = score_fn(seq, lens.to(device))  # [B, N+1]
        if scores.dtype != torch.float32:
            raise ValueError(
                f"evaluate: scores are {scores.dtype}; rank float32 scores (compute the scores "
                "outside autocast, or cast the user state and item table to float32 first)"
            )
        nan_rows = torch.isnan(scores[:, 1:]).any(1)  # [B]: a NaN never outranks the target, so it would flatter
        if nan_rows.any():
            raise DivergedError(f"NaN scores for {int(nan_rows.sum())} of {len(users)} users in a batch")
        if cfg.sampled_negatives:
            batch_ranks = ranks_sampled(scores, tgt, split.seen[users].to(device), cfg.sampled_negatives, gen)
        else:
            prior = None
            if cfg.mask_history:
                seen = split.seen[users]  # [B, n]
                before = torch.arange(seen.shape[1]) < split.prior_len[users, None]  # [B, n]
                prior = (seen * before).to(device)  # the whole history before the target, 0 = pad
            batch_ranks = ranks_full(scores, tgt, prior)
        ranks[users] = batch_ranks.cpu()
    prefix = "sampled_" if cfg.sampled_negatives else ""
    per_user = metrics_from_ranks(ranks, cfg.ks, prefix)
    return EvalResult({k: float(v.mean()) for k, v in per_user.items()}, per_user, ranks, cfg.protocol)
