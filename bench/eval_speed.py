"""Benchmark: seconds to rank every item for every ML-1M user (full ranking), the cost validation adds to each epoch.

    python -m bench.eval_speed                     # max_len 50 / hidden 64 and max_len 200 / hidden 128
Untrained SASRec (speed does not depend on the weights), validation split, float32 scores; the encoder in
float32 and under bf16 autocast (--eval-bf16). Best of --repeats runs after one warm-up. Writes
bench/results/eval-speed-ml-1m.json, one record per setting and precision.
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.records import add
from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import evaluate_split
from tslrec.core.precision import precision_record
from tslrec.data import DataConfig, load_dataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig

SETTINGS = ((50, 64), (200, 128))  # (max_len, hidden)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eval-batch-size", type=int, default=EvalConfig().batch_size)
    args = p.parse_args()
    device = torch.device("cpu")
    for max_len, hidden in SETTINGS:
        ds = load_dataset("ml-1m", DataConfig(kcore=5, max_len=max_len))
        splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, max_len)
        torch.manual_seed(0)
        model = build_backbone("sasrec", BackboneConfig(num_items=ds.num_items, hidden=hidden, max_len=max_len))
        for precision in ("float32", "bf16"):
            cfg = EvalConfig(batch_size=args.eval_batch_size, precision=precision)
            evaluate_split(model, splits.valid, cfg, device)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                evaluate_split(model, splits.valid, cfg, device)
                times.append(time.perf_counter() - t0)
            add(
                "eval-speed-ml-1m",
                {
                    "dataset": "ml-1m",
                    "model": "sasrec",
                    "variant": f"max_len {max_len}, hidden {hidden}, encoder {precision}",
                    "seed": 0,
                    "device": f"cpu, {torch.get_num_threads()} threads",
                    "metrics": {},
                    "timings": {
                        "seconds_best": round(min(times), 3),
                        "seconds_all": [round(t, 3) for t in times],
                        "users": len(splits.valid.targets),
                        "items": ds.num_items,
                        "eval_batch_size": cfg.batch_size,
                        **precision_record(device, precision),
                    },
                },
            )
            users = len(splits.valid.targets)
            print(f"max_len {max_len} hidden {hidden} {precision}: {min(times):.2f} s for {users} users")


if __name__ == "__main__":
    main()
