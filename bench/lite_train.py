"""Benchmark: Lite-LLM4Rec under the paper protocol (leave-one-out, full ranking), one record per strategy.

    python bench/lite_train.py --dataset ml-1m --kcore 5                                   # to convergence
    OMP_NUM_THREADS=1 python bench/lite_train.py --dataset ml-1m --kcore 5 --max-steps 378 # a capped CPU run
Takes every option of `tslrec lite` (--llm, --item-llm, --finetune, --epochs, --lr, ...) plus
--variants and --name; writes bench/results/<name>.json (default lite-<dataset>.json) with
model "lite-llm4rec", variant = strategy, test metrics keyed Recall@10, Recall@20, NDCG@10, NDCG@20,
and the budget actually run (steps, epochs of training rows, targets seen) next to them.
"""
from __future__ import annotations

import argparse

from records import add

from tslrec.pipelines.lite_job import MAX_LEN, add_lite_options, execute
from tslrec.pipelines.options import add_data_options


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--variants", default="sampling,all", help="comma-separated strategies to run")
    p.add_argument("--name", default=None, help="results file name (default lite-<dataset>)")
    p.add_argument("--runs", default="runs/bench-lite", help="parent folder of the run outputs")
    add_data_options(p, max_len=MAX_LEN)
    add_lite_options(p)
    p.set_defaults(kcore=5)
    args = p.parse_args()
    for variant in args.variants.split(","):
        args.strategy = variant
        args.out = f"{args.runs}/{args.dataset}-{variant}-s{args.seed}"
        record, _ = execute(args)
        targets_seen = record["epochs_run"] * record["train_targets_per_epoch"]
        record["budget"] = (f"{record['steps']} steps x {args.batch_size} rows = {record['epochs_run']} epochs of "
                            f"'{variant}' rows (~{targets_seen:.0f} next-item targets); "
                            f"{'capped by --max-steps' if args.max_steps else 'epochs / early stopping'}")
        add(args.name or f"lite-{record['dataset']}", record)
        m = record["metrics"]
        print(f"{variant:8s}: " + "  ".join(f"{k} {m[k]:.4f}" for k in ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20"))
              + f"  ({record['budget']})", flush=True)


if __name__ == "__main__":
    main()
