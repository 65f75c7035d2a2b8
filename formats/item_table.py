"""The exported item-embedding folder: written and read by this one module.

    <folder>/
      item_embeddings.safetensors  embeddings [N+1, H] float32 (row = internal item id, row 0 = padding, zeros)
                                   category_probs [N+1, K] float32 (optional; row 0 zeros)
                                   item_groups [N+1] int64 (optional): the stage-1 k-means group of each item,
                                   row 0 = -1 (the pre-grouping index of the CI variant and of Fig. 4)
      item_embeddings.npy          the same embeddings as a NumPy array
      category_probs.npy           the same category distribution (if present)
      item_ids.tsv                 internal_id <TAB> original_id, for rows 1..N
      <dataset>.itememb            RecBole pretrained-embedding atomic file: iid:token  item_emb:float_seq
      manifest.json                dataset name and hash, dims, source model, pooling, version (written last)

The folder is built under a temporary name and renamed into place, so a folder with a
manifest is always complete. `load_item_embeddings` checks everything and raises a
one-line InputError for a missing or truncated file, NaNs, a dimension mismatch, an id
mismatch or a dataset-hash mismatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tslrec.core.artifacts import (
    atomic_folder,
    atomic_path,
    check_finite,
    load_tensors,
    package_versions,
    read_json,
    save_tensors,
    write_json,
)
from tslrec.core.errors import InputError

FORMAT = "tslrec-item-embeddings/1"
TENSORS = "item_embeddings.safetensors"


@dataclass
class ItemEmbeddingFile:
    """A validated export."""

    embeddings: torch.Tensor  # [N+1, H], row 0 = padding
    category_probs: torch.Tensor | None  # [N+1, K] or None
    item_ids: list[str]  # original id per internal id; [0] = "[PAD]"
    manifest: dict  # everything manifest.json records
    folder: Path  # where it was read from
    item_groups: torch.Tensor | None = None  # [N+1] int64 k-means group per item (row 0 = -1), or None


def save_item_embeddings(folder: str | Path, *args: Any, **kwargs: Any) -> Path:
    """Write an export folder atomically (a folder that exists is whole): `write_export_files`'s arguments after the
    folder, into a fresh temporary folder that then replaces `folder`."""
    folder = Path(folder)
    with atomic_folder(folder) as tmp:
        write_export_files(tmp, *args, **kwargs)
    return folder


def write_export_files(
    folder: Path,
    embeddings: torch.Tensor,
    item_ids: list[str],
    dataset_name: str,
    dataset_hash: str,
    category_probs: torch.Tensor | None = None,
    source: dict | None = None,
    item_groups: torch.Tensor | None = None,
) -> None:
    """The export's files into an existing folder (a `tslrec train` folder carries its item table this way), each
    written to a temporary name and renamed, manifest.json last: a folder with a manifest holds a whole export."""
    emb = embeddings.detach().float().cpu().clone()  # [N+1, H]
    n1 = len(item_ids)
    if emb.ndim != 2 or emb.shape[0] != n1:
        raise ValueError(f"embeddings must be [{n1}, H] (one row per item plus padding), got {tuple(emb.shape)}")
    emb[0] = 0.0
    tensors = {"embeddings": emb}
    if category_probs is not None:
        probs = category_probs.detach().float().cpu().clone()  # [N+1, K]
        if probs.ndim != 2 or probs.shape[0] != n1:
            raise ValueError(f"category_probs must be [{n1}, K], got {tuple(probs.shape)}")
        probs[0] = 0.0
        tensors["category_probs"] = probs
    if item_groups is not None:
        groups = torch.as_tensor(item_groups).detach().long().cpu().clone()  # [N+1]
        if groups.shape != (n1,):
            raise ValueError(f"item_groups must be [{n1}], got {tuple(groups.shape)}")
        groups[0] = -1
        tensors["item_groups"] = groups
    for k, t in tensors.items():
        if t.is_floating_point():
            check_finite(k, t, "export")
    (folder / "manifest.json").unlink(missing_ok=True)  # until it is written again, the folder is no whole export
    save_tensors(folder / TENSORS, tensors, metadata={"dataset": dataset_name, "dataset_hash": dataset_hash})
    with atomic_path(folder / "item_embeddings.npy") as tmp, open(tmp, "wb") as f:
        np.save(f, emb.numpy())
    if "category_probs" in tensors:
        with atomic_path(folder / "category_probs.npy") as tmp, open(tmp, "wb") as f:
            np.save(f, tensors["category_probs"].numpy())
    with atomic_path(folder / "item_ids.tsv") as tmp:
        tmp.write_text("".join(f"{i}\t{orig}\n" for i, orig in enumerate(item_ids) if i > 0))
    recbole_name = f"{dataset_name}.itememb"
    with atomic_path(folder / recbole_name) as tmp, open(tmp, "w") as f:
        f.write("iid:token\titem_emb:float_seq\n")
        for i in range(1, n1):
            f.write(item_ids[i] + "\t" + " ".join(f"{x:.6g}" for x in emb[i].tolist()) + "\n")
    write_json(
        folder / "manifest.json",
        {
            "format": FORMAT,
            "dataset": {"name": dataset_name, "hash": dataset_hash, "num_items": n1 - 1},
            "embedding_dim": emb.shape[1],
            "num_categories": tensors["category_probs"].shape[1] if "category_probs" in tensors else None,
            "has_item_groups": "item_groups" in tensors,
            "files": {
                "tensors": TENSORS,
                "npy": "item_embeddings.npy",
                "item_ids": "item_ids.tsv",
                "recbole": recbole_name,
            },
            "source": source or {},
            "versions": package_versions(),
        },
    )


def load_item_embeddings(
    folder: str | Path, num_items: int | None = None, dataset_hash: str | None = None, item_ids: list[str] | None = None
) -> ItemEmbeddingFile:
    """Read and validate an export; pass the dataset's facts to check the export belongs to it."""
    folder = Path(folder)
    if folder.is_file() and folder.name == TENSORS:
        folder = folder.parent
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{manifest_path}: not found; point to a folder written by 'tslrec stage2' (or re-run it)")
    manifest = read_json(manifest_path, "embedding manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(
            f"{manifest_path}: field 'format' is {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
            f"expected {FORMAT!r}; re-export with this version of tslrec"
        )
    facts = manifest.get("dataset") if isinstance(manifest.get("dataset"), dict) else {}
    tensors = load_tensors(folder / TENSORS, "item embedding file")
    if "embeddings" not in tensors:
        raise InputError(f"{folder / TENSORS}: field 'embeddings' is missing; re-export the embeddings")
    emb = tensors["embeddings"].float()
    probs = tensors.get("category_probs")
    groups = tensors.get("item_groups")
    want_n = facts.get("num_items")
    if emb.ndim != 2 or emb.shape[0] != (want_n or 0) + 1 or emb.shape[1] != manifest.get("embedding_dim"):
        raise InputError(
            f"{folder / TENSORS}: field 'embeddings' has shape {tuple(emb.shape)} but manifest.json says "
            f"[{(want_n or 0) + 1}, {manifest.get('embedding_dim')}]; the files are from different exports, re-export"
        )
    check_finite("embeddings", emb, folder / TENSORS)
    if probs is not None:
        if probs.ndim != 2 or probs.shape[0] != emb.shape[0] or probs.shape[1] != manifest.get("num_categories"):
            raise InputError(
                f"{folder / TENSORS}: field 'category_probs' has shape {tuple(probs.shape)}, expected "
                f"[{emb.shape[0]}, {manifest.get('num_categories')}]; re-export"
            )
        check_finite("category_probs", probs, folder / TENSORS)
        probs = probs.float()
    if groups is not None:
        if (
            groups.shape != (emb.shape[0],)
            or groups.is_floating_point()
            or (groups.numel() > 1 and int(groups[1:].min()) < 0)
        ):
            raise InputError(
                f"{folder / TENSORS}: field 'item_groups' must be {emb.shape[0]} non-negative integers "
                f"(row 0 = -1), got shape {tuple(groups.shape)} {groups.dtype}; re-export"
            )
        groups = groups.long()
    ids_path = folder / "item_ids.tsv"
    if not ids_path.is_file():
        raise InputError(f"{ids_path}: not found; re-export the embeddings")
    lines = ids_path.read_text().splitlines()
    stored_ids = ["[PAD]"] + [ln.split("\t", 1)[1] if "\t" in ln else "" for ln in lines]
    if len(stored_ids) != emb.shape[0]:
        raise InputError(f"{ids_path}: {len(lines)} rows but the embeddings have {emb.shape[0] - 1} items; re-export")
    if num_items is not None and num_items != want_n:
        raise InputError(
            f"{folder}: field 'dataset.num_items' is {want_n} but the dataset has {num_items} items; "
            "export the embeddings from this dataset with the same preprocessing flags"
        )
    if dataset_hash is not None and dataset_hash != facts.get("hash"):
        raise InputError(
            f"{manifest_path}: field 'dataset.hash' does not match the dataset "
            f"({str(facts.get('hash'))[:12]} vs {dataset_hash[:12]}); "
            "export from the same dataset and preprocessing flags"
        )
    if item_ids is not None and item_ids[1:] != stored_ids[1:]:
        if len(item_ids) != len(stored_ids):
            raise InputError(
                f"{ids_path}: {len(stored_ids) - 1} items but the dataset has {len(item_ids) - 1}; "
                "export from the same dataset"
            )
        first = next(i for i, (a, b) in enumerate(zip(item_ids, stored_ids)) if i > 0 and a != b)
        raise InputError(
            f"{ids_path}: row {first} maps to item {stored_ids[first]!r} but the dataset has {item_ids[first]!r}; "
            "export from the same dataset"
        )
    return ItemEmbeddingFile(emb, probs, stored_ids, manifest, folder, groups)
