"""A toy dataset file and a matching stage-2 export, for the stage 2 tests (no LLM needed)."""

from __future__ import annotations

from pathlib import Path

import torch
from stage1_helpers import clustered_items, user_sequences

from tslrec.data import DataConfig, SequenceDataset, load_dataset
from tslrec.formats.item_table import save_item_embeddings


def write_toy_dataset(
    folder: Path, n_items: int = 40, n_users: int = 40, seed: int = 0, name: str = "toy"
) -> tuple[Path, SequenceDataset]:
    """An S3-Rec style file (`user item item ...` per line) of users who prefer one or two of 4 clusters."""
    _, truth = clustered_items(n_items=n_items, dim=4, k=4, seed=seed)
    seqs = user_sequences(truth, n_users=n_users, k=4, seed=seed, length=(5, 12))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    path.write_text("".join(f"u{u} " + " ".join(f"i{i}" for i in s) + "\n" for u, s in enumerate(seqs)))
    return path, load_dataset(str(path), DataConfig())


def write_export(folder: Path, ds: SequenceDataset, dim: int = 12, k: int = 4, seed: int = 0) -> Path:
    """A random export for `ds`: embeddings [N+1, dim], category_probs [N+1, k], item_groups [N+1]."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(ds.num_items + 1, dim, generator=g)
    probs = torch.softmax(torch.randn(ds.num_items + 1, k, generator=g), dim=1)
    groups = torch.randint(0, k, (ds.num_items + 1,), generator=g)
    return save_item_embeddings(
        folder, emb, ds.item_ids, ds.name, ds.hash, category_probs=probs, source={"llm": "random"}, item_groups=groups
    )


def gate_train_argv(data, export, out) -> list[str]:
    """`tslrec train` with the gate fusion over an export: dataset, export folder and output folder."""
    return ["train", "--dataset", str(data), "--fusion", "gate", "--item-embeddings", str(export), "--out", str(out)]
