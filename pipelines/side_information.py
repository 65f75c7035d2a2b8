"""What a fusion needs besides item IDs, read from files and checked against the dataset.

--item-embeddings DIR   a `tslrec stage2` export (gate, scalar-gate, add, concat, llm-only)
--clusters PATH         the k-means pre-grouping index for `ci` (the paper's CI variant): a
                        `tslrec stage1` folder, its groups.safetensors, or an export folder
                        that carries item_groups. Without --clusters, `ci` takes item_groups
                        from --item-embeddings.
--finetune-llm-table    train the LLM table itself instead of keeping it frozen
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tslrec.backbones.item_embedding import FusionConfig
from tslrec.core.artifacts import load_tensors, read_json
from tslrec.core.errors import InputError
from tslrec.stage2_augment.embedding_file import TENSORS, ItemEmbeddingFile, load_item_embeddings

from .data import SequenceDataset
from .run_folders import STAGE1_CONFIG, STAGE1_GROUPS

LLM_FUSIONS = ("gate", "scalar-gate", "add", "concat", "llm-only")  # fusions that read the LLM item table


@dataclass
class SideInfoConfig:
    """Files a fusion reads besides item IDs."""

    item_embeddings: str | None = field(
        default=None,
        metadata={"help": ("`tslrec stage2` export folder (needed by gate, scalar-gate, add, concat, llm-only)")},
    )
    clusters: str | None = field(
        default=None,
        metadata={
            "aliases": ("--stage1-dir",),
            "help": (
                "k-means group of each item for ci: a `tslrec stage1` folder, its groups.safetensors, or an export "
                "folder (default: the item_groups inside --item-embeddings)"
            ),
        },
    )
    finetune_llm_table: bool = field(
        default=False,
        metadata={"help": ("train the LLM item table too (default: frozen; its projection is always trained)")},
    )


@dataclass
class SideInformation:
    """Everything the item-embedding seam needs for one fusion."""

    fusion: FusionConfig  # which fusion, frozen or fine-tuned table
    llm_table: torch.Tensor | None = None  # [N+1, D] exported LLM embeddings
    clusters: torch.Tensor | None = None  # [N+1] k-means group per item
    sources: dict = field(default_factory=dict)  # where they came from, for metrics.json

    @property
    def variant(self) -> str:
        """Name in results: the fusion, plus '+finetune' when the LLM table is trained."""
        return self.fusion.kind + ("+finetune" if self.fusion.finetune_llm_table else "")

    def record(self) -> dict:
        return {"fusion": asdict(self.fusion), **self.sources}


def load_side_information(
    fusion: str,
    ds: SequenceDataset,
    item_embeddings: str | None = None,
    clusters: str | None = None,
    finetune_llm_table: bool = False,
) -> SideInformation:
    """Read and validate only what `fusion` needs; a missing or mismatched file is a one-line InputError."""
    if finetune_llm_table and fusion not in LLM_FUSIONS:
        raise InputError(
            f"SideInfoConfig.finetune_llm_table: fusion '{fusion}' has no LLM table; use it with "
            f"{', '.join(LLM_FUSIONS)}"
        )
    side = SideInformation(FusionConfig(kind=fusion, finetune_llm_table=finetune_llm_table))
    export: ItemEmbeddingFile | None = None
    if fusion in LLM_FUSIONS or (fusion == "ci" and clusters is None and item_embeddings is not None):
        if item_embeddings is None:
            raise InputError(
                f"fusion {fusion} needs SideInfoConfig.item_embeddings (the output folder of `tslrec stage2`)"
            )
        export = load_item_embeddings(
            item_embeddings, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids
        )
        side.sources["item_embeddings"] = {
            "folder": str(Path(export.folder).resolve()),
            "embedding_dim": int(export.embeddings.shape[1]),
            "source": export.manifest.get("source", {}),
        }
    if fusion in LLM_FUSIONS:
        side.llm_table = export.embeddings
    if fusion == "ci":
        if clusters is not None:
            side.clusters = load_clusters(clusters, ds)
            side.sources["clusters"] = str(Path(clusters).resolve())
        elif export is not None and export.item_groups is not None:
            side.clusters = export.item_groups
            side.sources["clusters"] = f"{export.folder} (item_groups)"
        else:
            where = f"{item_embeddings} has no item_groups; " if item_embeddings else ""
            raise InputError(
                f"fusion ci: {where}set SideInfoConfig.clusters (a `tslrec stage1` folder or its {STAGE1_GROUPS})"
            )
    return side


def load_clusters(path: str | Path, ds: SequenceDataset) -> torch.Tensor:
    """The k-means group of each item, [N+1] int64 (row 0 = -1), from a stage-1 folder, its group file or an export."""
    path = Path(path)
    if path.is_dir() and (path / "manifest.json").is_file():
        export = load_item_embeddings(path, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
        if export.item_groups is None:
            raise InputError(
                f"SideInfoConfig.clusters {path}: this export carries no item_groups; pass the `tslrec stage1` folder"
            )
        return export.item_groups
    if path.is_dir():
        config_path = path / STAGE1_CONFIG
        if config_path.is_file():
            recorded = (read_json(config_path, "stage 1 config").get("run") or {}).get("dataset_hash")
            if recorded and recorded != ds.hash:
                raise InputError(
                    f"SideInfoConfig.clusters {path}: stage 1 ran on another dataset or preprocessing (hash "
                    f"{recorded[:12]} vs {ds.hash[:12]}); pass the matching stage 1 folder"
                )
        path = path / STAGE1_GROUPS
    if path.name == TENSORS:
        return load_clusters(path.parent, ds)
    tensors = load_tensors(path, "group map")
    groups = tensors.get("item_group", tensors.get("item_groups"))
    if groups is None:
        raise InputError(
            f"SideInfoConfig.clusters {path}: no tensor 'item_group'; "
            f"pass a `tslrec stage1` folder or its {STAGE1_GROUPS}"
        )
    if groups.shape != (ds.num_items + 1,) or groups.is_floating_point():
        raise InputError(
            f"SideInfoConfig.clusters {path}: field 'item_group' has shape {tuple(groups.shape)} {groups.dtype}, "
            "expected "
            f"{ds.num_items + 1} integers (one per item plus padding); use the dataset stage 1 ran on"
        )
    if ds.num_items and int(groups[1:].min()) < 0:
        raise InputError(
            f"SideInfoConfig.clusters {path}: field 'item_group' has negative groups for real items; "
            "re-run `tslrec stage1`"
        )
    return groups.long()
