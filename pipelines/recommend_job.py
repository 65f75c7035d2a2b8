"""`tslrec recommend`: each user's top-K items from a trained model, under their original ids.

Any trained model: a `tslrec train` folder (a backbone, with or without a fusion) or a `tslrec lite` folder. The
model sees each user's whole known sequence (training, validation and test items; its most recent `max_len`), so
the list is what it would recommend next. Items the user already has are left out unless `--keep-seen`. Output,
to `--out` (written atomically) or standard output: TSV with a header (`user rank item score [title]`) or JSON
lines (`{"user": ..., "items": [...], "scores": [...], "titles": [...]}`); titles where the dataset has item text.
Users not in the dataset are named on standard error and skipped.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from tslrec.backbones.base import BackboneConfig, SequentialRecommender
from tslrec.backbones.registry import build_backbone
from tslrec.core.artifacts import atomic_path, load_tensors
from tslrec.core.errors import InputError
from tslrec.core.modules import eval_mode
from tslrec.core.settings import check_allowed, setting
from tslrec.data import SequenceDataset
from tslrec.data.splits import pad_right

from .options import Command, Runtime
from .run_folders import load_recorded_dataset
from .side_information import load_side_information

Scorer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (seq [B, L], lengths [B]) -> scores [B, N+1]


@dataclass
class RecommendJob:
    """Top-K lists from a finished `tslrec train` or `tslrec lite` folder."""

    model: str = setting("", "a finished `tslrec train` or `tslrec lite` output folder", required=True)
    users: str | None = setting(
        None, "original user ids, comma-separated, or a file with one per line (default: every user)"
    )
    k: int = setting(10, "items per user", flag="--top-k", aliases=("--k",), at_least=1)
    keep_seen: bool = setting(False, "let items the user already has be recommended")
    format: Literal["tsv", "jsonl"] = setting("tsv", "tsv (with a header) or jsonl")
    out: str | None = setting(None, "output file (default: standard output)")
    dataset: str | None = setting(None, "dataset name or path (default: the recorded one)")
    batch_size: int = setting(512, "users scored at once", at_least=1)
    runtime: Runtime = field(default_factory=Runtime)

    def __post_init__(self) -> None:
        check_allowed(self)


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


def backbone_scorer(model: SequentialRecommender) -> Scorer:
    return lambda seq, lengths: model.score(model(seq, lengths), seq)  # with the input: the input-item bias reads it


def lite_scorer(model: torch.nn.Module) -> Scorer:
    return lambda seq, lengths: model.score(model(seq).float())


def load_recommender(
    folder: str | Path, dataset: str | None = None
) -> tuple[torch.nn.Module, Scorer, int, SequenceDataset]:
    """(model, its scorer, its input length, the dataset it was trained on) of a `tslrec train` or `tslrec lite`
    folder, rebuilt from what the folder recorded."""
    folder = Path(folder)
    ds, record = load_recorded_dataset(folder, dataset)
    if record.get("model") == "lite-llm4rec":
        from tslrec.lite_llm4rec.model_io import load_lite_model

        if not (folder / "model").is_dir():
            raise InputError(f"{folder / 'model'}: not found; the Lite run did not finish, re-run `tslrec lite`")
        model, _ = load_lite_model(folder / "model")
        return model, lite_scorer(model), int(record["config"]["data"]["max_len"]), ds
    model = rebuild_model(folder, record, ds)
    return model, backbone_scorer(model), model.cfg.max_len, ds


@torch.no_grad()
def top_k(
    model: torch.nn.Module,
    scorer: Scorer,
    sequences: list,
    k: int,
    max_len: int,
    keep_seen: bool,
    device: torch.device,
    batch_size: int,
    progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(items [U, k], scores [U, k]) of the highest float32 scores after each whole sequence; padding never, and
    the user's own items only with keep_seen."""
    items, scores = [], []
    with eval_mode(model):
        for s in tqdm(range(0, len(sequences), batch_size), desc="recommend", unit="batch", disable=not progress):
            batch = sequences[s : s + batch_size]
            seq, lengths = pad_right(batch, max_len)  # [B, L], [B]
            seq = seq.to(device)  # [B, L]
            logits = scorer(seq, lengths.to(device)).float()  # [B, N+1]
            logits[:, 0] = float("-inf")
            if not keep_seen:
                seen, _ = pad_right(batch, max(len(x) for x in batch))  # [B, n]: every item of the user
                logits.scatter_(1, seen.to(device), float("-inf"))
                logits[:, 0] = float("-inf")
            top = logits.topk(min(k, logits.shape[1] - 1), dim=1)
            items.append(top.indices.cpu())
            scores.append(top.values.cpu())
    return torch.cat(items), torch.cat(scores)


def wanted_users(users: str | None, ds: SequenceDataset) -> list[int]:
    """Dataset rows of the users asked for (a comma list, or a file with one id per line; None = every user); the
    unknown ones are named on standard error and skipped, none known is an InputError."""
    if users is None:
        return list(range(ds.num_users))
    path = Path(users)
    if path.is_file():
        wanted = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    elif "," in users or not (path.suffix or "/" in users):
        wanted = [u.strip() for u in users.split(",") if u.strip()]
    else:
        raise InputError(f"RecommendJob.users {users}: file not found; give a file of user ids or a comma list")
    index = {u: i for i, u in enumerate(ds.user_ids)}
    unknown = [u for u in wanted if u not in index]
    if unknown:
        print(f"note: {len(unknown)} user(s) not in the dataset, skipped: {', '.join(unknown[:5])}", file=sys.stderr)
    rows = [index[u] for u in wanted if u in index]
    if not rows:
        raise InputError(f"RecommendJob.users {users}: no user of the dataset among them; use its original user ids")
    return rows


def recommend_lists(job: RecommendJob) -> list[dict]:
    """The top-K lists as dicts ({"user", "items", "scores", and "titles" where the dataset has item text}):
    what `tslrec recommend` writes, for Python."""
    device = job.runtime.start()
    model, scorer, max_len, ds = load_recommender(job.model, job.dataset)
    model.to(device)
    rows = wanted_users(job.users, ds)
    items, scores = top_k(
        model,
        scorer,
        [ds.sequences[r] for r in rows],
        job.k,
        max_len,
        job.keep_seen,
        device,
        job.batch_size,
        job.runtime.progress,
    )
    titles = ds.item_titles()
    out = []
    for r, its, scs in zip(rows, items.tolist(), scores.tolist()):
        kept = [(i, s) for i, s in zip(its, scs) if s != float("-inf")]
        row = {
            "user": ds.user_ids[r],
            "items": [ds.item_ids[i] for i, _ in kept],
            "scores": [round(s, 6) for _, s in kept],
        }
        if titles is not None:
            row["titles"] = [titles[i] for i, _ in kept]
        out.append(row)
    return out


def recommend(job: RecommendJob) -> Path | None:
    """Write the top-K lists; returns the output file (None for standard output)."""
    lists = recommend_lists(job)
    if job.format == "jsonl":
        lines = [json.dumps(row, ensure_ascii=False) for row in lists]
    else:
        with_titles = any("titles" in row for row in lists)
        lines = ["user\trank\titem\tscore" + ("\ttitle" if with_titles else "")]
        for row in lists:
            for rank, (item, score) in enumerate(zip(row["items"], row["scores"]), 1):
                title = f"\t{row['titles'][rank - 1]}" if with_titles else ""
                lines.append(f"{row['user']}\t{rank}\t{item}\t{score:.6f}{title}")
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
