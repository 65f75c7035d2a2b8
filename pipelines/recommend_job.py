"""`tslrec recommend`: each user's top-K items from a trained model, under their original ids.

The model sees each user's whole known sequence (training, validation and test items; its most recent
`max_len`), so the list is what it would recommend next. Items the user already has are left out unless
`--keep-seen`. Output: TSV (`user <TAB> rank <TAB> item <TAB> score`) or JSON lines
(`{"user": ..., "items": [...], "scores": [...]}`), to `--out` (written atomically) or to standard output.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tslrec.backbones.base import BackboneConfig, SequentialRecommender
from tslrec.backbones.batching import pad_right
from tslrec.backbones.registry import build_backbone
from tslrec.core.artifacts import atomic_path, load_tensors, resolve_device
from tslrec.core.errors import InputError
from tslrec.core.modules import eval_mode
from tslrec.core.settings import require

from .data import SequenceDataset
from .options import Command
from .run_folders import load_recorded_dataset
from .side_information import load_side_information

FORMATS = ("tsv", "jsonl")


@dataclass
class RecommendJob:
    """Top-K lists from a finished `tslrec train` folder."""

    model: str = field(default="", metadata={"required": True, "help": "a finished `tslrec train` output folder"})
    users: str | None = field(default=None, metadata={"help": "file with one original user id per line (default: all)"})
    k: int = field(default=10, metadata={"help": "items per user"})
    keep_seen: bool = field(default=False, metadata={"help": "let items the user already has be recommended"})
    format: str = field(default="tsv", metadata={"choices": FORMATS, "help": "tsv or jsonl"})
    out: str | None = field(default=None, metadata={"help": "output file (default: standard output)"})
    dataset: str | None = field(default=None, metadata={"help": "dataset name or path (default: the recorded one)"})
    batch_size: int = field(default=512, metadata={"help": "users scored at once"})
    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})

    def __post_init__(self) -> None:
        require(self.k >= 1, self, "k", "need at least 1")
        require(self.batch_size >= 1, self, "batch_size", "need at least 1")


def load_trained_model(folder: str | Path, dataset: str | None = None) -> tuple[SequentialRecommender, SequenceDataset]:
    """The model of a finished `tslrec train` folder, rebuilt from the files and settings it recorded, with its
    weights, and the dataset it was trained on."""
    ds, record = load_recorded_dataset(folder, dataset)
    return rebuild_model(folder, record, ds), ds


def rebuild_model(folder: str | Path, record: dict, ds: SequenceDataset) -> SequentialRecommender:
    """The model a `tslrec train` folder recorded (its metrics.json `record`), on dataset `ds`, with its weights."""
    folder = Path(folder)
    try:
        side_info, config = record["side_information"], record["config"]["model"]
        fusion = side_info["fusion"]
    except (KeyError, TypeError) as e:
        raise InputError(f"{folder / 'metrics.json'}: field {e} is missing; re-run `tslrec train`") from None
    export = side_info.get("item_embeddings", {}).get("folder")
    clusters = side_info.get("clusters")
    clusters = None if clusters is None or clusters.endswith("(item_groups)") else clusters
    side = load_side_information(fusion["kind"], ds, export, clusters, fusion["finetune_llm_table"])
    model = build_backbone(record["model"], BackboneConfig(**config), side.fusion, side.llm_table, side.clusters)
    try:
        model.load_state_dict(load_tensors(folder / "model.safetensors", "model weights"))
    except RuntimeError as e:
        raise InputError(
            f"{folder / 'model.safetensors'}: does not fit the recorded model ({str(e)[:80]}); a model saved by an "
            "older tslrec (SASRec changed its layer names) needs `tslrec train` again"
        ) from None
    return model


@torch.no_grad()
def top_k(
    model: SequentialRecommender,
    sequences: list,
    k: int,
    max_len: int,
    keep_seen: bool,
    device: torch.device,
    batch_size: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(items [U, k], scores [U, k]) of the highest float32 scores after each whole sequence; padding never, and
    the user's own items only with keep_seen."""
    items, scores = [], []
    with eval_mode(model):
        for s in range(0, len(sequences), batch_size):
            batch = sequences[s : s + batch_size]
            seq, lengths = pad_right(batch, max_len)  # [B, L], [B]
            seq = seq.to(device)  # [B, L]
            logits = model.score(model(seq, lengths.to(device)), seq).float()  # [B, N+1]
            logits[:, 0] = float("-inf")
            if not keep_seen:
                seen, _ = pad_right(batch, max(len(x) for x in batch))  # [B, n]: every item of the user
                logits.scatter_(1, seen.to(device), float("-inf"))
                logits[:, 0] = float("-inf")
            top = logits.topk(min(k, logits.shape[1] - 1), dim=1)
            items.append(top.indices.cpu())
            scores.append(top.values.cpu())
    return torch.cat(items), torch.cat(scores)


def recommend(job: RecommendJob) -> Path | None:
    """Write the top-K lists; returns the output file (None for standard output)."""
    device = resolve_device(job.device)
    model, ds = load_trained_model(job.model, job.dataset)
    model.to(device)
    index = {u: i for i, u in enumerate(ds.user_ids)}
    if job.users:
        if not Path(job.users).is_file():
            raise InputError(f"RecommendJob.users {job.users}: file not found; list original user ids, one per line")
        wanted = [line.strip() for line in Path(job.users).read_text().splitlines() if line.strip()]
        unknown = [u for u in wanted if u not in index]
        if unknown:
            raise InputError(
                f"RecommendJob.users {job.users}: user '{unknown[0]}' is not in the dataset ({len(unknown)} unknown); "
                "list original user ids, one per line"
            )
        rows = [index[u] for u in wanted]
        if not rows:
            raise InputError(f"RecommendJob.users {job.users}: the file lists no user; one original user id per line")
    else:
        rows = list(range(ds.num_users))
    items, scores = top_k(
        model, [ds.sequences[r] for r in rows], job.k, model.cfg.max_len, job.keep_seen, device, job.batch_size
    )
    lines = []
    for r, its, scs in zip(rows, items.tolist(), scores.tolist()):
        pairs = [(ds.item_ids[i], s) for i, s in zip(its, scs) if s != float("-inf")]
        if job.format == "jsonl":
            lines.append(
                json.dumps(
                    {"user": ds.user_ids[r], "items": [i for i, _ in pairs], "scores": [round(s, 6) for _, s in pairs]}
                )
            )
        else:
            lines += [f"{ds.user_ids[r]}\t{rank}\t{i}\t{s:.6f}" for rank, (i, s) in enumerate(pairs, 1)]
    text = "\n".join(lines) + "\n"
    if job.out is None:
        sys.stdout.write(text)
        return None
    with atomic_path(job.out) as tmp:
        tmp.write_text(text)
    return Path(job.out)


def print_outcome(out: Path | None) -> None:
    if out is not None:
        print(f"wrote {out}")


COMMAND = Command(
    "recommend",
    "top-K items per user from a trained model (original ids, seen items left out)",
    RecommendJob(),
    recommend,
    print_outcome,
)
