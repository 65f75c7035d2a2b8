"""The ablation grid: backbone x fusion x seed cells, each one `tslrec train` run in its own folder.

    <out>/ablation.json                 the settings every cell shares (a re-run must match them), with a
                                        content hash of each fusion's side-information tensors
    <out>/cells/<backbone>-<fusion>-s<seed>/metrics.json, per_user_test.safetensors, model.safetensors

A cell whose metrics.json exists is finished and skipped; a killed cell resumes from its
checkpoint.pt (the trainer's own resume, which refuses a checkpoint written with other settings),
so re-running the same command continues the grid. Other settings, or side-information files
with other contents, are refused; `--force` starts the grid over (every cell's outputs discarded).
A cell being trained holds a lock on <cell>/train.lock, so several `tslrec ablate` processes on one
grid folder share the cells out instead of training one twice.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from tslrec.core.artifacts import load_tensors, read_json, write_json
from tslrec.core.errors import InputError
from tslrec.core.settings import settings_of

from . import train_job
from .side_information import LLM_FUSIONS

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

SETTINGS_FILE = "ablation.json"
# What every cell of a grid trains with: the dataset and these groups of the job's settings, less PER_CELL.
# The grid's own dimensions (backbones, fusions, seeds), its folder and how it runs may differ between runs.
SHARED_GROUPS = ("side", "data", "model", "train", "eval")
PER_CELL = {"seed"}  # train.seed: each cell's own seed (the job's is the first)
# Side-information files: a run may leave them out (ID-only cells can train before stage 2 exists) or
# add them to a grid that had none, but never swap one file for another.
SIDE_OPTIONS = {"item_embeddings", "clusters"}
# fusion -> content hashes of the tensors its cells read; recorded per fusion, like SIDE_OPTIONS: a fusion
# may be added to a grid, but the tensors of a fusion already in it may not change.
DIGESTS = "side_information_sha256"
CELL_OUTPUTS = ("metrics.json", "per_user_test.safetensors", "model.safetensors", "checkpoint.pt")


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


def shared_settings(job: Any) -> dict:
    """The settings that shape every cell's result (recorded, and compared on a re-run), keyed like the flags."""
    out = {"dataset": job.dataset}
    for s in settings_of(job):
        if s.path[0] in SHARED_GROUPS and s.key not in PER_CELL:
            value = job
            for name in s.path:
                value = getattr(value, name)
            out[s.key] = list(value) if isinstance(value, tuple) else value
    return dict(sorted(out.items()))


def check_settings(out: Path, settings: dict, defaults: dict, force: bool = False) -> None:
    """Record the shared settings, or refuse to mix cells trained with other ones into this folder.

    settings: shared_settings(job), optionally with DIGESTS ({fusion: hash}); defaults: shared_settings of the
    default job (a setting newer than the grid is fine at its default). force: record them as they are.
    """
    path = out / SETTINGS_FILE
    if force or not path.is_file():
        write_json(path, settings)
        return
    before = read_json(path, "ablation settings")
    old_digests = before.pop(DIGESTS, None) or {}
    new_digests = settings.get(DIGESTS) or {}
    settings = {k: v for k, v in settings.items() if k != DIGESTS}

    def differs(k: str) -> bool:
        old, new = before.get(k), settings.get(k)
        if k in SIDE_OPTIONS:
            return old is not None and new is not None and old != new
        if k not in before:  # a setting newer than this grid: fine while it is at its default
            return new != defaults.get(k)
        if k not in settings:  # a setting this version no longer has
            return False
        return old != new

    changed = sorted(k for k in set(before) | set(settings) if differs(k))
    if changed:
        k = changed[0]
        raise InputError(
            f"{path}: this grid was run with {k}={before.get(k)!r}, now {settings.get(k)!r}; "
            "repeat the original options to resume, pass --force to start the grid over, "
            "or use another --out"
        )
    swapped = sorted(f for f in set(old_digests) & set(new_digests) if old_digests[f] != new_digests[f])
    if swapped:
        f = swapped[0]
        raise InputError(
            f"{path}: the {f} cells of this grid were trained on side-information files with other "
            f"contents (sha256 {old_digests[f][:12]}, now {new_digests[f][:12]}); pass --force to start "
            "the grid over, or use another --out"
        )
    added = {k: settings[k] for k in SIDE_OPTIONS if before.get(k) is None and settings.get(k) is not None}
    digests = {**old_digests, **new_digests}
    if added or digests != old_digests:
        write_json(path, {**before, **added, **({DIGESTS: digests} if digests else {})})


def discard_cells(out: Path) -> None:
    """--force: delete the outputs and checkpoint of every cell in the grid folder (not only this run's cells),
    so no cell of an earlier run survives into this one."""
    for folder in sorted(p for p in (out / "cells").glob("*") if p.is_dir()):
        with cell_lock(folder) as mine:
            if not mine:
                raise InputError(
                    f"{folder / LOCK_FILE}: cell {folder.name} is being trained by another process; "
                    "stop it, then run again with --force"
                )
            for name in CELL_OUTPUTS:
                (folder / name).unlink(missing_ok=True)


def cell_job(job: Any, cell: Cell, folder: Path) -> train_job.TrainJob:
    """The `tslrec train` job of one cell: the grid's shared settings plus the cell's own."""
    side = replace(job.side, finetune_llm_table=job.side.finetune_llm_table and cell.fusion in LLM_FUSIONS)
    return train_job.TrainJob(
        dataset=job.dataset,
        backbone=cell.backbone,
        fusion=cell.fusion,
        out=str(folder),
        side=side,
        data=job.data,
        model=job.model,
        train=replace(job.train, seed=cell.seed),
        eval=job.eval,
        runtime=job.runtime,
    )


LOCK_FILE = "train.lock"


@contextmanager
def cell_lock(folder: Path) -> Iterator[bool]:
    """Hold an exclusive lock on `folder`/train.lock while training the cell; yields False if another process holds it.

    The lock is `flock` on an open file: the kernel drops it when its process ends, killed or not, so a
    stale lock cannot block a cell. The file stays (it only names the last owner). Without fcntl
    (Windows) every cell is yours: run one worker per grid folder there.
    """
    folder.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield True
        return
    fd = os.open(folder / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)  # releases the lock


def run_grid(job: Any, cells: list[Cell], out: Path) -> int:
    """Train every unfinished cell not held by another process, one line per cell; returns the cells left to others."""
    elsewhere = 0
    for i, cell in enumerate(cells, 1):
        folder = cell_dir(out, cell)
        head = f"[{i}/{len(cells)}] {cell.name}"
        if is_finished(folder):
            print(f"{head}: finished earlier, skipped", flush=True)
            continue
        with cell_lock(folder) as mine:
            if not mine:
                print(f"{head}: being trained by another process ({folder / LOCK_FILE}), skipped", flush=True)
                elsewhere += 1
                continue
            if is_finished(folder):
                print(f"{head}: finished by another process meanwhile, skipped", flush=True)
                continue
            print(f"{head}: training", flush=True)
            start = time.perf_counter()
            train_job.print_outcome(train_job.train_backbone(cell_job(job, cell, folder)))
            print(f"{head}: done in {time.perf_counter() - start:.0f} s", flush=True)
    return elsewhere


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
