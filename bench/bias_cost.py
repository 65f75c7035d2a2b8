"""Benchmark: what the input-item bias costs per training epoch, side by side in one process.

    python -m bench.bias_cost --dataset ml-100k --max-len 50 --lr 2e-3 --epochs 4          # the main job's stage 0
    python -m bench.bias_cost --dataset ml-1m --kcore 5 --max-len 200 --heads 1 --dropout 0.1 --epochs 2

The same SASRec (every flag of `tslrec train` is accepted) trains `--epochs` epochs without early stopping,
without and with `--input-item-bias`, alternating `--repeats` times so that a busy machine slows both alike.
The ratio is of median epoch times. Whole runs to early stopping differ by more than this: with the bias a model
keeps improving for more epochs (a better model, not a slower epoch); `bench/results/input-item-bias-*.json`
holds those. Writes bench/results/bias-cost-<dataset>.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
from dataclasses import replace

import torch

from bench.records import add
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import train
from tslrec.core.precision import precision_record, resolved
from tslrec.core.settings import add_arguments, from_namespace
from tslrec.data import load_dataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.pipelines.train_job import TrainJob


def epoch_seconds(job: TrainJob, splits: LeaveOneOutSplits, num_items: int, device: torch.device) -> list[float]:
    """Training seconds of each epoch of one run of `job` (validation excluded)."""
    torch.manual_seed(job.train.seed)
    model = build_backbone(job.backbone, replace(job.model, num_items=num_items, max_len=job.data.max_len))
    result = train(model, splits, job.train, device, job.eval, progress=False)
    return [h["train_seconds"] for h in result.history]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, TrainJob(dataset="ml-100k"))
    p.add_argument("--repeats", type=int, default=2, help="runs of each kind, alternating")
    args = p.parse_args()
    job: TrainJob = from_namespace(TrainJob(dataset="ml-100k"), args)
    device = job.runtime.start()
    job = resolved(replace(job, train=replace(job.train, patience=job.train.epochs)), device)  # no early stop
    ds = load_dataset(job.dataset, job.data)
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, job.data.max_len)
    seconds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for bias in (False, True):
            run = replace(job, model=replace(job.model, input_item_bias=bias))
            seconds[bias] += epoch_seconds(run, splits, ds.num_items, device)
    median = {bias: statistics.median(s) for bias, s in seconds.items()}
    ratio = median[True] / median[False]
    add(
        f"bias-cost-{ds.name}",
        {
            "dataset": ds.name,
            "model": job.backbone,
            "variant": f"input-item-bias cost, max_len {job.data.max_len}, hidden {job.model.hidden}",
            "seed": job.train.seed,
            "device": f"{device}, {torch.get_num_threads()} threads",
            "metrics": {"epoch_time_ratio_with_bias": round(ratio, 3)},
            "timings": {
                "median_epoch_seconds_without": round(median[False], 3),
                "median_epoch_seconds_with": round(median[True], 3),
                "epoch_seconds_without": [round(s, 3) for s in seconds[False]],
                "epoch_seconds_with": [round(s, 3) for s in seconds[True]],
                "load_average_1min_at_end": round(os.getloadavg()[0], 2),  # other work on the machine slows both
                **precision_record(device, job.train.precision),
            },
            "config": {"data": vars(job.data), "model": vars(job.model), "train": vars(job.train)},
        },
    )
    with_s, without_s = median[True], median[False]
    print(f"{ds.name}: an epoch with the bias takes {ratio:.3f}x one without ({with_s:.2f} s vs {without_s:.2f} s)")


if __name__ == "__main__":
    main()
