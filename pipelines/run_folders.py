"""Read the folders earlier jobs wrote: a `tslrec train` run (its dataset and item table) and a
`tslrec stage1` run (its config, group map and the train folder it started from).

Every mismatch (other dataset, other preprocessing, missing file) is a one-line InputError.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tslrec.core.artifacts import check_finite, load_tensors, read_json
from tslrec.core.errors import InputError
from tslrec.data import DataConfig, SequenceDataset, load_dataset

STAGE1_CONFIG = "config.json"  # written by stage1_reconstruct.training
STAGE1_GROUPS = "groups.safetensors"  # item_group [N+1] (row 0 = -1), centroids, user targets
STAGE1_METRICS = "metrics.json"  # written last: its presence means stage 1 finished
TRAIN_TABLE = "item_embeddings.safetensors"  # `tslrec train --export-item-embeddings`: embeddings [N+1, H]


@dataclass
class TrainFolder:
    """A finished `tslrec train --export-item-embeddings` folder and its dataset."""

    folder: Path  # the folder read
    dataset: SequenceDataset  # reloaded with the preprocessing the run recorded
    item_table: torch.Tensor  # [N+1, D] float32 exported item embeddings (row 0 = padding)
    metrics: dict  # its metrics.json


@dataclass
class Stage1Folder:
    """A finished `tslrec stage1` folder."""

    folder: Path  # the folder read
    config: dict  # its config.json (stage1, llm, item_dim, num_items, k, prompt, run)
    train_dir: Path  # the `tslrec train` folder stage 1 started from
    item_groups: torch.Tensor  # [N+1] int64 k-means group of each item, row 0 = -1


def load_recorded_dataset(train_dir: str | Path, dataset: str | None = None) -> tuple[SequenceDataset, dict]:
    """(dataset, metrics.json) of a finished `tslrec train` run: the dataset reloaded with the preprocessing the
    run recorded, checked against its hash. `dataset` overrides the recorded name or path."""
    train_dir = Path(train_dir)
    metrics_path = train_dir / "metrics.json"
    metrics = read_json(metrics_path, "`tslrec train` metrics")
    info = metrics.get("dataset_info") if isinstance(metrics.get("dataset_info"), dict) else {}
    try:
        data_cfg = DataConfig(**metrics["config"]["data"])
    except (KeyError, TypeError) as e:
        raise InputError(
            f"{metrics_path}: field config.data is missing or invalid ({e}); re-run `tslrec train`"
        ) from None
    name = dataset or metrics.get("dataset_source") or info.get("name") or metrics.get("dataset")
    if not name:
        raise InputError(f"{metrics_path}: no dataset name recorded; pass --dataset")
    ds = load_dataset(name, data_cfg)
    if info.get("hash") and ds.hash != info["hash"]:
        raise InputError(
            f"dataset {name}: data hash {ds.hash[:12]} differs from the one {train_dir} was trained on "
            f"({info['hash'][:12]}); pass the same dataset and preprocessing (--dataset PATH)"
        )
    return ds, metrics


def load_train_folder(train_dir: str | Path, dataset: str | None = None) -> TrainFolder:
    """Dataset and item table of a `tslrec train` run; `dataset` overrides the recorded name or path."""
    train_dir = Path(train_dir)
    ds, metrics = load_recorded_dataset(train_dir, dataset)
    return TrainFolder(train_dir, ds, exported_table(train_dir, ds), metrics)


def is_train_folder(path: str | Path) -> bool:
    """A `tslrec train` output folder (its metrics.json; its item table, if exported, is in the export format too),
    as opposed to a `tslrec stage2` export (a manifest, no metrics.json)."""
    path = Path(path)
    return path.is_dir() and (path / "metrics.json").is_file()


def train_folder_table(train_dir: str | Path, ds: SequenceDataset) -> tuple[torch.Tensor, dict]:
    """(item table [N+1, H] float32, where it came from) of a `tslrec train --export-item-embeddings` folder,
    checked against the dataset `ds` by the data hash the run recorded; the table exactly as written."""
    train_dir = Path(train_dir)
    metrics = read_json(train_dir / "metrics.json", "`tslrec train` metrics")
    info = metrics.get("dataset_info") if isinstance(metrics.get("dataset_info"), dict) else {}
    recorded = info.get("hash")
    if recorded != ds.hash:
        raise InputError(
            f"SideInfoConfig.item_embeddings {train_dir}: field dataset_info.hash of its metrics.json "
            f"({str(recorded)[:12]}) differs from the dataset's ({ds.hash[:12]}); pass the `tslrec train` folder "
            "of this dataset and preprocessing"
        )
    source = {"llm": None, "model": f"{metrics.get('model')} (its own item table, no LLM)", "train_dir": str(train_dir)}
    return exported_table(train_dir, ds), source


def exported_table(train_dir: Path, ds: SequenceDataset) -> torch.Tensor:
    """The item table [N+1, H] (float32) a `tslrec train --export-item-embeddings` run wrote, checked: present,
    one row per item of `ds` plus padding, finite."""
    emb_path = train_dir / TRAIN_TABLE
    if not emb_path.is_file():
        raise InputError(f"{emb_path}: not found; re-run `tslrec train` with --export-item-embeddings")
    table = load_tensors(emb_path, "item embeddings").get("embeddings")
    if table is None or table.ndim != 2 or table.shape[0] != ds.num_items + 1:
        shape = None if table is None else tuple(table.shape)
        raise InputError(
            f"{emb_path}: field 'embeddings' has shape {shape}, expected [{ds.num_items + 1}, H]; "
            "re-run `tslrec train` with --export-item-embeddings on this dataset"
        )
    table = table.float()  # [N+1, H]
    check_finite("embeddings", table, emb_path)
    return table


def read_stage1_folder(stage1_dir: str | Path, train_dir: str | Path | None = None) -> Stage1Folder:
    """Config, group map and source train folder of a `tslrec stage1` run (`train_dir` overrides the recorded one)."""
    stage1_dir = Path(stage1_dir)
    if not stage1_dir.is_dir():
        raise InputError(f"--stage1-dir {stage1_dir}: no such folder; pass the --out folder of `tslrec stage1`")
    if not (stage1_dir / STAGE1_METRICS).is_file():
        raise InputError(
            f"{stage1_dir / STAGE1_METRICS}: not found, so stage 1 has not finished; "
            "run the same `tslrec stage1` command again to resume it"
        )
    config = read_json(stage1_dir / STAGE1_CONFIG, "stage 1 config")
    run = config.get("run") if isinstance(config.get("run"), dict) else {}
    recorded = train_dir or run.get("train_dir")
    if not recorded:
        raise InputError(
            f"{stage1_dir / STAGE1_CONFIG}: field run.train_dir is missing; pass --train-dir "
            "(the `tslrec train` folder stage 1 started from)"
        )
    if not Path(recorded).is_dir():
        raise InputError(
            f"{stage1_dir / STAGE1_CONFIG}: field run.train_dir points to {recorded}, which does not exist "
            "here; run from the folder stage 1 ran in, or pass --train-dir"
        )
    groups = load_tensors(stage1_dir / STAGE1_GROUPS, "stage 1 group map")
    if "item_group" not in groups or groups["item_group"].ndim != 1:
        raise InputError(
            f"{stage1_dir / STAGE1_GROUPS}: field 'item_group' is missing or not a vector; re-run `tslrec stage1`"
        )
    return Stage1Folder(stage1_dir, config, Path(recorded), groups["item_group"].long())


def check_stage1_matches(stage1: Stage1Folder, ds: SequenceDataset) -> None:
    """The stage 1 run must have been trained on exactly this dataset."""
    source = stage1.folder / STAGE1_CONFIG
    recorded_hash = (stage1.config.get("run") or {}).get("dataset_hash")
    if recorded_hash and recorded_hash != ds.hash:
        raise InputError(
            f"{source}: field run.dataset_hash ({recorded_hash[:12]}) differs from the dataset's "
            f"({ds.hash[:12]}); use the dataset and preprocessing stage 1 was trained on"
        )
    n = stage1.config.get("num_items")
    if n is not None and int(n) != ds.num_items:
        raise InputError(
            f"{source}: field num_items is {n} but the dataset has {ds.num_items} items; "
            "use the dataset stage 1 was trained on"
        )
    if stage1.item_groups.shape[0] != ds.num_items + 1:
        raise InputError(
            f"{stage1.folder / STAGE1_GROUPS}: field 'item_group' has {stage1.item_groups.shape[0]} rows, "
            f"expected {ds.num_items + 1}; use the dataset stage 1 was trained on"
        )
