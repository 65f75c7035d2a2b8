"""Benchmark: the main job (`make run`: `tslrec run --config configs/ml-100k.yaml`), whole process, from stage 0.

    python -m bench.main_job                                   # runs/bench-main-job, every stage from scratch
    python -m bench.main_job --config configs/ml-100k.yaml --out runs/bench-main-job --name main-job-ml-100k
    python -m bench.main_job --set stages.stage0.input_item_bias=true --label input-item-bias   # one setting changed
    python -m bench.main_job --estimate          # first `tslrec run --dry-run`'s estimate, recorded beside the run
Runs `tslrec run --config CONFIG --set out=OUT --force stage0` as one process and writes
bench/results/<name>.json (default main-job-<dataset>.json), one record per run: the wall time of the whole
process and of each stage (from the stage manifests), stage 0's test metrics (the SASRec whose item table the
rest reads), stage 1's held-out MSE beside its no-LLM baselines, stage 2's category agreement (C1-C3), and the
grid's cells (NDCG@10 and HR@10 each), with the CPU's capability and the precision every stage resolved to.
With --estimate the dry run's estimate of each stage comes first (in this process, timed on a few steps) and the
record holds it beside the stage's measured seconds: at the epoch caps, at the earliest stop, and at the epochs
the run's early stopping ran (the part a dry run cannot know).
The target is 15 minutes on a 2-core CPU; run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.records import add
from tslrec.core.artifacts import read_json
from tslrec.core.precision import cpu_capability
from tslrec.pipelines.run_job import RunJob, load_config, run_pipeline

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("stage0", "stage1", "stage2", "ablation")


def stage_seconds(out: Path) -> dict[str, float]:
    """{stage: seconds} from each stage's manifest (written when the stage finished)."""
    return {s: read_json(out / s / "stage_manifest.json", f"{s} manifest")["seconds"] for s in STAGES}


def grid_cells(out: Path) -> dict[str, dict[str, float]]:
    """{cell name: {HR@10, NDCG@10}} of every finished grid cell."""
    cells = {}
    for path in sorted((out / "ablation" / "cells").glob("*/metrics.json")):
        m = read_json(path, "cell metrics")["metrics"]
        cells[path.parent.name] = {k: m[k] for k in ("HR@10", "NDCG@10")}
    return cells


def epochs_run(out: Path) -> dict[str, int]:
    """{stage0 or grid cell name: epochs it trained} of a finished main job."""
    runs = {"stage0": out / "stage0"} | {p.name: p for p in sorted((out / "ablation" / "cells").glob("*"))}
    return {name: read_json(folder / "metrics.json", "metrics")["epochs"] for name, folder in runs.items()}


def estimate_record(estimates: dict, out: Path, workers: int) -> dict:
    """Per stage: the dry run's estimate (at the caps, at the earliest stop, at the epochs that ran) against the
    seconds the stage took (its manifest)."""
    actual, epochs = stage_seconds(out), epochs_run(out)
    at_epochs = {
        "stage0": sum(estimates["stage0"].epoch_seconds.values()) * epochs["stage0"],
        "ablation": sum(
            estimates["ablation"].epoch_seconds[name.split("-")[0]] * n
            for name, n in epochs.items()
            if name != "stage0"
        )
        / workers,
    }
    rows = {}
    for stage, e in estimates.items():
        guess = at_epochs.get(stage, e.at_cap)
        rows[stage] = {
            "estimate_at_caps_seconds": round(e.at_cap, 1),
            "estimate_earliest_seconds": round(e.earliest, 1),
            "estimate_at_epochs_run_seconds": round(guess, 1),
            "seconds": actual[stage],
            "seconds_over_estimate": round(actual[stage] / guess, 3) if guess else None,
            "text": e.text,
        }
    return rows


def record(config: Path, overrides: list[str], label: str | None, out: Path, wall: float, threads: int) -> dict:
    cfg = load_config(config, overrides)  # the config the run used: the file with the --set overrides applied
    cfg.pop("_path")
    s0 = read_json(out / "stage0" / "metrics.json", "stage-0 metrics")
    s1 = read_json(out / "stage1" / "metrics.json", "stage-1 metrics")["metrics"]
    agreement = read_json(out / "stage2" / "manifest.json", "stage-2 manifest")["source"].get("category_agreement")
    return {
        "dataset": str(cfg["dataset"]),
        "model": "tslrec-run",
        "variant": label or config.stem,
        "seed": cfg.get("seed", 42),
        "device": f"cpu, {threads} threads",
        "metrics": s0["metrics"],  # stage 0's SASRec, full ranking, history not masked
        "stage1": {k: s1[k] for k in ("mse", "mse_mean_embedding", "mse_untuned_llm", "mse_global_mean") if k in s1},
        "stage2_category_agreement": agreement,  # one-item LLM category vs k-means group: C1, C2, C3, chance
        "cells": grid_cells(out),
        "timings": {
            "wall_seconds": round(wall, 1),
            **{f"{s}_seconds": v for s, v in stage_seconds(out).items()},
            "cpu_capability": cpu_capability(),
            "precision": {
                "stage0": s0.get("precision"),
                "stage1": read_json(out / "stage1" / "config.json", "stage-1 config")["stage1"].get("precision"),
            },
        },
        "config": cfg,
        "out": str(out),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "ml-100k.yaml", help="the tslrec run config")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-main-job", help="run folder (started over)")
    p.add_argument("--name", default=None, help="results file under bench/results (default main-job-<dataset>)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override for the run")
    p.add_argument("--label", default=None, help="the record's variant (default: the config's file name)")
    p.add_argument("--estimate", action="store_true", help="record `tslrec run --dry-run`'s estimate beside the run")
    args = p.parse_args()
    if args.set and not args.label:
        p.error("--set changes the run: give it a --label, so that its record does not replace the config's own")
    estimates = {}
    if args.estimate:
        dry = RunJob(str(args.config), [f"out={args.out}", *args.set], force="stage0", dry_run=True)
        estimates = run_pipeline(dry).estimates
    tslrec = Path(sys.executable).with_name("tslrec")
    cmd = [str(tslrec), "run", "--config", str(args.config), "--set", f"out={args.out}", "--force", "stage0"]
    cmd += [a for kv in args.set for a in ("--set", kv)]
    print("+", " ".join(cmd), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    threads = torch.get_num_threads()  # the child inherits the same environment
    rec = record(args.config, args.set, args.label, args.out, wall, threads)
    if estimates:
        rec["dry_run_estimate"] = estimate_record(estimates, args.out, rec["config"]["stages"]["ablation"]["workers"])
    add(args.name or f"main-job-{rec['dataset']}", rec)
    seconds = {k: v for k, v in rec["timings"].items() if k.endswith("_seconds")}
    print(f"main job: {wall / 60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())})")


if __name__ == "__main__":
    main()
