"""`tslrec ablate`: the fusion ablation of TSLRec (paper Table 3) and its analyses (Fig. 4, Fig. 5).

Runs backbone x fusion x item-table source x seed `tslrec train` cells (resumable, see ablation_grid.py):
`--item-embeddings tuned=DIR,stage0=DIR` names the sources, and a fusion that reads an item table runs once
per source (`gate` -> gate:tuned, gate:stage0) unless it names one (`gate:stage0`). Then it writes
    cells.csv      one row per cell (test metrics, epochs, timings); the fusion column reads fusion:source
    summary.csv    mean/std over seeds; Welch t-tests over seeds (and paired t-tests over users) against base
    comparisons.csv  with labelled sources: each source against base, ci and the same fusion over stage0
    results.md     the ablation table, the source comparisons, C1/C2/C3 agreement, performance by user activity
    results.png    grouped bars of HR@10 and NDCG@10
    activity.csv / activity.png   test metrics by user-activity group for base, ci, gate
    agreement.json / agreement.png    LLM category vs k-means group, per export source with category_probs
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from tslrec.backbones.item_embedding import FUSIONS, llm_table_fusions
from tslrec.backbones.registry import BACKBONES, require_read_by
from tslrec.backbones.training import TrainConfig
from tslrec.core.artifacts import atomic_path, file_lock, write_json
from tslrec.core.errors import InputError
from tslrec.core.precision import resolved
from tslrec.core.run_settings import digest
from tslrec.core.settings import check_allowed, from_mapping, require, setting
from tslrec.data import DATASET_HELP, SequenceDataset, load_dataset
from tslrec.formats.item_table import load_item_embeddings
from tslrec.stage2_augment.analysis import CategoryAgreement, activity_groups, category_agreement

from . import ablation_report as report
from .ablation_grid import (
    DIGESTS,
    ITEM_TABLES,
    SETTINGS_LOCK,
    Cell,
    CellResult,
    cell_dir,
    cell_side,
    cell_state,
    check_finished,
    check_settings,
    collect,
    deprecated_keys,
    discard_cells,
    finished_outside,
    grid_variants,
    make_grid,
    parse_fusion,
    run_grid_workers,
    shared_settings,
)
from .options import Command, training_runtime
from .run_folders import is_train_folder
from .side_information import (
    SideInfoConfig,
    groups_source,
    item_table_sources,
    load_clusters,
    load_side_information,
    one_item_table,
)
from .train_job import BackboneSettings, side_information_fingerprint

ACTIVITY_FUSIONS = ("base", "ci", "gate")  # the variants of the paper's Fig. 5


@dataclass
class AblateJob(BackboneSettings):
    """A grid of `tslrec train` cells, backbone x fusion x seed, and its analyses."""

    dataset: str = setting("", DATASET_HELP, required=True)
    out: str = setting("", "grid folder (re-run the same command to resume)", required=True)
    backbones: list[str] = setting(
        help=f"comma list of {', '.join(BACKBONES)}", factory=lambda: ["gru4rec", "caser", "sasrec", "fmlprec"]
    )
    fusions: list[str] = setting(
        help=(
            f"comma list of {', '.join(FUSIONS)}; one that reads an item table runs once per --item-embeddings "
            "source, or names one: gate:stage0"
        ),
        factory=lambda: ["base", "ci", "gate"],
    )
    seeds: int = setting(3, "number of seeds per cell: --seed, --seed+1, ...", at_least=1)
    workers: int = setting(
        1, "processes that train cells at once, each on 1/N of torch's threads (2 on a 2-core CPU)", at_least=1
    )
    list_cells: bool = setting(False, "print the grid's cells, numbered from 0, train nothing and report the rest")
    cell: int | None = setting(
        None,
        (
            "train only cell I of --list-cells (one task of a Slurm array, a Ray or Kubernetes job), then "
            "report every finished cell"
        ),
    )
    skip: list[str] = setting(
        help=(
            "cells not to train here, by name (finished elsewhere, e.g. kept in a benchmark record); the report "
            "covers the cells finished in --out"
        ),
        factory=list,
    )
    backbone_train: list[str] = setting(
        help=(
            "a training setting of one backbone's cells over the grid's, e.g. gru4rec.lr=5e-3 or "
            "caser.lr_schedule=cosine: each backbone at its own learning rate and schedule"
        ),
        factory=list,
        repeat=True,
        metavar="BACKBONE.SETTING=VALUE",
    )
    activity_groups: int = setting(4, "user-activity groups for the Fig. 5 analysis", at_least=1)
    force: bool = setting(
        False,
        (
            "start the grid over: discard every cell's results and checkpoint in --out "
            "(a re-run with other settings or side-information files is refused without it)"
        ),
    )

    def __post_init__(self) -> None:
        check_allowed(self)
        self.runtime = training_runtime(self.runtime)
        self.backbones, self.fusions = list(dict.fromkeys(self.backbones)), list(dict.fromkeys(self.fusions))
        kinds = [parse_fusion(f)[0] for f in self.fusions]
        bad_b = [b for b in self.backbones if b not in BACKBONES]
        bad_f = [f for f in kinds if f not in FUSIONS]
        require(bool(self.backbones) and not bad_b, self, "backbones", f"use a comma list of {', '.join(BACKBONES)}")
        require(bool(self.fusions) and not bad_f, self, "fusions", f"use a comma list of {', '.join(FUSIONS)}")
        require_read_by(self.model, [BACKBONES[b].__name__ for b in self.backbones])
        reads = f"the grid's report reads K = {', '.join(map(str, report.REPORT_KS))}; keep them"
        require(set(report.REPORT_KS) <= set(self.eval.ks), self.eval, "ks", reads)
        require(
            not self.side.finetune_llm_table or bool(set(kinds) & set(llm_table_fusions())),
            self,
            "fusions",
            f"none reads an LLM table ({', '.join(llm_table_fusions())}), so --finetune-llm-table has nothing to train",
        )
        for backbone in self.backbones:  # a bad --backbone-train entry stops here, before any cell
            self.train_of(backbone)
        labels = list(item_table_sources(self.side.item_embeddings))
        if labels:  # a source named in --fusions must be given (checked again, with none given, when the grid runs)
            grid_variants(self.fusions, labels)

    def train_of(self, backbone: str) -> TrainConfig:
        """The training settings of `backbone`'s cells: the grid's, with its --backbone-train entries over them."""
        given = {}
        for entry in self.backbone_train:
            name, sep, raw = entry.partition("=")
            owner, dot, key = name.partition(".")
            if not (sep and dot) or owner not in BACKBONES or key == "seed":
                raise InputError(
                    f"AblateJob.backbone_train {entry!r}: write BACKBONE.SETTING=VALUE, BACKBONE one of "
                    f"{', '.join(BACKBONES)} and SETTING a training setting but the seed (the grid's)"
                )
            if owner == backbone:
                try:
                    value = yaml.safe_load(raw)
                except yaml.YAMLError:
                    value = raw  # not YAML: the setting's own check names it
                given[key] = float(value) if isinstance(value, str) and FLOAT.fullmatch(value) else value
        where = f"AblateJob.backbone_train ({backbone})"
        try:
            return from_mapping(self.train, given, where)
        except InputError as e:  # a value the training settings refuse: say whose
            raise InputError(str(e) if str(e).startswith(where) else f"{where}: {e}") from None


FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")  # 5e-3, which YAML 1.1 reads as text


@dataclass
class AblateOutcome:
    """A grid's folder, its finished cells and the report written from them."""

    out: Path
    cells: list[Cell]  # every cell of this run's grid
    results: list[CellResult]
    report: str  # the markdown of results.md ("" with no finished cell)
    elsewhere: int  # cells still training in other processes
    outside: int = 0  # finished cells of the folder outside this grid: the folder's report was left as it was


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def variant_digests(side: SideInfoConfig, variants: list[tuple[str, str | None]], ds: SequenceDataset) -> dict:
    """{fusion:source (or the ID fusion): content hash of the tensors its cells read}; every file is read and
    checked here, before the first cell trains."""
    digests = {}
    for fusion, source in variants:
        cell = cell_side(side, fusion, source)
        label, table = one_item_table(cell.item_embeddings)
        info = load_side_information(fusion, ds, table, cell.clusters, cell.finetune_llm_table, label)
        tensors = {k: v for k, v in side_information_fingerprint(info).items() if k != "fusion" and v}
        if tensors:
            key = fusion if source is None else f"{fusion}:{source}"
            digests[key] = digest(tensors)
    return digests


def grid_cells(job: AblateJob, unlabelled: str | None = None) -> list[Cell]:
    """Every cell of the grid, in --list-cells order: backbones x fusions (x item-table sources) x seeds."""
    variants = grid_variants(job.fusions, list(item_table_sources(job.side.item_embeddings)))
    return make_grid(job.backbones, variants, [job.train.seed + i for i in range(job.seeds)], unlabelled)


def run_ablation(job: AblateJob, train: bool = True) -> AblateOutcome:
    """Train every unfinished cell of the grid (resumable, shared with other processes), then write the reports.
    train=False: train nothing, report the cells already finished."""
    job = resolved(job, job.runtime.start())  # one precision for every cell, recorded with the grid
    sources = item_table_sources(job.side.item_embeddings)
    variants = grid_variants(job.fusions, list(sources))
    ds = load_dataset(job.dataset, job.data)
    digests = variant_digests(job.side, variants, ds)
    out = Path(job.out)
    if job.force and not train:
        raise InputError("AblateJob.force: a run that trains nothing (--no-train) only reads the grid; drop --force")
    settings = {**shared_settings(job), ITEM_TABLES: sources or None, **({DIGESTS: digests} if digests else {})}
    default_job = AblateJob(dataset=job.dataset)
    with file_lock(out / SETTINGS_LOCK, wait=True):  # processes on one grid folder read and write it in turn
        if job.force:
            discard_cells(out)
        before = shared_settings(default_job, before=True)
        unlabelled = check_settings(out, settings, before, force=job.force, old_keys=deprecated_keys(default_job))
    cells = grid_cells(job, unlabelled)
    if job.list_cells:
        rows = (f"{i}\t{cell.name}\t{cell_state(cell_dir(out, cell))}" for i, cell in enumerate(cells))
        print("\n".join(rows), flush=True)
    if job.cell is not None and not 0 <= job.cell < len(cells):
        raise InputError(f"AblateJob.cell={job.cell}: this grid has cells 0..{len(cells) - 1} (see --list-cells)")
    unknown = sorted(set(job.skip) - {cell.name for cell in cells})
    if unknown:
        raise InputError(f"AblateJob.skip: {', '.join(unknown)} is no cell of this grid (see --list-cells)")
    todo = [cell for cell in (cells if job.cell is None else [cells[job.cell]]) if cell.name not in job.skip]
    train = train and not job.list_cells
    checked = check_finished(job, cells, out, ds)  # a finished cell is skipped only if it is this grid's
    elsewhere = run_grid_workers(job, todo, out, job.workers if job.cell is None else 1) if train else 0
    check_finished(job, [c for c in cells if c.name not in checked], out, ds)  # and those finished meanwhile
    results = collect(out, cells)
    # the folder's report covers the folder's cells: a narrower grid (the campaign's base cells alone) leaves it
    outside = finished_outside(out, cells)
    text = "" if outside else write_reports(out, results, ds, job)
    return AblateOutcome(out, cells, results, text, elsewhere, len(outside))


def print_outcome(o: AblateOutcome) -> None:
    if o.elsewhere:
        print(
            f"{o.elsewhere} cell(s) are still training in other processes: the report below covers the finished "
            "cells only; run this command again when they are done",
            flush=True,
        )
    if not o.results:
        print("no finished cells yet; nothing to report")
        return
    if o.outside:
        print(
            f"{len(o.results)} cell(s) of this grid finished; the folder holds {o.outside} more of a wider grid, so "
            f"its report ({o.out}/results.md) was left as it was: the wider grid's command rewrites it"
        )
        return
    print(o.report)
    print(f"wrote {o.out}/results.md, summary.csv, cells.csv and figures ({len(o.results)} cells)")


def agreement_of(side: SideInfoConfig, ds: SequenceDataset) -> dict[str, CategoryAgreement]:
    """C1/C2/C3 per item-table source that is a stage-2 export with category_probs (a `tslrec train` folder has no
    LLM categories), all against one set of k-means groups: --clusters, else the `tuned` export's (`ci`'s groups)."""
    sources = item_table_sources(side.item_embeddings)
    exports = {
        label: load_item_embeddings(folder, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
        for label, folder in sources.items()
        if not is_train_folder(folder)
    }
    reference = groups_source({k: v for k, v in sources.items() if k in exports})
    groups = (
        load_clusters(side.clusters, ds)
        if side.clusters
        else next((e.item_groups for k, e in exports.items() if sources[k] == reference), None)
    )
    if groups is None:
        return {}
    return {
        label: category_agreement(e.category_probs, groups)
        for label, e in exports.items()
        if e.category_probs is not None
    }


def write_reports(out: Path, results: list[CellResult], ds: SequenceDataset, job: AblateJob) -> str:
    """Every table and figure of the grid, from the finished cells; returns the markdown report."""
    if not results:
        return ""
    from . import plots  # matplotlib: loaded by the commands that draw

    rows = report.summarize(results)
    protocol = results[0].record.get("protocol", "")
    write_text(out / "cells.csv", report.cells_csv(results))
    write_text(out / "summary.csv", report.summary_csv(rows))
    plots.ablation_bars(rows, out / "results.png")
    sections = [f"# Fusion ablation on {ds.name}\n", report.markdown_table(rows, protocol)]
    if report.has_sources(results):  # a grid with labelled item-table sources: each against base, ci and stage0
        comparisons = report.compare(results)
        write_text(out / "comparisons.csv", report.comparisons_csv(comparisons))
        sections += ["## Item-table sources\n", report.comparisons_markdown(comparisons)]
    agreement = agreement_of(job.side, ds)
    if agreement:
        write_json(out / "agreement.json", {label: a.as_dict() for label, a in agreement.items()})
        plots.agreement_bar(agreement, out / "agreement.png")
        sections += ["## LLM category vs k-means group (Fig. 4)\n", report.agreement_markdown(agreement)]
    lengths = torch.tensor([len(s) for s in ds.sequences])  # [U], the users of every per-user vector
    groups = activity_groups(lengths, job.activity_groups)
    activity = report.activity_table(results, groups, ACTIVITY_FUSIONS)
    if activity:
        write_text(out / "activity.csv", report.activity_csv(activity, groups))
        plots.activity_lines(activity, groups, out / "activity.png")
        sections += ["## Performance by user activity (Fig. 5)\n", report.activity_markdown(activity, groups)]
    report_text = "\n".join(sections)
    write_text(out / "results.md", report_text)
    return report_text


COMMAND = Command(
    "ablate",
    "TSLRec stage 2 ablation: backbones x fusions x item-table sources x seeds, tables, t-tests, plots",
    AblateJob(),
    run_ablation,
    print_outcome,
)
