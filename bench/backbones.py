"""Benchmark: the four ID backbones on a dataset under the paper protocol (leave-one-out, full ranking).

    python bench/backbones.py --dataset ml-1m --kcore 5 --max-len 200            # to convergence
    python bench/backbones.py --dataset ml-1m --kcore 5 --max-len 200 --epochs 3 --name backbones-ml-1m-cpu-timing
Writes bench/results/<name>.json (default backbones-<dataset>.json), one record per backbone x seed.
"""

from __future__ import annotations

import argparse
import time

import torch
from records import add

from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.batching import LeaveOneOutSplits
from tslrec.backbones.evaluation import EvalConfig
from tslrec.backbones.registry import BACKBONES, build_backbone
from tslrec.backbones.training import TrainConfig, evaluate_split, train
from tslrec.core.artifacts import resolve_device
from tslrec.pipelines.data import DataConfig, load_dataset
from tslrec.pipelines.train_job import run_record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--backbones", default=",".join(BACKBONES))
    p.add_argument("--seeds", default="42")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--patience", type=int, default=10)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--name", default=None, help="results file name (default backbones-<dataset>)")
    p.add_argument(
        "--timing-batches",
        type=int,
        default=0,
        help="only time this many training batches per backbone and extrapolate seconds per epoch (no metrics)",
    )
    args = p.parse_args()
    data_cfg = DataConfig(kcore=args.kcore, max_len=args.max_len)
    ds = load_dataset(args.dataset, data_cfg)
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, args.max_len)
    device = resolve_device(args.device)
    if args.timing_batches:
        return time_epochs(args, ds, splits, device)
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.backbones.split(","):
            start = time.perf_counter()
            torch.manual_seed(seed)
            model_cfg = BackboneConfig(
                num_items=ds.num_items, hidden=args.hidden, max_len=args.max_len, dropout=args.dropout
            )
            model = build_backbone(name, model_cfg)
            train_cfg = TrainConfig(
                epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, patience=args.patience, seed=seed
            )
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            result = train(model, splits, train_cfg, device, EvalConfig())
            rec = run_record(
                ds,
                name,
                "base",
                data_cfg,
                model_cfg,
                train_cfg,
                EvalConfig(),
                result,
                device,
                time.perf_counter() - start,
            )
            masked = evaluate_split(model, splits.test, EvalConfig(mask_history=True), device)
            rec["metrics_history_masked"] = {
                k: round(v, 6) for k, v in masked.metrics.items()
            }  # secondary protocol, labelled
            add(args.name or f"backbones-{ds.name}", rec)
            m = rec["metrics"]
            print(
                f"{name:8s} seed {seed}: HR@10 {m['HR@10']:.4f} NDCG@10 {m['NDCG@10']:.4f} "
                f"(history masked: HR@10 {masked.metrics['HR@10']:.4f} NDCG@10 {masked.metrics['NDCG@10']:.4f}) "
                f"best {rec['best_epoch']}/{rec['epochs']} {rec['seconds_per_epoch']}s/epoch",
                flush=True,
            )


def time_epochs(args: argparse.Namespace, ds, splits: LeaveOneOutSplits, device: torch.device) -> None:
    """Seconds per epoch from `--timing-batches` timed batches (after one warm-up), and peak memory.

    One process per call.
    """
    import resource

    n_batches = -(-len(splits.train_inputs) // args.batch_size)
    for name in args.backbones.split(","):
        torch.manual_seed(42)
        model = build_backbone(
            name, BackboneConfig(num_items=ds.num_items, hidden=args.hidden, max_len=args.max_len, dropout=args.dropout)
        ).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
        times = []
        for b in range(args.timing_batches + 1):
            idx = torch.randint(0, len(splits.train_inputs), (args.batch_size,))
            t0 = time.perf_counter()
            loss = model.loss(splits.train_inputs[idx].to(device), splits.train_targets[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if b:  # the first batch is warm-up
                times.append(time.perf_counter() - t0)
        per_batch = sum(times) / len(times)
        add(
            args.name or f"backbones-{ds.name}-cpu-timing",
            {
                "dataset": ds.name,
                "model": name,
                "variant": "base",
                "seed": 42,
                "device": str(device),
                "metrics": {},
                "seconds_per_batch": round(per_batch, 3),
                "batches_per_epoch": n_batches,
                "seconds_per_epoch": round(per_batch * n_batches, 1),
                "timed_batches": len(times),
                "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "threads": torch.get_num_threads(),
            },
        )
        print(f"{name:8s} {per_batch:.2f} s/batch -> {per_batch * n_batches:.0f} s/epoch on {device}", flush=True)


if __name__ == "__main__":
    main()
