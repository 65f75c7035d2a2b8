"""The ablation grid: backbone x fusion x seed cells, each one `tslrec train` run in its own folder.

    <out>/ablation.json                 the settings every cell shares (a re-run must match them)
    <out>/cells/<backbone>-<fusion>-s<seed>/metrics.json, per_user_test.safetensors, model.safetensors

A cell whose metrics.json exists is finished and skipped; a killed cell resumes from its
checkpoint.pt (the trainer's own resume), so re-running the same command continues the grid.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tslrec.backbones.artifacts import load_tensors, read_json, write_json
from tslrec.backbones.errors import InputError

from . import train_job
from .side_information import LLM_FUSIONS

SETTINGS_FILE = "ablation.json"
# Options that may change between runs of the same grid without invalidating finished cells.
GRID_OPTIONS = {"backbones", "fusions", "seeds", "seed", "out", "device", "no_progress", "func", "command",
                "activity_groups"}


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    backbone: str  # sasrec, gru4rec, caser, fmlprec
    fusion: str  # base, ci, gate, ...
    seed: int  # training seed

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.fusion}-s{self.seed}"


@dataclass
class CellResult:
    """A finished cell as read back from its folder."""

    cell: Cell  # which run
    record: dict  # its metrics.json
    per_user: dict[str, torch.Tensor]  # per-user test metrics, [U] each, users in dataset order


def make_grid(backbones: list[str], fusions: list[str], seeds: list[int]) -> list[Cell]:
    """Every combination: backbone, then seed, then fusion, so each finished seed is a complete comparison."""
    return [Cell(b, f, s) for b in backbones for s in seeds for f in fusions]


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.name


def is_finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "per_user_test.safetensors").is_file()


def shared_settings(args: argparse.Namespace) -> dict:
    """The options that shape every cell's result (recorded, and compared on a re-run)."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in GRID_OPTIONS}


def check_settings(out: Path, settings: dict) -> None:
    """Record the shared settings, or refuse to mix cells trained with other ones into this folder."""
    path = out / SETTINGS_FILE
    if path.is_file():
        before = read_json(path, "ablation settings")
        changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
        if changed:
            k = changed[0]
            raise InputError(f"{path}: this grid was run with {k}={before.get(k)!r}, now {settings.get(k)!r}; "
                             "use another --out, or repeat the original options to resume")
    else:
        write_json(path, settings)


def cell_args(args: argparse.Namespace, cell: Cell, folder: Path) -> argparse.Namespace:
    """The `tslrec train` arguments of one cell: the grid's shared options plus the cell's own."""
    return argparse.Namespace(**{**vars(args), "backbone": cell.backbone, "fusion": cell.fusion, "seed": cell.seed,
                                 "out": str(folder), "export_item_embeddings": False,
                                 "finetune_llm_table": args.finetune_llm_table and cell.fusion in LLM_FUSIONS})


def run_grid(args: argparse.Namespace, cells: list[Cell], out: Path) -> None:
    """Train every unfinished cell, printing one line per cell."""
    for i, cell in enumerate(cells, 1):
        folder = cell_dir(out, cell)
        head = f"[{i}/{len(cells)}] {cell.name}"
        if is_finished(folder):
            print(f"{head}: finished earlier, skipped", flush=True)
            continue
        print(f"{head}: training", flush=True)
        start = time.perf_counter()
        train_job.run(cell_args(args, cell, folder))
        print(f"{head}: done in {time.perf_counter() - start:.0f} s", flush=True)


def collect(out: Path, cells: list[Cell]) -> list[CellResult]:
    """Read back every finished cell of `cells`."""
    results = []
    for cell in cells:
        folder = cell_dir(out, cell)
        if is_finished(folder):
            record = read_json(folder / "metrics.json", "cell metrics")
            per_user = load_tensors(folder / "per_user_test.safetensors", "per-user test metrics")
            results.append(CellResult(cell, record, per_user))
    return results
