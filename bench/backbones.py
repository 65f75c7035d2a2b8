"""Benchmark: ID backbones trained to early stopping (leave-one-out, full ranking), with their speed.

    python -m bench.backbones --dataset ml-1m --kcore 5 --max-len 200 --backbones sasrec --seeds 42,43,44 \
        --name backbones-ml-1m-cpu
    python -m bench.backbones --dataset ml-1m --kcore 5 --max-len 200 --hidden 128 --epochs 1 --name speed-ml-1m
Every flag of `tslrec train` is accepted (--hidden, --windows, --bf16, --eval-bf16, ...). Each backbone x seed
trains through `tslrec train` into <out>/<backbone>-s<seed> (default out: runs/bench-<name>), so a killed
benchmark resumes where it stopped and a finished run is reused; its record is written as soon as it finishes, and
a restart keeps the record of a run it already holds as written (the timings and commit of the process that trained
it).
Writes bench/results/<name>.json (default backbones-<dataset>): one record per backbone x seed, with test
metrics (history not masked, and masked as a labelled secondary protocol), seconds per epoch, validation
seconds, wall time, and the fraction of this machine's matmul peak that training reached.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.peak import peak_on_threads
from bench.records import add, load
from tslrec.backbones.training import evaluate_split
from tslrec.core.artifacts import resolve_device
from tslrec.core.settings import add_arguments, from_namespace
from tslrec.data import load_dataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.pipelines.recommend_job import rebuild_model
from tslrec.pipelines.train_job import TrainJob, train_backbone


def train_flops_per_target(job: TrainJob, num_items: int) -> float:
    """Matmul FLOPs of one training target of SASRec (forward + backward = 3x forward), full softmax included."""
    H, L, layers = job.model.hidden, job.data.max_len, job.model.num_layers
    per_layer = 2 * 12 * H * H + 2 * 2 * L * H  # QKV, output and FFN projections; scores and weighted sum
    return 3 * (layers * per_layer + 2 * H * num_items)


def recorded(name: str, rec: dict) -> bool:
    """Whether record `name` already holds this finished run (a restarted benchmark that reused it): its record
    stays as written, with the timings and the commit of the process that trained it."""
    same = ("dataset", "model", "variant", "seed", "settings", "wall_seconds")
    return any(all(r.get(k) == rec.get(k) for k in same) for r in load(name))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, TrainJob(dataset="ml-1m"))
    p.add_argument("--backbones", default="sasrec", help="comma-separated backbones")
    p.add_argument("--seeds", default="42", help="comma-separated seeds")
    p.add_argument("--name", default=None, help="results file name (default backbones-<dataset>)")
    p.add_argument(
        "--label", default="base", help="the records' variant: name an ablation so it does not replace the base runs"
    )
    args = p.parse_args()
    base: TrainJob = from_namespace(TrainJob(dataset="ml-1m"), args)
    ds = load_dataset(base.dataset, base.data)
    name = args.name or f"backbones-{ds.name}"
    out_root = Path(base.out or f"runs/bench-{name}")
    device = resolve_device(base.runtime.device)
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, base.data.max_len)
    for seed in (int(s) for s in args.seeds.split(",")):
        for backbone in args.backbones.split(","):
            job = replace(
                base,
                backbone=backbone,
                train=replace(base.train, seed=seed),
                out=str(
                    out_root / (f"{backbone}-s{seed}" if args.label == "base" else f"{backbone}-{args.label}-s{seed}")
                ),
            )
            outcome = train_backbone(job)
            rec = {**outcome.record, "variant": args.label}
            if recorded(name, rec):
                continue
            model = rebuild_model(outcome.out, rec, ds).to(device)
            if not job.eval.sampled_negatives:  # sampled negatives are never the user's items: nothing to mask
                masked = evaluate_split(model, splits.test, replace(job.eval, mask_history=True), device)
                rec["metrics_history_masked"] = {k: round(v, 6) for k, v in masked.metrics.items()}
            t0 = time.perf_counter()
            evaluate_split(model, splits.valid, replace(job.eval, mask_history=False), device)
            history = rec.get("history") or []
            targets = history[-1].get("targets", splits.num_train_targets) if history else splits.num_train_targets
            rec["timings"] = {
                "seconds_per_epoch": rec["seconds_per_epoch"],
                "validation_seconds": round(time.perf_counter() - t0, 2),
                "seconds_to_best": rec["seconds_to_best"],
                "wall_seconds": rec["wall_seconds"],
                "targets_per_epoch": targets,
                "threads": torch.get_num_threads(),
                # the peak of the precision the run used, on its threads (measured once per process)
                f"matmul_peak_gflops_{rec['precision']}": round(
                    peak_on_threads(rec["precision"], torch.get_num_threads()), 1
                ),
            }
            if backbone == "sasrec" and rec["seconds_per_epoch"]:
                achieved = train_flops_per_target(job, ds.num_items) * targets / rec["seconds_per_epoch"] / 1e9
                peak_now = rec["timings"][f"matmul_peak_gflops_{rec['precision']}"]
                rec["timings"]["train_gflops"] = round(achieved, 1)
                rec["timings"]["fraction_of_matmul_peak"] = round(achieved / peak_now, 3)
            rec["device"] = f"{rec['device']}, {torch.get_num_threads()} threads"
            add(name, rec)
            m, mm = rec["metrics"], rec["metrics_history_masked"]
            print(
                f"{backbone:8s} seed {seed}: HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f} "
                f"(history masked: {mm['HR@10']:.4f} / {mm['NDCG@10']:.4f}), best {rec['best_epoch']}/"
                f"{rec['epochs']}, {rec['seconds_per_epoch']} s/epoch, "
                f"validation {rec['timings']['validation_seconds']} s",
                flush=True,
            )


if __name__ == "__main__":
    main()
