"""The ablation grid: backbone x fusion x seed cells, each one `tslrec train` run in its own folder.

    <out>/ablation.json                 the settings every cell shares (a re-run must match them)
    <out>/cells/<backbone>-<fusion>-s<seed>/metrics.json, per_user_test.safetensors, model.safetensors

A cell whose metrics.json exists is finished and skipped; a killed cell resumes from its
checkpoint.pt (the trainer's own resume), so re-running the same command continues the grid.
A cell being trained holds <cell>/train.lock (the owner's host and pid), so several `tslrec ablate`
processes on one grid folder share the cells out instead of training one twice.
"""
from __future__ import annotations

import argparse
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from tslrec.backbones.artifacts import load_tensors, read_json, write_json
from tslrec.backbones.errors import InputError

from . import train_job
from .side_information import LLM_FUSIONS

SETTINGS_FILE = "ablation.json"
# Options that may differ between runs of one grid folder. The side-information paths are among them so
# that ID-only cells can train before stage 2 exists; every cell records its own side information.
GRID_OPTIONS = {"backbones", "fusions", "seeds", "seed", "out", "device", "no_progress", "func", "command",
                "activity_groups", "item_embeddings", "clusters"}


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


LOCK_FILE = "train.lock"


def _owner_alive(lock: Path) -> bool:
    """Whether the process named in `lock` still runs (a lock from another host counts as alive)."""
    try:
        host, pid = lock.read_text().split()
        if host != socket.gethostname():
            return True
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (OSError, ValueError):  # unreadable or half-written lock, or a pid we may not signal: leave it be
        return True
    return True


def try_lock(folder: Path) -> bool:
    """Claim a cell for this process; False if another live process holds it. A dead owner's lock is taken over."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_FILE
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _owner_alive(lock):
                return False
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}")
        return True
    return False


def run_grid(args: argparse.Namespace, cells: list[Cell], out: Path) -> None:
    """Train every unfinished cell not held by another process, printing one line per cell."""
    for i, cell in enumerate(cells, 1):
        folder = cell_dir(out, cell)
        head = f"[{i}/{len(cells)}] {cell.name}"
        if is_finished(folder):
            print(f"{head}: finished earlier, skipped", flush=True)
            continue
        if not try_lock(folder):
            print(f"{head}: being trained by another process ({folder / LOCK_FILE}), skipped", flush=True)
            continue
        try:
            if is_finished(folder):  # finished by another process between the two checks
                continue
            print(f"{head}: training", flush=True)
            start = time.perf_counter()
            train_job.run(cell_args(args, cell, folder))
            print(f"{head}: done in {time.perf_counter() - start:.0f} s", flush=True)
        finally:
            (folder / LOCK_FILE).unlink(missing_ok=True)


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
