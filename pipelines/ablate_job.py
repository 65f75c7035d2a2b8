"""`tslrec ablate`: the fusion ablation of TSLRec (paper Table 3) and its analyses (Fig. 4, Fig. 5).

Runs backbone x fusion x seed `tslrec train` cells (resumable, see ablation_grid.py), then writes
    cells.csv      one row per cell (test metrics, epochs, timings)
    summary.csv    mean/std over seeds, paired t-tests against base
    results.md     the ablation table, C1/C2/C3 agreement, performance by user activity
    results.png    grouped bars of HR@10 and NDCG@10
    activity.csv / activity.png   test metrics by user-activity group for base, ci, gate
    agreement.json / agreement.png    LLM category vs k-means group (needs an export with category_probs)
"""
from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from tslrec.core.artifacts import atomic_path, write_json
from tslrec.core.errors import InputError
from tslrec.backbones.item_embedding import FUSIONS
from tslrec.backbones.registry import BACKBONES
from tslrec.stage2_augment.analysis import CategoryAgreement, activity_groups, category_agreement
from tslrec.stage2_augment.embedding_file import load_item_embeddings

from . import ablation_report as report
from . import plots
from .ablation_grid import DIGESTS, CellResult, check_settings, collect, discard_cells, make_grid, run_grid, \
    shared_settings
from .data import SequenceDataset, load_dataset
from .options import add_data_options, data_config
from .side_information import LLM_FUSIONS, add_side_information_options, load_clusters, load_side_information
from .train_job import add_model_options, add_train_options, side_information_fingerprint

ACTIVITY_FUSIONS = ("base", "ci", "gate")  # the variants of the paper's Fig. 5


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="TSLRec stage 2 ablation: backbones x fusions x seeds, tables, t-tests, plots")
    p.add_argument("--dataset", required=True, help="built-in name (ml-100k, ml-1m) or a path")
    p.add_argument("--backbones", default="gru4rec,caser,sasrec,fmlprec", help=f"comma list of {', '.join(BACKBONES)}")
    p.add_argument("--fusions", default="base,ci,gate", help=f"comma list of {', '.join(FUSIONS)}")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds per cell: --seed, --seed+1, ...")
    p.add_argument("--out", required=True, help="grid folder (re-run the same command to resume)")
    p.add_argument("--force", action="store_true",
                   help="start the grid over: discard every cell's results and checkpoint in --out (a re-run with "
                        "other settings or side-information files is refused without it)")
    p.add_argument("--activity-groups", type=int, default=4, help="user-activity groups for the Fig. 5 analysis")
    add_side_information_options(p, cluster_flags=("--clusters", "--stage1-dir"))
    add_data_options(p)
    add_model_options(p)
    add_train_options(p)
    p.set_defaults(func=run)


def parse_list(text: str, allowed, flag: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in allowed]
    if not items or bad:
        raise InputError(f"{flag}: '{bad[0] if bad else text}' is not one of {', '.join(allowed)}")
    return list(dict.fromkeys(items))


def write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def run(args: argparse.Namespace) -> None:
    backbones = parse_list(args.backbones, BACKBONES, "--backbones")
    fusions = parse_list(args.fusions, FUSIONS, "--fusions")
    if args.seeds < 1:
        raise InputError(f"--seeds {args.seeds}: need at least 1")
    if args.activity_groups < 1:
        raise InputError(f"--activity-groups {args.activity_groups}: need at least 1")
    if args.finetune_llm_table and not set(fusions) & set(LLM_FUSIONS):
        raise InputError(f"--finetune-llm-table: none of --fusions reads an LLM table ({', '.join(LLM_FUSIONS)})")
    ds = load_dataset(args.dataset, data_config(args))
    digests = {}
    for fusion in fusions:  # every input file is checked before the first cell trains
        side = load_side_information(fusion, ds, args.item_embeddings, args.clusters,
                                     args.finetune_llm_table and fusion in LLM_FUSIONS)
        tensors = {k: v for k, v in side_information_fingerprint(side).items() if k != "fusion" and v}
        if tensors:
            digests[fusion] = hashlib.sha256(json.dumps(tensors, sort_keys=True).encode()).hexdigest()
    out = Path(args.out)
    force = getattr(args, "force", False)
    if force:
        discard_cells(out)
    check_settings(out, {**shared_settings(args), **({DIGESTS: digests} if digests else {})}, force=force)
    cells = make_grid(backbones, fusions, [args.seed + i for i in range(args.seeds)])
    elsewhere = run_grid(args, cells, out)
    if elsewhere:
        print(f"{elsewhere} cell(s) are still training in other processes: the report below covers the finished "
              "cells only; run this command again when they are done", flush=True)
    write_reports(out, collect(out, cells), ds, args)


def agreement_of(args: argparse.Namespace, ds: SequenceDataset) -> CategoryAgreement | None:
    """C1/C2/C3 of the export's category_probs against the k-means groups, if both are at hand."""
    if args.item_embeddings is None:
        return None
    export = load_item_embeddings(args.item_embeddings, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    groups = load_clusters(args.clusters, ds) if args.clusters else export.item_groups
    if export.category_probs is None or groups is None:
        return None
    return category_agreement(export.category_probs, groups)


def write_reports(out: Path, results: list[CellResult], ds: SequenceDataset, args: argparse.Namespace) -> None:
    """Every table and figure of the grid, from the finished cells."""
    if not results:
        print("no finished cells yet; nothing to report")
        return
    rows = report.summarize(results)
    protocol = results[0].record.get("protocol", "")
    write_text(out / "cells.csv", report.cells_csv(results))
    write_text(out / "summary.csv", report.summary_csv(rows))
    plots.ablation_bars(rows, out / "results.png")
    sections = [f"# Fusion ablation on {ds.name}\n", report.markdown_table(rows, protocol)]
    agreement = agreement_of(args, ds)
    if agreement is not None:
        write_json(out / "agreement.json", agreement.as_dict())
        plots.agreement_bar(agreement, out / "agreement.png")
        sections += ["## LLM category vs k-means group (Fig. 4)\n", report.agreement_markdown(agreement)]
    lengths = torch.tensor([len(s) for s in ds.sequences])  # [U], the users of every per-user vector
    groups = activity_groups(lengths, args.activity_groups)
    activity = report.activity_table(results, groups, ACTIVITY_FUSIONS)
    if activity:
        write_text(out / "activity.csv", report.activity_csv(activity, groups))
        plots.activity_lines(activity, groups, out / "activity.png")
        sections += ["## Performance by user activity (Fig. 5)\n", report.activity_markdown(activity, groups)]
    write_text(out / "results.md", "\n".join(sections))
    print("\n".join(sections))
    print(f"wrote {out}/results.md, summary.csv, cells.csv and figures ({len(results)} cells)")
