"""`tslrec stage1`: information reconstruction (user-level SFT) on top of a `tslrec train` run.

Reads the backbone's exported item table and the dataset it was trained on, groups items
by k-means, fine-tunes the LLM (LoRA) to reconstruct each user's group distribution, and
writes the adapter, projection/head weights, groups, metrics and log to --out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tslrec.core.artifacts import resolve_device, use_deterministic_kernels
from tslrec.llm.loading import LLMConfig
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.training import train_stage1

from .options import Command, Runtime
from .run_folders import load_train_folder


@dataclass
class Stage1Job:
    """Everything `tslrec stage1` needs."""

    train_dir: str = field(
        default="",
        metadata={"required": True, "help": ("output folder of `tslrec train ... --export-item-embeddings`")},
    )
    out: str | None = field(
        default=None, metadata={"help": "output folder (default runs/<dataset>-stage1-k<K>-s<seed>)"}
    )
    dataset: str | None = field(
        default=None,
        metadata={
            "help": ("dataset name or path (default: the one recorded in --train-dir; needed for your own files)")
        },
    )
    force: bool = field(
        default=False,
        metadata={
            "help": (
                "start over: discard the checkpoint, results and cached baseline an earlier run left in --out "
                "(a run with other settings is refused without it)"
            )
        },
    )
    stage1: Stage1Config = field(default_factory=Stage1Config)
    llm: LLMConfig = field(default_factory=LLMConfig)
    runtime: Runtime = field(default_factory=Runtime)


@dataclass
class Stage1Outcome:
    """A finished stage 1: its metrics.json content, the dataset it ran on and where it was written."""

    metrics: dict
    dataset: str
    out: Path
    main_process: bool  # False in the other processes of a multi-process run (they print nothing)


def load_train_run(train_dir: Path, dataset: str | None) -> tuple[torch.Tensor, list, dict]:
    """(item table [N+1, D], training sequences, run facts) from a `tslrec train` folder; mismatches -> InputError."""
    run = load_train_folder(train_dir, dataset)
    ds = run.dataset
    facts = {
        "dataset": ds.name,
        "dataset_hash": ds.hash,
        "train_dir": str(train_dir),
        "backbone": run.metrics.get("model"),
        "users": ds.num_users,
        "items": ds.num_items,
    }
    return run.item_table, ds.train_sequences(), facts


def run_stage1(job: Stage1Job) -> Stage1Outcome:
    """Train stage 1 on the item table of `job.train_dir`; returns its metrics (see stage1_reconstruct.training)."""
    device = resolve_device(job.runtime.device)
    use_deterministic_kernels(device)  # before the first CUDA call
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    table, train_sequences, facts = load_train_run(Path(job.train_dir), job.dataset)
    out = Path(job.out or f"runs/{facts['dataset']}-stage1-k{job.stage1.k}-s{job.stage1.seed}")
    metrics = train_stage1(
        table.numpy(),
        train_sequences,
        out,
        job.stage1,
        job.llm,
        device=device.type,
        run_info=facts,
        progress=job.runtime.progress,
        force=job.force,
    )
    from accelerate import PartialState

    return Stage1Outcome(metrics, facts["dataset"], out, PartialState().is_main_process)


def print_outcome(outcome: Stage1Outcome) -> None:
    if not outcome.main_process:
        return
    metrics = outcome.metrics
    m = metrics["metrics"]
    untuned = f"; untuned LLM {m['mse_untuned_llm']:.6f}" if m.get("mse_untuned_llm") is not None else ""
    ratio = m["mse"] / m["mse_mean_embedding"]
    print(
        f"stage 1 on {outcome.dataset}: held-out-user MSE {m['mse']:.6f}; without an LLM: head on the mean item "
        f"embedding {m['mse_mean_embedding']:.6f} (LLM / head {ratio:.3f}: the LLM does "
        f"{'better' if ratio < 1 else 'no better'}), global mean {m['mse_global_mean']:.6f}{untuned}; "
        f"{metrics['steps']} steps, {metrics['timing']['wall_seconds'] / 60:.1f} min"
    )
    print(f"wrote {outcome.out}")


COMMAND = Command(
    "stage1",
    "TSLRec stage 1: fine-tune an LLM to reconstruct users' item-group distributions",
    Stage1Job(),
    run_stage1,
    print_outcome,
)
