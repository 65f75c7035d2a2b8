"""Benchmark: the TSLRec stage-2 fusion ablation (base / ci / gate on four backbones) and the cost of stage 2.

    # the grid on ML-1M (needs a finished stage 1 on the same dataset and preprocessing)
    python -m bench.ablation --dataset ml-1m --kcore 5 --max-len 200 --stage1-dir runs/ml-1m/stage1 --seeds 3
    # reuse an export, smaller grid; every flag of `tslrec ablate` is accepted
    python -m bench.ablation --dataset ml-100k --item-embeddings runs/ml-100k/stage2 --stage1-dir runs/ml-100k/stage1 \
        --backbones sasrec --seeds 1 --epochs 3
    # gate over the LLM export and over the stage-0 SASRec's own table (the no-LLM control), one grid
    python -m bench.ablation --dataset ml-100k --item-embeddings tuned=runs/ml-100k/stage2,stage0=runs/ml-100k/stage0 \
        --stage1-dir runs/ml-100k/stage1 --fusions base,ci,gate

--out is the benchmark's folder (default runs/bench-ablation-<dataset>): the grid goes to <out>/grid (a `tslrec run`
folder's own grid, <out>/ablation, is read in place) and a
stage-2 export made here to <out>/stage2. Runs stage 2 (unless --item-embeddings is given) and the grid
in-process through their typed entry points, then writes
bench/results/<name>.json (default ablation-<dataset>.json): one record per cell (dataset, model,
variant (base, ci, gate:tuned, gate:stage0; gate for a grid made before item-table sources), fusion, source,
seed, test metrics, timings, the Welch tests against base and, with labelled sources, against ci and
gate:stage0) plus one record for stage 2 itself (seconds per 1,000 items), each with the command and
commit. Re-running resumes the grid (finished cells are not retrained).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from bench.records import add, load
from tslrec.backbones.training import evaluate_split
from tslrec.core.artifacts import read_json, resolve_device
from tslrec.core.errors import InputError
from tslrec.core.run_settings import digest
from tslrec.core.settings import add_arguments, from_namespace, in_flags
from tslrec.data import DataConfig, SequenceDataset, load_dataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.evaluation.significance import SeedTest
from tslrec.pipelines.ablate_job import AblateJob, run_ablation
from tslrec.pipelines.ablate_job import print_outcome as print_ablation
from tslrec.pipelines.ablation_grid import cell_dir
from tslrec.pipelines.ablation_report import compare, has_sources, summarize
from tslrec.pipelines.recommend_job import rebuild_model
from tslrec.pipelines.run_folders import STAGE1_CONFIG, is_train_folder
from tslrec.pipelines.side_information import TUNED, item_table_sources
from tslrec.pipelines.stage2_job import Stage2Job, run_stage2
from tslrec.pipelines.stage2_job import print_outcome as print_stage2


def stage2_record(export: Path, dataset: str, label: str = TUNED) -> dict | None:
    """The stage-2 timing and category agreement the export's manifest recorded (None if another tool wrote it)."""
    manifest = read_json(export / "manifest.json", "embedding manifest")
    source = manifest.get("source", {})
    timing = source.get("extraction")
    if not timing:
        return None
    return {
        "dataset": dataset,
        "model": "tslrec-stage2",
        # one record per export: the tuned one's name predates the others (`untuned`, `tuned-text`, ...)
        "variant": f"extract-{source.get('llm')}" + ("" if label == TUNED else f"-{label}"),
        "seed": None,
        "source": label,  # the item-table label the grid gives this export
        "device": timing.get("device"),
        "metrics": {},
        "timings": {
            "seconds": timing["seconds"],
            "items": timing["items"],
            "seconds_per_1000_items": timing["seconds_per_1000_items"],
            "batch_size": timing["batch_size"],
            **{k: timing[k] for k in ("precision", "cpu_capability", "gpu", "bf16_autocast") if k in timing},
        },
        "llm": source.get("llm"),
        "llm_dtype": source.get("llm_dtype"),
        "k": source.get("k"),
        "pooling": source.get("pooling"),
        "category_agreement": source.get("category_agreement"),
        "stage1_dir": source.get("stage1_dir"),
    }


def add_stage1(stage2: dict, stage1_dir: Path) -> None:
    """The stage 1 behind an export, its held-out MSEs beside the no-LLM baselines, into its stage-2 record."""
    if not (stage1_dir / "metrics.json").is_file():
        return
    s1 = read_json(stage1_dir / "metrics.json", "stage 1 metrics")
    keep = ("mse", "mse_global_mean", "mse_ratio_to_global_mean", "mse_mean_embedding", "mse_untuned_llm")
    config = stage1_dir / STAGE1_CONFIG
    stage2["stage1"] = {
        "metrics": {k: s1["metrics"].get(k) for k in keep},
        "steps": s1.get("steps"),
        "users": s1.get("users"),
        "train_seconds": s1.get("timing", {}).get("train_seconds"),
        # the stage-0 table it read: a campaign rebuilt elsewhere can tell whether its stage 0 came out the same
        "item_table_sha256": read_json(config, "stage 1 config").get("item_table_sha256") if config.is_file() else None,
    }


def cell_record(record: dict, stage2: dict | None) -> dict:
    """A finished cell's metrics.json as a benchmark record."""
    keep = (
        "dataset model variant seed device protocol metrics valid_metrics best_epoch epochs dataset_info config "
        "side_information versions precision eval_precision cpu_capability native_bf16 threads best_at_cap"
    ).split()
    rec = {k: record[k] for k in keep if k in record}
    # what the cell is tied to: every setting it trained under (a campaign rebuilt elsewhere compares them to skip
    # the cell), hashed (the item table's content hash is in side_information), and the code it ran (a campaign's
    # cells come from its own checkout's commit)
    rec["settings"] = record.get("settings")
    rec["settings_sha256"] = digest(record.get("settings"))
    side = (record.get("settings") or {}).get("side_information") or {}
    rec["item_table_sha256"], rec["clusters_sha256"] = side.get("llm_table_sha256"), side.get("clusters_sha256")
    if (record.get("versions") or {}).get("tslrec_commit"):
        rec["commit"] = record["versions"]["tslrec_commit"]
    rec["timings"] = {
        k: record.get(k) for k in ("seconds_per_epoch", "seconds_to_best", "wall_seconds", "peak_memory_mb")
    }
    if stage2 is not None:
        rec["timings"]["stage2_seconds_per_1000_items"] = stage2["timings"]["seconds_per_1000_items"]
    return rec


def history_masked_metrics(
    folder: Path, record: dict, ds: SequenceDataset, splits: LeaveOneOutSplits, device: torch.device
) -> dict:
    """The cell's chosen weights evaluated once more with the user's whole history before the target removed
    from the candidates (the Lite-LLM4Rec paper's protocol; a secondary protocol here, always labelled).
    The model is rebuilt from the files the cell itself recorded, with its own evaluation settings."""
    model = rebuild_model(folder, record, ds)  # the dataset is loaded once for every cell
    model.to(device)
    masked = evaluate_split(
        model, splits.test, EvalConfig(**{**record["config"]["eval"], "mask_history": True}), device
    )
    return {k: round(v, 6) for k, v in masked.metrics.items()}


def kept_apart(name: str, rec: dict) -> dict:
    """`rec`, with its variant renamed `<variant>@<hash>` when the record file already holds the same cell trained on
    an item table or group map with other contents (a campaign whose stages were rebuilt differently): two tables'
    cells are never averaged as one variant."""
    key = ("dataset", "model", "variant", "seed")
    for old in load(name):
        same_cell = all(old.get(k) == rec.get(k) for k in key)
        tables = ("item_table_sha256", "clusters_sha256")
        if same_cell and any(k in old and old[k] != rec.get(k) for k in tables):
            digest = (rec.get("item_table_sha256") or rec.get("clusters_sha256") or "none")[:8]
            print(
                f"{name}: {rec['model']} {rec['variant']} seed {rec['seed']} was recorded on another table; "
                f"recorded apart as {rec['variant']}@{digest}",
                flush=True,
            )
            return {**rec, "variant": f"{rec['variant']}@{digest}"}
    return rec


def seed_test_record(t: SeedTest) -> dict:
    """A Welch test over seeds as a benchmark record field."""
    return {
        "test": t.name,
        "mean_diff": round(t.mean_diff, 6),
        "t": t.t,
        "p": t.p,
        "seeds": t.seeds,
        "base_seeds": t.base_seeds,
        "verdict": t.verdict(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default=None, help="results file name (default ablation-<dataset>)")
    p.add_argument("--no-train", action="store_true", help="train nothing: record the cells already finished")
    defaults = AblateJob(dataset="ml-1m", data=DataConfig(kcore=5, max_len=200))
    add_arguments(p, defaults)
    args = p.parse_args()
    if "out" not in vars(args):  # the benchmark's own folder: the grid goes to <out>/grid
        args.out = f"runs/bench-ablation-{Path(vars(args).get('dataset', defaults.dataset)).stem}"
    try:
        job = from_namespace(defaults, args)
        if not args.no_train and not job.side.item_embeddings and job.side.clusters is None:
            raise InputError("pass --stage1-dir (stage 2 runs first) or --item-embeddings")
        record_grid(job, args.name, train=not args.no_train)
    except InputError as e:
        raise SystemExit(f"error: {in_flags(str(e), defaults)}") from None


def grid_dir(out: Path) -> Path:
    """<out>/grid, or the grid of a `tslrec run` folder (<out>/ablation) when that is what <out> holds."""
    run_grid = out / "ablation"
    return run_grid if not (out / "grid").exists() and (run_grid / "ablation.json").is_file() else out / "grid"


def record_grid(job: AblateJob, name: str | None, train: bool = True) -> None:
    """Stage 2 if needed, the grid, then one record per finished cell (and one for stage 2)."""
    stem = Path(job.dataset).stem
    out = Path(job.out)
    # no sources given: stage 2 runs here (bare = tuned); recording alone reads only the sources named
    entries = job.side.item_embeddings or ([str(out / "stage2")] if train else [])
    export = Path(item_table_sources(entries).get(TUNED, out / "stage2"))
    if train and not job.side.item_embeddings and not (export / "manifest.json").is_file():
        print_stage2(
            run_stage2(
                Stage2Job(stage1_dir=job.side.clusters, out=str(export), runtime=replace(job.runtime, progress=False))
            )
        )
    stage2 = stage2_record(export, stem) if (export / "manifest.json").is_file() else None
    if stage2 is not None:
        add_stage1(stage2, Path(stage2.get("stage1_dir") or job.side.clusters or ""))
    others = [  # every other export among the sources (`untuned`, `tuned-text`, ...): its stage 2 and stage 1 too
        stage2_record(Path(folder), stem, label)
        for label, folder in item_table_sources(entries).items()
        if label != TUNED and (Path(folder) / "manifest.json").is_file() and not is_train_folder(Path(folder))
    ]
    for r in (r for r in others if r is not None):
        add_stage1(r, Path(r.get("stage1_dir") or ""))
    grid_job = replace(
        job,
        out=str(grid_dir(out)),
        side=replace(job.side, item_embeddings=entries),
        runtime=replace(job.runtime, progress=False),
    )
    outcome = run_ablation(grid_job, train=train)
    print_ablation(outcome)
    name = name or f"ablation-{stem}"
    for r in [stage2, *others]:
        if r is not None:
            add(name, r)
    finished = outcome.results
    if not finished:
        raise SystemExit(f"no finished cells in {grid_dir(out)}; nothing to record")
    first = finished[0].record
    ds = load_dataset(first["dataset_source"], DataConfig(**first["config"]["data"]))  # as the cells loaded it
    if ds.hash != first["dataset_info"]["hash"]:
        raise SystemExit(
            f"{job.dataset}: the data changed since the grid was trained (hash {ds.hash[:12]} vs "
            f"{first['dataset_info']['hash'][:12]}); re-run the grid in a new --out"
        )
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, first["config"]["data"]["max_len"])
    rows = {(row.backbone, row.fusion): row for row in summarize(finished)}
    against: dict[tuple[str, str], dict] = {}  # (backbone, variant) -> {base / ci / gate:stage0: {metric: test}}
    for c in compare(finished) if has_sources(finished) else []:
        against.setdefault((c.backbone, c.variant), {})[c.against] = {
            m: seed_test_record(t) for m, t in c.tests.items()
        }
    for result in finished:
        cell = result.cell
        rec = {**cell_record(result.record, stage2), "fusion": cell.fusion, "source": cell.source}
        row = rows[(cell.backbone, cell.variant)]
        # the grid's tests against base, the same on every seed's record: Welch over per-seed means (the verdict)
        # and, secondary, the paired test over users on seed-averaged per-user metrics
        # (none where base is not in this folder: a campaign that skipped its recorded base cells; the report then
        # tests against base from the records, over seeds, and has no paired test over users)
        if row.tests:
            rec["vs_base"] = {m: seed_test_record(t) for m, t in row.tests.items()}
        if row.user_tests:
            rec["vs_base_paired_users"] = {
                m: {"mean_diff": round(t.mean_diff, 6), "t": round(t.t, 4), "p": t.p, "users": t.users}
                for m, t in row.user_tests.items()
            }
        if (cell.backbone, cell.variant) in against:  # Welch over seeds against base, ci and gate:stage0
            rec["vs"] = against[(cell.backbone, cell.variant)]
        if not job.eval.sampled_negatives:  # sampled negatives are never the user's items: nothing to mask
            rec["metrics_history_masked"] = history_masked_metrics(
                cell_dir(grid_dir(out), cell), result.record, ds, splits, resolve_device(job.runtime.device)
            )
        add(name, kept_apart(name, rec))
    missing = {(c.backbone, c.variant, c.seed) for c in set(outcome.cells) - {r.cell for r in finished}}
    before = len(missing & {(r["model"], r["variant"], r["seed"]) for r in load(name)})  # from a folder since gone
    print(
        f"wrote bench/results/{name}.json ({len(finished)} of {len(outcome.cells)} cells finished here"
        + (f", {before} recorded before from a folder since gone" if before else "")
        + (f", stage 2 {stage2['timings']['seconds_per_1000_items']:.1f} s per 1,000 items)" if stage2 else ")")
    )


if __name__ == "__main__":
    main()
