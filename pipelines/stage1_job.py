"""`tslrec stage1`: information reconstruction (user-level SFT) on top of a `tslrec train` run.

Reads the backbone's exported item table and the dataset it was trained on, groups items
by k-means, fine-tunes the LLM (LoRA) to reconstruct each user's group distribution, and
writes the adapter, projection/head weights, groups, metrics and log to --out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from tslrec.core.artifacts import read_json, use_deterministic_kernels
from tslrec.core.errors import InputError
from tslrec.core.settings import setting
from tslrec.data import SequenceDataset
from tslrec.llm.loading import LLMConfig
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.training import LOG_FILE, train_stage1

from .history import write_history
from .options import Command, TrainingRuntime, force_field, training_runtime
from .run_folders import TrainFolder, load_train_folder


@dataclass
class Stage1Job:
    """Everything `tslrec stage1` needs."""

    train_dir: str = setting("", "output folder of `tslrec train ... --export-item-embeddings`", required=True)
    out: str | None = setting(None, "output folder (default runs/<dataset>-stage1-k<K>-s<seed>)")
    dataset: str | None = setting(None, "dataset name or path (default: the one recorded in --train-dir)")
    force: bool = force_field("the checkpoint, results and cached baseline an earlier run left in --out")
    stage1: Stage1Config = field(default_factory=Stage1Config)
    llm: LLMConfig = field(default_factory=LLMConfig)
    runtime: TrainingRuntime = field(default_factory=TrainingRuntime)

    def __post_init__(self) -> None:
        self.runtime = training_runtime(self.runtime)


@dataclass
class Stage1Outcome:
    """A finished stage 1: its metrics.json content, the dataset it ran on and where it was written."""

    metrics: dict
    dataset: str
    out: Path
    main_process: bool  # False in the other processes of a multi-process run (they print nothing)


def load_train_run(train_dir: Path, dataset: str | None) -> tuple[torch.Tensor, list, dict]:
    """(item table [N+1, D], training sequences, run facts) from a `tslrec train` folder; mismatches -> InputError."""
    return train_run_inputs(load_train_folder(train_dir, dataset))


def train_run_inputs(run: TrainFolder) -> tuple[torch.Tensor, list, dict]:
    """(item table [N+1, D], training sequences, run facts) of a loaded `tslrec train` folder."""
    ds = run.dataset
    facts = {
        "dataset": ds.name,
        "dataset_hash": ds.hash,
        "train_dir": str(run.folder),
        "backbone": run.metrics.get("model"),
        "users": ds.num_users,
        "items": ds.num_items,
    }
    return run.item_table, ds.train_sequences(), facts


def item_titles_for_prompt(ds: SequenceDataset, wanted: bool) -> list[str] | None:
    """The titles `--item-text` shows (None when not asked for); a dataset without item text -> InputError."""
    if not wanted:
        return None
    titles = ds.item_titles()
    if titles is None or not any(t.strip() for t in titles[1:]):
        raise InputError(
            f"--item-text: dataset '{ds.name}' has no item text (titles); drop --item-text, or put a .item file "
            "with an 'item_id:token' and a 'title:token_seq' column beside the .inter or .txt"
        )
    return titles


def run_stage1(job: Stage1Job) -> Stage1Outcome:
    """Train stage 1 on the item table of `job.train_dir`; returns its metrics (see stage1_reconstruct.training)."""
    device = job.runtime.start()
    use_deterministic_kernels(device)  # before the first CUDA call
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    run = load_train_folder(Path(job.train_dir), job.dataset)
    titles = item_titles_for_prompt(run.dataset, job.stage1.item_text)
    table, train_sequences, facts = train_run_inputs(run)
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
        item_texts=titles,
    )
    from accelerate import PartialState

    main = PartialState().is_main_process
    if main and (out / LOG_FILE).is_file():  # the steps' losses and the validations' MSE, for people
        log = read_json(out / LOG_FILE, "stage 1 log")
        write_history(
            out,
            [{("valid_mse" if k == "val_mse" else k): v for k, v in e.items()} for e in log],
            "step",
            job.runtime.log_with,
        )
    return Stage1Outcome(metrics, facts["dataset"], out, main)


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
        f"{metrics['steps']} steps{_all_users_text(metrics)}, {metrics['timing']['wall_seconds'] / 60:.1f} min"
        f"{_text_cost(metrics)}"
    )
    print(f"wrote {outcome.out}")


def _all_users_text(metrics: dict) -> str:
    """' then N on all U users (...)' for the summary line of a run with --all-users-epochs ('' otherwise)."""
    c = metrics.get("all_users")
    if not c:
        return ""
    return f" then {c['steps']} on all {c['users']} users (the saved weights; the MSEs are from before)"


def _text_cost(metrics: dict) -> str:
    """'; item text: ...' for the summary line of a run with --item-text ('' otherwise)."""
    c = metrics.get("prompt_tokens")
    if not c:
        return ""
    return (
        f"; item text: {c['per_user_mean']:.0f} prompt tokens per user (max {c['per_user_max']}) against "
        f"{c['per_user_mean_without_text']:.0f} (max {c['per_user_max_without_text']}) without, "
        f"{c['title_tokens_per_item_mean']:.1f} title tokens per item ({c['titles_cut']} of {c['items']} titles "
        f"cut at {c['title_tokens_cap']})"
    )


COMMAND = Command(
    "stage1",
    "TSLRec stage 1: fine-tune an LLM to reconstruct users' item-group distributions",
    Stage1Job(),
    run_stage1,
    print_outcome,
)
