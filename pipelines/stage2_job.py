"""`tslrec stage2`: feed every item alone into the tuned stage-1 LLM and export the results (paper §4.2).

Reads the `tslrec stage1` folder (adapter, projection and head, group map, config) and, through
the `tslrec train` folder it recorded, the dataset and the item table stage 1 was trained on.
Writes an export folder (format: formats/item_table.py) that
`tslrec train --fusion gate --item-embeddings DIR` and `tslrec ablate` read.

A stage 1 run with `--item-text` (its config.json's stage1.item_text) shows every item's title tokens
before its soft token; stage 2 then feeds each item with its title too, from the same dataset
(checked against the texts' sha256 stage 1 recorded), through the same prompt code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from tslrec.core.artifacts import use_deterministic_kernels
from tslrec.core.errors import InputError
from tslrec.core.precision import precision_record, resolved
from tslrec.core.settings import check_allowed, setting
from tslrec.data import SequenceDataset
from tslrec.formats.item_table import save_item_embeddings
from tslrec.llm.loading import Dtype, LLMConfig
from tslrec.stage1_reconstruct.model_io import ADAPTER_DIR, load_reconstruction_model
from tslrec.stage2_augment.analysis import category_agreement
from tslrec.stage2_augment.extraction import ExtractionConfig, ItemRepresentations, extract_item_representations

from .options import Command, Runtime
from .run_folders import Stage1Folder, TrainFolder, check_stage1_matches, load_train_folder, read_stage1_folder


@dataclass
class Stage2Job:
    """Everything `tslrec stage2` needs."""

    stage1_dir: str = setting("", "output folder of `tslrec stage1`", required=True)
    out: str = setting("", "export folder to write (replaced atomically if it exists)", required=True)
    train_dir: str | None = setting(
        None, "the `tslrec train` folder stage 1 started from (default: the one stage 1 recorded)"
    )
    dataset: str | None = setting(None, "dataset name or path (default: the one the train folder recorded)")
    dtype: Dtype | None = setting(None, "LLM weight dtype (default: as stage 1 loaded it)")
    extraction: ExtractionConfig = field(default_factory=ExtractionConfig)
    runtime: Runtime = field(default_factory=Runtime)

    def __post_init__(self) -> None:
        check_allowed(self)


@dataclass
class Stage2Outcome:
    """A written export and what it cost."""

    out: Path
    dataset: str
    reps: ItemRepresentations
    agreement: dict  # C1 / C2 / C3 against the k-means groups
    seconds: float


def llm_config(stage1: Stage1Folder, dtype: str | None) -> LLMConfig | None:
    """The LLM as stage 1 loaded it, with another weight dtype if asked (None = unchanged)."""
    if dtype is None:
        return None
    try:
        return LLMConfig(**{**stage1.config["llm"], "dtype": dtype})
    except (KeyError, TypeError) as e:
        raise InputError(
            f"{stage1.folder / 'config.json'}: field 'llm' is missing or invalid ({e}); re-run `tslrec stage1`"
        ) from None


def export_source(
    stage1: Stage1Folder, train: TrainFolder, reps: ItemRepresentations, cfg: ExtractionConfig, device: str, dtype: str
) -> dict:
    """What manifest.json records about the model that produced the export."""
    s1 = stage1.config.get("stage1", {})
    adapter = stage1.folder / ADAPTER_DIR
    agreement = category_agreement(reps.category_probs, stage1.item_groups)
    source = {
        "producer": "tslrec stage2",
        "llm": stage1.config.get("llm", {}).get("name_or_path"),
        "llm_dtype": dtype,
        "adapter": str(adapter) if adapter.is_dir() else None,
        "stage1_dir": str(stage1.folder),
        "train_dir": str(train.folder),
        "backbone": train.metrics.get("model"),
        "pooling": s1.get("pooling"),
        "k": stage1.config.get("k"),
        "prompt": stage1.config.get("prompt"),
        "extraction": {
            "items": reps.num_items,
            "seconds": round(reps.seconds, 3),
            "seconds_per_1000_items": round(reps.seconds_per_1000_items, 3),
            "batch_size": cfg.batch_size,
            **precision_record(torch.device(device), cfg.precision),
            "prefix_cache": cfg.prefix_cache,
            "device": device,
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": round(os.getloadavg()[0], 2),
        },  # timings on a shared CPU depend on it
        "category_agreement": agreement.as_dict(),
    }
    if s1.get("item_text"):  # beyond the paper: the prompt showed titles (a no-text manifest is as before)
        source["item_text"] = _item_text_note(s1, cfg)
    return source


def stage1_item_titles(stage1: Stage1Folder, ds: SequenceDataset) -> list[str] | None:
    """The item titles stage 1 showed in its prompts (its config's stage1.item_text), None if it showed none."""
    if not stage1.config.get("stage1", {}).get("item_text"):
        return None
    titles = ds.item_titles()
    if titles is None:
        raise InputError(
            f"{stage1.folder / 'config.json'}: stage 1 was trained with --item-text, but dataset '{ds.name}' has "
            "no item text; pass the dataset stage 1 was trained on (--dataset)"
        )
    return titles


def _item_text_note(s1: dict, cfg: ExtractionConfig) -> dict:
    """What the manifest says about item text in the prompt."""
    return {
        "title_tokens_cap": s1.get("item_text_tokens"),
        "prompt": "each item: its title tokens, then its soft token (as in stage 1)",
        "prefix_cache": (
            "kept: items are batched by title length, so no row is padded after the cached prefix"
            if cfg.prefix_cache
            else "off (--no-prefix-cache)"
        ),
    }


def run_stage2(job: Stage2Job) -> Stage2Outcome:
    """Embed every item with the tuned stage-1 LLM and write the export folder."""
    start = time.perf_counter()
    stage1 = read_stage1_folder(job.stage1_dir, job.train_dir)
    train = load_train_folder(stage1.train_dir, job.dataset)
    ds = train.dataset
    check_stage1_matches(stage1, ds)
    if int(stage1.config.get("item_dim", train.item_table.shape[1])) != train.item_table.shape[1]:
        raise InputError(
            f"{train.folder / 'item_embeddings.safetensors'}: {train.item_table.shape[1]} columns but stage 1 "
            f"was trained on {stage1.config['item_dim']}; pass the train folder stage 1 started from"
        )
    device = job.runtime.start()
    use_deterministic_kernels(device)
    titles = stage1_item_titles(stage1, ds)
    model, _ = load_reconstruction_model(stage1.folder, device, llm_config(stage1, job.dtype), titles)
    cfg = resolved(replace(job.extraction, progress=job.runtime.progress), device)
    reps = extract_item_representations(model, train.item_table, cfg)
    dtype = job.dtype or stage1.config.get("llm", {}).get("dtype", "float32")
    source = export_source(stage1, train, reps, cfg, str(device), dtype)
    out = save_item_embeddings(
        job.out,
        reps.embeddings,
        ds.item_ids,
        ds.name,
        ds.hash,
        reps.category_probs,
        source,
        item_groups=stage1.item_groups,
    )
    return Stage2Outcome(out, ds.name, reps, source["category_agreement"], time.perf_counter() - start)


def print_outcome(o: Stage2Outcome) -> None:
    reps, a = o.reps, o.agreement
    print(
        f"stage 2 on {o.dataset}: {reps.num_items} items -> [{reps.num_items + 1}, {reps.embeddings.shape[1]}] in "
        f"{reps.seconds:.1f} s ({reps.seconds_per_1000_items:.1f} s per 1,000 items); LLM category vs k-means group: "
        f"C1 {a['C1']:.3f}, C2 {a['C2']:.3f}, C3 {a['C3']:.3f} (chance top-1 {a['chance_top1']:.3f})"
    )
    print(f"wrote {o.out} in {o.seconds:.1f} s")


COMMAND = Command(
    "stage2",
    "TSLRec stage 2: embed every item with the tuned stage-1 LLM and export the table",
    Stage2Job(),
    run_stage2,
    print_outcome,
)
