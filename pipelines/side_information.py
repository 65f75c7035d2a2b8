"""What a fusion needs besides item IDs, read from files and checked against the dataset.

--item-embeddings DIR   the LLM item table of the fusions that read one (gate, ...): a `tslrec stage2`
                        export, or a `tslrec train --export-item-embeddings` folder (its own item table, e.g.
                        the stage-0 SASRec's: the no-LLM control). `tslrec ablate` takes several labelled
                        sources, `tuned=DIR,stage0=DIR` (a bare DIR is labelled `tuned`); `tslrec train` one.
--clusters PATH         the k-means pre-grouping index for `ci` (the paper's CI variant): a
                        `tslrec stage1` folder, its groups.safetensors, or an export folder
                        that carries item_groups. Without --clusters, `ci` takes item_groups
                        from --item-embeddings.
--finetune-llm-table    train the LLM table itself instead of keeping it frozen
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from tslrec.backbones.item_embedding import Fusion, FusionConfig, fusion_class, llm_table_fusions
from tslrec.core.artifacts import load_tensors, read_json
from tslrec.core.errors import InputError
from tslrec.core.settings import setting
from tslrec.data import SequenceDataset
from tslrec.formats.item_table import TENSORS, ItemEmbeddingFile, load_item_embeddings

from .run_folders import STAGE1_CONFIG, STAGE1_GROUPS, is_train_folder, train_folder_table

TUNED = "tuned"  # the label of an item-table source given as a bare path: the stage-2 export of the tuned LLM
CONTROL = "stage0"  # the label the reports compare every other source against: the stage-0 model's own table
LABEL = re.compile(r"[a-z0-9-]+")


@dataclass
class SideInfoConfig:
    """Files a fusion reads besides item IDs."""

    item_embeddings: list[str] | None = setting(
        None,
        (
            f"item table of {', '.join(llm_table_fusions())}: a `tslrec stage2` export or a `tslrec train "
            "--export-item-embeddings` folder; `tslrec ablate` takes several, label=PATH,... (a bare PATH is "
            f"labelled {TUNED})"
        ),
    )
    clusters: str | None = setting(
        None,
        (
            "k-means group of each item for ci: a `tslrec stage1` folder, its groups.safetensors, or an export "
            "folder (default: the item_groups inside --item-embeddings)"
        ),
        aliases=("--stage1-dir",),
    )
    finetune_llm_table: bool = setting(
        False, "train the LLM item table too (default: frozen; its projection is always trained)"
    )

    def __post_init__(self) -> None:
        if isinstance(self.item_embeddings, str):  # from Python: one comma list, as on the command line
            self.item_embeddings = [p.strip() for p in self.item_embeddings.split(",") if p.strip()]
        item_table_sources(self.item_embeddings)  # labels checked before any work


def parse_source(entry: str) -> tuple[str | None, str]:
    """(label, path) of one --item-embeddings entry: `label=PATH`, or a bare PATH (label None)."""
    label, sep, path = entry.partition("=")
    if not sep or "/" in label or "\\" in label:
        return None, entry
    if not LABEL.fullmatch(label) or not path:
        raise InputError(
            f"SideInfoConfig.item_embeddings: {entry!r} is not label=PATH with a label of a-z, 0-9 and '-' "
            f"(e.g. {TUNED}=runs/ml-100k/stage2); fix the label or give a bare path"
        )
    return label, path


def item_table_sources(entries: list[str] | None) -> dict[str, str]:
    """{label: path} of the --item-embeddings entries, in their order; a bare path is labelled `tuned`."""
    sources: dict[str, str] = {}
    for entry in entries or []:
        label, path = parse_source(entry)
        label = label or TUNED
        if label in sources:
            raise InputError(
                f"SideInfoConfig.item_embeddings: source '{label}' is given twice (a bare path is labelled {TUNED}); "
                "give each item table its own label"
            )
        sources[label] = path
    return sources


def one_item_table(entries: list[str] | None) -> tuple[str | None, str | None]:
    """(label or None, path or None) of the single --item-embeddings of `tslrec train`."""
    if not entries:
        return None, None
    if len(entries) > 1:
        raise InputError(
            f"SideInfoConfig.item_embeddings: one run reads one item table, got {len(entries)} "
            f"({', '.join(entries)}); give one, or use `tslrec ablate` for several"
        )
    return parse_source(entries[0])


def reads_item_table(fusion: type[Fusion], clusters_given: bool) -> bool:
    """Whether `fusion` reads an item table: one built on the table, or one on the k-means groups (ci) when no
    clusters are given, which takes the groups stored with the table's export."""
    return fusion.reads_llm_table or (fusion.reads_clusters and not clusters_given)


def groups_source(sources: dict[str, str]) -> str | None:
    """The item table `ci` takes its k-means groups from when no clusters are given: `tuned`, else the first."""
    return sources.get(TUNED, next(iter(sources.values()), None))


@dataclass
class SideInformation:
    """Everything the item-embedding seam needs for one fusion."""

    fusion: FusionConfig  # which fusion, frozen or fine-tuned table
    llm_table: torch.Tensor | None = None  # [N+1, D] exported LLM embeddings
    clusters: torch.Tensor | None = None  # [N+1] k-means group per item
    sources: dict = field(default_factory=dict)  # where they came from, for metrics.json
    label: str | None = None  # the item table's label (`gate:stage0`), when it was given one

    @property
    def variant(self) -> str:
        """Name in results: the fusion, ':label' of a labelled item table, '+finetune' when the table is trained."""
        label = f":{self.label}" if self.label and self.fusion.kind in llm_table_fusions() else ""
        return self.fusion.kind + label + ("+finetune" if self.fusion.finetune_llm_table else "")

    def record(self) -> dict:
        return {"fusion": asdict(self.fusion), **self.sources}


def load_side_information(
    fusion: str,
    ds: SequenceDataset,
    item_embeddings: str | None = None,
    clusters: str | None = None,
    finetune_llm_table: bool = False,
    label: str | None = None,
) -> SideInformation:
    """Read and validate only what `fusion` needs; a missing or mismatched file is a one-line InputError.

    item_embeddings: one item table, an export or a `tslrec train` folder; label: its name in the variant."""
    fusion_type = fusion_class(fusion)
    if finetune_llm_table and not fusion_type.reads_llm_table:
        raise InputError(
            f"SideInfoConfig.finetune_llm_table: fusion '{fusion}' has no LLM table; use it with "
            f"{', '.join(llm_table_fusions())}"
        )
    side = SideInformation(FusionConfig(kind=fusion, finetune_llm_table=finetune_llm_table), label=label)
    export: ItemEmbeddingFile | None = None
    if reads_item_table(fusion_type, clusters is not None) and (
        fusion_type.reads_llm_table or item_embeddings is not None
    ):
        if item_embeddings is None:
            raise InputError(
                f"fusion {fusion} needs SideInfoConfig.item_embeddings (the output folder of `tslrec stage2`)"
            )
        if is_train_folder(item_embeddings):
            table, record = train_folder_table(item_embeddings, ds)
            export = ItemEmbeddingFile(table, None, ds.item_ids, {"source": record}, Path(item_embeddings))
        else:
            export = load_item_embeddings(
                item_embeddings, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids
            )
        side.sources["item_embeddings"] = {
            "folder": str(Path(export.folder).resolve()),
            "embedding_dim": int(export.embeddings.shape[1]),
            "source": export.manifest.get("source", {}),
            **({"label": label} if label else {}),
        }
    if fusion_type.reads_llm_table:
        side.llm_table = export.embeddings
    if fusion_type.reads_clusters:
        if clusters is not None:
            side.clusters = load_clusters(clusters, ds)
            side.sources["clusters"] = str(Path(clusters).resolve())
        elif export is not None and export.item_groups is not None:
            side.clusters = export.item_groups
            side.sources["clusters"] = f"{export.folder} (item_groups)"
        else:
            where = f"{item_embeddings} has no item_groups; " if item_embeddings else ""
            raise InputError(
                f"fusion {fusion}: {where}set SideInfoConfig.clusters (a `tslrec stage1` folder or its {STAGE1_GROUPS})"
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
