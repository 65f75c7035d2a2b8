"""Benchmark: Lite-LLM4Rec under the paper protocol (leave-one-out, full ranking), one record per strategy.

    python -m bench.lite_train --dataset ml-1m --kcore 5                                   # to convergence
    OMP_NUM_THREADS=1 python -m bench.lite_train --dataset ml-1m --kcore 5 --max-steps 378 # a capped CPU run
Takes every option of `tslrec lite` (--llm, --item-llm, --finetune, --epochs, --lr, ...) plus
--variants, --name and --tag; writes bench/results/<name>.json (default lite-<dataset>.json) with
model "lite-llm4rec", variant = strategy (strategy+TAG with --tag, for runs of other settings), test metrics
keyed Recall@10, Recall@20, NDCG@10, NDCG@20, and the budget actually run (steps, epochs of training rows,
targets seen) next to them.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from bench.records import add
from tslrec.core.settings import add_arguments, from_namespace
from tslrec.data import DataConfig
from tslrec.pipelines.lite_job import MAX_LEN, LiteJob, run_lite


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="sampling,all", help="comma-separated strategies to run")
    p.add_argument("--name", default=None, help="results file name (default lite-<dataset>)")
    p.add_argument("--runs", default="runs/bench-lite", help="parent folder of the run outputs")
    p.add_argument(
        "--tag", default="", help="appended to each record's variant and run folder (strategy+TAG): other settings"
    )
    defaults = LiteJob(dataset="ml-1m", data=DataConfig(kcore=5, max_len=MAX_LEN))
    add_arguments(p, defaults)  # every setting of `tslrec lite`
    args = p.parse_args()
    job = from_namespace(defaults, args)
    for variant in args.variants.split(","):
        run = replace(
            job,
            train=replace(job.train, strategy=variant),
            out=f"{args.runs}/{Path(job.dataset).name}-{variant}{'+' + args.tag if args.tag else ''}-s{job.train.seed}",
        )
        record, _ = run_lite(run)
        if args.tag:  # a record per setting: the key (dataset, model, variant, seed, device) tells them apart
            record["variant"] = f"{variant}+{args.tag}"
        targets_seen = record["epochs_run"] * record["train_targets_per_epoch"]
        record["budget"] = (
            f"{record['steps']} steps x {job.train.batch_size} rows = {record['epochs_run']} epochs of "
            f"'{variant}' rows (~{targets_seen:.0f} next-item targets); "
            f"{'capped by --max-steps' if job.train.max_steps else 'epochs / early stopping'}"
        )
        record["timings"] = {k: record[k] for k in ("train_seconds", "seconds_to_best", "wall_seconds")}
        add(args.name or f"lite-{record['dataset']}", record)
        m = record["metrics"]
        print(
            f"{variant:8s}: "
            + "  ".join(f"{k} {m[k]:.4f}" for k in ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20"))
            + f"  ({record['budget']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
