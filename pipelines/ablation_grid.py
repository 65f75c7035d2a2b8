"""The ablation grid: backbone x fusion x item-table source x seed cells, each one `tslrec train` run in its own folder.

    <out>/ablation.json                 the settings every cell shares (a re-run must match them): the item-table
                                        sources {label: path}, with a content hash of the tensors each
                                        fusion:source (or ID fusion) reads
    <out>/cells/<backbone>-<fusion>-<source>-s<seed>/   a fusion that reads an item table (gate-stage0, gate-tuned)
    <out>/cells/<backbone>-<fusion>-s<seed>/            base and ci, which read none
        metrics.json, per_user_test.safetensors, model.safetensors

A cell whose metrics.json exists is finished and skipped; a killed cell resumes from its
checkpoint.pt (the trainer's own resume, which refuses a checkpoint written with other settings),
so re-running the same command continues the grid. Other settings, or a source whose files have
other contents, are refused; a source may be added to a grid. `--force` starts the grid over (every
cell's outputs discarded). A process reads and rewrites ablation.json holding <out>/ablation.lock, one at a
time; a cell being trained holds a lock on <cell>/train.lock, so several
`tslrec ablate` processes on one grid folder share the cells out instead of training one twice;
`--workers N` starts them itself (N processes, each with 1/N of torch's threads).

A grid made before sources recorded its one item table as a path: that source is `tuned`, and its cells
keep the names they had (`<backbone>-gate-s<seed>`, variant `gate`), recorded as the grid's unlabelled
source, so an older grid resumes, reports as before, and takes further sources.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import threading
import time
from contextlib import AbstractContextManager, ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tslrec.backbones.item_embedding import fusion_class, llm_table_fusions
from tslrec.core.artifacts import file_lock, load_tensors, lock_holder_alive, read_json, write_json
from tslrec.core.errors import InputError
from tslrec.core.run_settings import RunSettings
from tslrec.core.settings import as_recorded_before, settings_of
from tslrec.data import SequenceDataset

from . import train_job

if TYPE_CHECKING:
    from .ablate_job import AblateJob
from .side_information import TUNED, SideInfoConfig, groups_source, item_table_sources, reads_item_table

SETTINGS_FILE = "ablation.json"
SETTINGS_LOCK = "ablation.lock"  # held while a process reads and rewrites SETTINGS_FILE (or discards the cells)
# What every cell of a grid trains with: the dataset and these groups of the job's settings, less PER_CELL.
# The grid's own dimensions (backbones, fusions, seeds), its folder and how it runs may differ between runs.
SHARED_GROUPS = ("side", "data", "model", "train", "eval")
PER_CELL = {"seed"}  # train.seed: each cell's own seed (the job's is the first)
# Side-information files: a run may leave them out (ID-only cells can train before stage 2 exists) or
# add them to a grid that had none, but never swap one file for another.
SIDE_OPTIONS = {"clusters"}
# The item-table sources, {label: path}, checked the same way per label: a source may be added, not swapped.
ITEM_TABLES = "item_embeddings"
# fusion:source (or the ID fusion) -> content hash of the tensors its cells read; recorded like the sources: a
# source may be added to a grid, but the tensors of one already in it may not change.
DIGESTS = "side_information_sha256"
# The label whose cells keep the names of a grid made before sources (see the module docstring).
UNLABELLED = "unlabelled_source"
CELL_OUTPUTS = ("metrics.json", "per_user_test.safetensors", "model.safetensors", "checkpoint.pt")


@dataclass(frozen=True)
class Cell:
    """One training run of the grid."""

    backbone: str  # sasrec, gru4rec, caser, fmlprec
    fusion: str  # base, ci, gate, ...
    seed: int  # training seed
    source: str | None = None  # label of the item table a table-reading fusion reads (None for base, ci)
    unlabelled: bool = False  # the one source of a grid made before sources: named without its label, as then

    @property
    def variant(self) -> str:
        """How results name it: base, ci, gate:tuned, gate:stage0 (gate for an older grid's unlabelled source)."""
        return self.fusion if self.source is None or self.unlabelled else f"{self.fusion}:{self.source}"

    @property
    def name(self) -> str:
        return f"{self.backbone}-{self.variant.replace(':', '-')}-s{self.seed}"


@dataclass
class CellResult:
    """A finished cell as read back from its folder."""

    cell: Cell  # which run
    record: dict  # its metrics.json
    per_user: dict[str, torch.Tensor]  # per-user test metrics, [U] each, users in dataset order


def parse_fusion(spec: str) -> tuple[str, str | None]:
    """(fusion, source label or None) of one --fusions entry: `gate`, `gate:stage0`."""
    fusion, _, source = spec.partition(":")
    return fusion, source or None


def grid_variants(fusions: list[str], labels: list[str]) -> list[tuple[str, str | None]]:
    """(fusion, source) of every variant: a table-reading fusion without `:source` once per source, base and ci
    once (source None); a source named on base or ci, an unknown one or none at all is a one-line InputError."""
    out: list[tuple[str, str | None]] = []
    for spec in fusions:
        fusion, source = parse_fusion(spec)
        if fusion not in llm_table_fusions():
            if source is not None:
                raise InputError(f"AblateJob.fusions: {fusion} reads no item table; write {fusion}, not {spec}")
            out.append((fusion, None))
        elif not labels:
            raise InputError(
                f"AblateJob.fusions: {spec} reads an item table; set SideInfoConfig.item_embeddings "
                f"(label=PATH,...: a `tslrec stage2` export or a `tslrec train` folder)"
            )
        elif source is not None and source not in labels:
            raise InputError(
                f"AblateJob.fusions: {spec} names source '{source}', but SideInfoConfig.item_embeddings has "
                f"{', '.join(labels)}; name one of them, or add {source}=PATH there"
            )
        else:
            out += [(fusion, s) for s in ([source] if source else labels)]
    return list(dict.fromkeys(out))


def make_grid(
    backbones: list[str], variants: list[tuple[str, str | None]], seeds: list[int], unlabelled: str | None = None
) -> list[Cell]:
    """Every combination: backbone, then seed, then variant (fusion, source), so each finished seed is a complete
    comparison. unlabelled: the source whose cells keep the names of a grid made before sources."""
    return [
        Cell(b, f, s, src, src is not None and src == unlabelled)
        for b in backbones
        for s in seeds
        for f, src in variants
    ]


def cell_dir(out: Path, cell: Cell) -> Path:
    return out / "cells" / cell.name


def is_finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file() and (folder / "per_user_test.safetensors").is_file()


def cell_state(folder: Path) -> str:
    """A cell's state for --list-cells: finished, training (its trainer is alive here), started or to do."""
    if is_finished(folder):
        return "finished"
    if lock_holder_alive(folder / LOCK_FILE):
        return "training"
    return "started" if (folder / "checkpoint.pt").is_file() else "to do"


def cells_of_variant(out: Path, variant: str) -> list[str]:
    """The cells of `variant` (gate:tuned; gate in a grid made before sources) in the grid folder `out` with any
    output: finished, or started."""
    name = re.compile(rf"[^-]+-{re.escape(variant.replace(':', '-'))}-s\d+")
    folders = (f for f in (out / "cells").glob("*") if name.fullmatch(f.name))
    return sorted(f.name for f in folders if any((f / o).exists() for o in CELL_OUTPUTS))


def finished_outside(out: Path, cells: list[Cell]) -> list[str]:
    """The finished cells of the grid folder `out` that are not among `cells` (another process's wider grid)."""
    names = {cell.name for cell in cells}
    return sorted(f.name for f in (out / "cells").glob("*") if f.name not in names and is_finished(f))


def shared_settings(job: AblateJob, before: bool = False) -> dict:
    """The settings that shape every cell's result (recorded, and compared on a re-run), keyed like the flags.
    before: each at the value a grid recorded before the setting existed is read as (core.run_settings)."""
    out = {"dataset": job.dataset}
    tree = as_recorded_before(job) if before else asdict(job)
    for s in settings_of(job):
        if s.path[0] in SHARED_GROUPS and s.key not in PER_CELL:
            value = tree
            for name in s.path:
                value = value[name]
            out[s.key] = list(value) if isinstance(value, tuple) else value
    return dict(sorted(out.items()))


def recorded_sources(value: Any) -> dict[str, str]:
    """{label: path} of the item tables in a settings record: a mapping now; a grid made before sources recorded
    one path (its `tuned` source) or none."""
    if not value:
        return {}
    if isinstance(value, str):
        return {TUNED: value}
    if isinstance(value, list):
        return item_table_sources(value)
    return dict(value)


def recorded_digests(digests: dict) -> dict:
    """Digests keyed fusion:source; a grid made before sources keyed a table-reading fusion alone (source tuned)."""
    return {f"{k}:{TUNED}" if k in llm_table_fusions() else k: v for k, v in digests.items()}


def deprecated_keys(job: AblateJob) -> dict[str, tuple[str, Any, Any]]:
    """{old key: (today's key, value when the old one was true, when false)} of the job's settings (e.g. bf16)."""
    return {
        old.lstrip("-").replace("-", "_"): (s.key, if_true, if_false)
        for s in settings_of(job)
        for old, if_true, if_false in s.deprecated
    }


def check_settings(
    out: Path, settings: dict, before: dict, force: bool = False, old_keys: dict | None = None
) -> str | None:
    """Record the shared settings, or refuse to mix cells trained with other ones into this folder.

    settings: shared_settings(job) with item_embeddings as {label: path}, optionally with DIGESTS
    ({fusion:source: hash}); before: shared_settings(default job, before=True), what a setting newer than the grid
    reads as (core.run_settings). old_keys: deprecated_keys of the job; a recorded key spelled the old way
    (`bf16: false`) is read as today's setting (`precision: float32`). force: record them as they are. Returns the
    grid's unlabelled source (None but for a grid made before sources).
    """
    path = out / SETTINGS_FILE
    if force or not path.is_file():
        write_json(path, settings)
        return None
    recorded = read_json(path, "ablation settings")
    for old, (key, if_true, if_false) in (old_keys or {}).items():
        if old in recorded and key not in recorded:
            recorded[key] = if_true if recorded.pop(old) else if_false
    old_digests = recorded_digests(recorded.pop(DIGESTS, None) or {})
    new_digests = settings.get(DIGESTS) or {}
    unlabelled = recorded.pop(UNLABELLED, None) or (TUNED if isinstance(recorded.get(ITEM_TABLES), str) else None)
    old_sources, new_sources = recorded_sources(recorded.get(ITEM_TABLES)), recorded_sources(settings.get(ITEM_TABLES))
    settings = {k: v for k, v in settings.items() if k != DIGESTS}
    fix = "repeat the original options to resume, pass --force to start the grid over, or use another --out"
    # the side-information files (per source, and files a run may leave out or add) are checked below
    files = {ITEM_TABLES, *SIDE_OPTIONS}
    current = RunSettings({k: v for k, v in settings.items() if k not in files}, before=before)
    current.refuse(path, {k: v for k, v in recorded.items() if k not in files}, "grid", fix=fix)
    changed = [k for k in SIDE_OPTIONS if None not in (recorded.get(k), settings.get(k)) and recorded[k] != settings[k]]
    if changed:
        k = changed[0]
        raise InputError(f"{path}: this grid was written with {k}={recorded[k]!r}, now {settings[k]!r}; {fix}")
    moved = sorted(s for s in set(old_sources) & set(new_sources) if old_sources[s] != new_sources[s])
    if moved:
        s = moved[0]
        raise InputError(
            f"{path}: this grid was run with {ITEM_TABLES} source {s}={old_sources[s]!r}, now {new_sources[s]!r}; "
            "repeat the original path, give the new table another label, pass --force to start the grid over, "
            "or use another --out"
        )
    # files with other contents are refused while cells trained (or training) on the old ones are in the folder
    swapped = [f for f in sorted(set(old_digests) & set(new_digests)) if old_digests[f] != new_digests[f]]
    named = {f: f.partition(":")[0] if unlabelled and f.endswith(f":{unlabelled}") else f for f in swapped}
    if stale := next(((f, cells) for f in swapped if (cells := cells_of_variant(out, named[f]))), None):
        f, cells = stale
        raise InputError(
            f"{path}: the {f} cells of this grid were trained on side-information files with other "
            f"contents (sha256 {old_digests[f][:12]}, now {new_digests[f][:12]}); delete their folders "
            f"({out / 'cells'}/{{{','.join(cells)}}}) to train them on the new files, pass --force (tslrec run: "
            "--force ablation) to start the whole grid over, or use another --out"
        )
    added = {k: settings[k] for k in SIDE_OPTIONS if recorded.get(k) is None and settings.get(k) is not None}
    sources = {**old_sources, **new_sources}
    if sources != old_sources:  # a source added: the record becomes {label: path}
        added[ITEM_TABLES] = sources if old_sources else settings[ITEM_TABLES]
    digests = {**old_digests, **new_digests}
    if added or digests != old_digests:
        marker = {UNLABELLED: unlabelled} if unlabelled else {}
        write_json(path, {**recorded, **added, **marker, **({DIGESTS: digests} if digests else {})})
    return unlabelled


def discard_cells(out: Path) -> None:
    """--force: delete the outputs and checkpoint of every cell in the grid folder (not only this run's cells),
    so no cell of an earlier run survives into this one."""
    folders = sorted(p for p in (out / "cells").glob("*") if p.is_dir())
    with ExitStack() as locks:  # every lock first: a cell in training elsewhere stops the discard before it starts
        for folder in folders:
            if not locks.enter_context(cell_lock(folder)):
                raise InputError(
                    f"{folder / LOCK_FILE}: cell {folder.name} is being trained by another process; "
                    "stop it, then run again with --force"
                )
        for folder in folders:
            for name in CELL_OUTPUTS:
                (folder / name).unlink(missing_ok=True)


def cell_side(side: SideInfoConfig, fusion: str, source: str | None, unlabelled: bool = False) -> SideInfoConfig:
    """The side-information settings of one cell: the one item table it reads (labelled, so its variant names it;
    bare for an older grid's unlabelled source), the `tuned` one for ci's groups, none for base; the grid's
    clusters for ci only."""
    sources, fusion_type = item_table_sources(side.item_embeddings), fusion_class(fusion)
    if source is not None:
        table = [sources[source] if unlabelled else f"{source}={sources[source]}"]
    elif reads_item_table(fusion_type, side.clusters is not None) and sources:
        table = [groups_source(sources)]
    else:
        table = None
    return replace(
        side,
        item_embeddings=table,
        clusters=side.clusters if fusion_type.reads_clusters else None,
        finetune_llm_table=side.finetune_llm_table and fusion_type.reads_llm_table,
    )


def cell_job(job: AblateJob, cell: Cell, folder: Path) -> train_job.TrainJob:
    """The `tslrec train` job of one cell: the grid's shared settings plus the cell's own."""
    return train_job.TrainJob(
        dataset=job.dataset,
        backbone=cell.backbone,
        fusion=cell.fusion,
        out=str(folder),
        side=cell_side(job.side, cell.fusion, cell.source, cell.unlabelled),
        data=job.data,
        model=job.model,
        train=replace(job.train_of(cell.backbone), seed=cell.seed),
        eval=job.eval,
        runtime=job.runtime,
    )


LOCK_FILE = "train.lock"


def cell_lock(folder: Path) -> AbstractContextManager[bool]:
    """The lock a cell's trainer holds on `folder`/train.lock (False: another process trains the cell)."""
    return file_lock(folder / LOCK_FILE)


def run_grid(job: AblateJob, cells: list[Cell], out: Path, tag: str = "") -> int:
    """Train every unfinished cell not held by another process, one line per cell; returns the cells left to others.

    `tag` ("" or e.g. "worker 2: ") starts each line; a tagged run does not list the cells it skips.
    """
    elsewhere = 0
    for i, cell in enumerate(cells, 1):
        folder = cell_dir(out, cell)
        head = f"{tag}[{i}/{len(cells)}] {cell.name}"
        if is_finished(folder):
            if not tag:
                print(f"{head}: finished earlier, skipped", flush=True)
            continue
        with cell_lock(folder) as mine:
            if not mine:
                if not tag:
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


def exit_with_parent(parent: int, every: float = 2.0) -> None:
    """Block until this process's parent is no longer `parent` (it died, even by SIGKILL), then exit at once: a
    spawned grid worker must not go on training, orphaned, into a grid that a new run now owns. Its cell keeps
    its last checkpoint."""
    while os.getppid() == parent:
        time.sleep(every)
    os._exit(1)


def grid_worker(
    job: AblateJob, cells: list[Cell], out: Path, threads: int, tag: str, parent: int | None = None
) -> None:
    """One of `run_grid_workers`' processes: `run_grid` on `threads` torch threads, without progress bars; a
    spawned one (`parent` given) stops when its parent process is gone."""
    if parent is not None:
        threading.Thread(target=exit_with_parent, args=(parent,), daemon=True).start()
    run_grid(replace(job, runtime=replace(job.runtime, progress=False, threads=threads)), cells, out, tag)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_grid_workers(job: AblateJob, cells: list[Cell], out: Path, workers: int) -> int:
    """Train the grid in `workers` processes (this one and workers - 1 spawned ones) that share the cells through
    their locks, each on torch.get_num_threads() // workers threads; returns the cells left to other processes.

    Small models use two cores better as two one-thread trainers than as one two-thread trainer. A worker
    that dies leaves its cell unfinished; this process trains it afterwards (from its checkpoint).
    """
    if workers <= 1:
        return run_grid(job, cells, out)
    threads = max(1, torch.get_num_threads() // workers)
    print(f"training the grid in {workers} processes of {threads} torch thread(s) each", flush=True)
    spawn = multiprocessing.get_context("spawn")  # not fork: a forked OpenMP runtime can hang
    others = [
        spawn.Process(
            target=grid_worker, args=(job, cells, out, threads, f"worker {w}: ", os.getpid()), name=f"grid worker {w}"
        )
        for w in range(2, workers + 1)
    ]
    for p in others:
        p.start()
    before = torch.get_num_threads()
    main_thread = threading.current_thread() is threading.main_thread()  # only there can a handler be set
    on_term = signal.signal(signal.SIGTERM, _raise_exit) if main_thread else None  # `kill` stops the workers too
    try:
        grid_worker(job, cells, out, threads, "worker 1: ")
        for p in others:
            p.join()
    except BaseException:
        for p in others:
            p.terminate()
        raise
    finally:
        torch.set_num_threads(before)
        if main_thread:
            signal.signal(signal.SIGTERM, on_term)
    failed = [p.name for p in others if p.exitcode != 0]
    if failed:
        print(f"{', '.join(failed)} stopped early (exit code != 0); training what they left", flush=True)
    return run_grid(job, cells, out, tag="finishing: ")


def check_finished(job: AblateJob, cells: list[Cell], out: Path, ds: SequenceDataset) -> set[str]:
    """Refuse a finished cell whose recorded settings are not its cell's today (the data edited in place, a lost or
    overwritten ablation.json, another table at the same path), so it is never skipped or reported as this grid's.
    Returns the names of the cells it checked."""
    checked = set()
    for cell in cells:
        folder = cell_dir(out, cell)
        if is_finished(folder):
            checked.add(cell.name)
            record = read_json(folder / "metrics.json", "cell metrics")
            current = train_job.tied_settings(cell_job(job, cell, folder), ds)
            fix = "pass --force to start the grid over, or use another --out"
            current.refuse(folder / "metrics.json", record.get("settings"), "finished cell", fix=fix)
    return checked


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
