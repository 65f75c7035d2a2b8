"""Stage 2, step 1 (paper §4.2): every item alone through the tuned stage-1 LLM.

Each item is fed as a one-item "virtual user" with the same prompt, projection and pooling
as stage 1 (`ReconstructionModel.encode_items`; with stage 1's item text, the item's title tokens
come before its soft token, as in training); the pooled hidden state becomes the item's
LLM embedding and the head's softmax its inferred category distribution. Row 0 (padding)
of both outputs is zeros, so they index by internal item id like every item table here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import torch

from tslrec.core.artifacts import check_finite
from tslrec.core.errors import InputError
from tslrec.core.precision import Precision, precision_field
from tslrec.core.settings import check_allowed, setting
from tslrec.stage1_reconstruct.model import ReconstructionModel


@dataclass
class ExtractionConfig:
    """How the items are pushed through the LLM."""

    batch_size: int = setting(64, "items per LLM forward (one-item prompts, so this is cheap in memory)")
    precision: Precision = precision_field("the LLM's forward", "--bf16", "bf16", replaces="autocast_bf16")
    # The same numbers as full prompts in float32 (1e-6 relative); under bf16 autocast they differ by up to
    # ~1e-2 relative, so an export made without the cache (before tslrec had it) is reproduced only with it off.
    prefix_cache: bool = setting(
        True,
        (
            "do not reuse the prompt prefix's key/value cache: run every item's whole prompt (6.9x slower in "
            "float32 on ML-100K; by default the prefix runs once)"
        ),
        flag="--no-prefix-cache",
    )
    progress: bool = setting(True, "tqdm bar over the batches", cli=False)

    def __post_init__(self) -> None:
        check_allowed(self)


@dataclass
class ItemRepresentations:
    """What stage 2 extracts for every item."""

    embeddings: torch.Tensor  # [N+1, H] float32, row 0 = zeros
    category_probs: torch.Tensor  # [N+1, K] float32, row 0 = zeros
    seconds: float  # wall time of the LLM passes

    @property
    def num_items(self) -> int:
        return int(self.embeddings.shape[0] - 1)

    @property
    def seconds_per_1000_items(self) -> float:
        return 1000.0 * self.seconds / max(self.num_items, 1)


def extract_item_representations(
    model: ReconstructionModel, item_table: torch.Tensor, cfg: ExtractionConfig | None = None
) -> ItemRepresentations:
    """item_table [N+1, D] (the stage-1 input item embeddings, row 0 = padding) -> embeddings and categories."""
    cfg = cfg or ExtractionConfig()
    if cfg.batch_size < 1:
        raise InputError(f"ExtractionConfig.batch_size={cfg.batch_size}: need at least 1")
    if item_table.ndim != 2 or item_table.shape[0] < 2:
        raise InputError(f"item table: expected [N+1, D] with row 0 = padding, got {tuple(item_table.shape)}")
    check_finite("embeddings", item_table, "stage-1 input item table")
    start = time.perf_counter()
    emb, probs = model.encode_items(
        item_table[1:].float(),
        batch_size=cfg.batch_size,
        precision=cfg.precision,
        progress=cfg.progress,
        cache_prefix=cfg.prefix_cache,
        item_ids=torch.arange(1, item_table.shape[0]),  # [N]: their titles, when stage 1 showed item text
    )  # [N, H], [N, K]
    seconds = time.perf_counter() - start
    if not (torch.isfinite(emb).all() and torch.isfinite(probs).all()):
        raise InputError(
            "stage 2: the LLM produced NaN/inf item embeddings; extract in float32 weights (Stage2Job.dtype) "
            "and with ExtractionConfig.precision float32"
        )
    embeddings = torch.cat([torch.zeros(1, emb.shape[1]), emb.float()])  # [N+1, H]
    category_probs = torch.cat([torch.zeros(1, probs.shape[1]), probs.float()])  # [N+1, K]
    return ItemRepresentations(embeddings, category_probs, seconds)


def extraction_seconds(
    model: ReconstructionModel, item_table: torch.Tensor, cfg: ExtractionConfig, items: int = 256
) -> float:
    """Seconds `extract_item_representations` would take over all of `item_table` [N+1, D] on this machine: its
    first `items` items timed (after an untimed pass over a few), scaled to N (`tslrec run --dry-run`)."""
    cfg = replace(cfg, progress=False)
    n = min(items, item_table.shape[0] - 1)
    extract_item_representations(model, item_table[: min(n, cfg.batch_size) + 1], cfg)  # warm-up
    return extract_item_representations(model, item_table[: n + 1], cfg).seconds * (item_table.shape[0] - 1) / n
