"""Benchmark: TSLRec stage 1 (user-level SFT) and its cost against instance-level SFT.

    python -m bench.stage1 --dataset ml-100k                      # trains SASRec first if --train-dir is not given
    python -m bench.stage1 --train-dir runs/ml-100k-sasrec-s42 --seeds 0,1,2
Writes bench/results/stage1-<dataset>.json (held-out-user MSE vs the global-mean and
untuned-LLM baselines, timings) and bench/results/sft-efficiency.json (seconds per epoch,
LLM passes and tokens of user-level vs instance-level SFT, same data, model and batch size).
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from bench.records import add
from tslrec.core.artifacts import read_json
from tslrec.core.settings import add_arguments, from_namespace
from tslrec.llm.loading import LLMConfig
from tslrec.pipelines.options import TrainingRuntime
from tslrec.pipelines.stage1_job import load_train_run
from tslrec.pipelines.train_job import TrainJob, train_backbone
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.instance_level import measure_sft_cost
from tslrec.stage1_reconstruct.training import train_stage1


@dataclass
class BenchStage1:
    """The stage-1 settings this benchmark takes (seeds come from --seeds)."""

    stage1: Stage1Config = field(default_factory=Stage1Config)
    llm: LLMConfig = field(default_factory=LLMConfig)


def ensure_train_dir(args: argparse.Namespace) -> Path:
    """The `tslrec train` folder to start from; trains SASRec (exporting its item table) if needed."""
    if args.train_dir:
        return Path(args.train_dir)
    folder = Path(f"runs/{Path(args.dataset).name}-sasrec-s42")
    if not (folder / "item_embeddings.safetensors").is_file() or not (folder / "metrics.json").is_file():
        train_backbone(
            TrainJob(
                dataset=args.dataset,
                backbone="sasrec",
                out=str(folder),
                export_item_embeddings=True,
                runtime=TrainingRuntime(progress=False),
            )
        )
    return folder


def device_name(device: str) -> str:
    if device != "cpu" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu ({torch.get_num_threads()} threads, {os.cpu_count()} cores)"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--dataset", default="ml-100k", help="dataset name (used when --train-dir is not given)")
    p.add_argument("--train-dir", default=None, help="existing `tslrec train --export-item-embeddings` folder")
    p.add_argument("--seeds", default="0", help="comma-separated seeds of stage 1 runs ('' = cost comparison only)")
    defaults = BenchStage1()
    add_arguments(p, defaults)  # every Stage1Config and LLMConfig setting, as `tslrec stage1` spells it
    p.add_argument("--cost-steps", type=int, default=5, help="timed optimizer steps per paradigm (0 = skip)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out-root", default="runs/bench-stage1")
    args = p.parse_args()
    settings = from_namespace(defaults, args)

    train_dir = ensure_train_dir(args)
    table, train_sequences, facts = load_train_run(train_dir, None if args.train_dir else args.dataset)
    dataset = facts["dataset"]
    llm_cfg = settings.llm
    for seed in (int(s) for s in args.seeds.split(",") if s.strip()):
        cfg = replace(settings.stage1, seed=seed)
        out = Path(args.out_root) / f"{dataset}-k{cfg.k}-n{cfg.max_items}-s{seed}"
        shutil.rmtree(out, ignore_errors=True)  # a benchmark always trains from scratch
        load_before = os.getloadavg()  # timings are only comparable on an otherwise idle machine
        start = time.perf_counter()
        res = train_stage1(table.numpy(), train_sequences, out, cfg, llm_cfg, device=args.device, run_info=facts)
        wall = time.perf_counter() - start
        m, t = res["metrics"], res["timing"]
        add(
            f"stage1-{dataset}",
            {
                "dataset": dataset,
                "model": llm_cfg.name_or_path,
                "variant": f"user-level LoRA r{cfg.lora_r}, K={cfg.k}, N={cfg.max_items}, {cfg.epochs} epochs",
                "seed": seed,
                "device": device_name(args.device),
                "metrics": {
                    "mse": m["mse"],
                    "mse_global_mean": m["mse_global_mean"],
                    "mse_untuned_llm": m["mse_untuned_llm"],
                    "mse_mean_embedding": m["mse_mean_embedding"],
                    "mse_ratio_to_global_mean": m["mse_ratio_to_global_mean"],
                    "mse_ratio_to_mean_embedding": m["mse"] / m["mse_mean_embedding"],
                    "reported_on": m["reported_on"],
                    "mse_val": m["mse_val"],
                },
                "untuned_llm_variant": m["untuned_llm_variant"],
                "load_average_before": load_before,
                "load_average_after": os.getloadavg(),
                "timings": {
                    "wall_clock_minutes": wall / 60,
                    "train_seconds": t["train_seconds"],
                    "seconds_per_epoch": t["seconds_per_epoch"],
                    "tokens_per_second": t["tokens_per_second"],
                    "llm_passes": t["train_llm_passes"],
                    "untuned_llm_seconds": t["untuned_llm_seconds"],
                },
                "steps": res["steps"],
                "epochs_run": res["epochs_run"],
                "best_step": res["best_step"],
                "users": res["users"],
                "groups": res["groups"],
                "train_dir": str(train_dir),
                "backbone": facts.get("backbone"),
                "config": read_json(out / "config.json")["stage1"],
                "versions": res["versions"],
            },
        )
        print(
            f"seed {seed}: tuned-LLM MSE {m['mse']:.6f}; no-LLM head on the mean item embedding "
            f"{m['mse_mean_embedding']:.6f} (LLM / head {m['mse'] / m['mse_mean_embedding']:.3f}); global mean "
            f"{m['mse_global_mean']:.6f} (ratio {m['mse_ratio_to_global_mean']:.3f}); "
            f"untuned LLM {m['mse_untuned_llm']}; "
            f"{wall / 60:.1f} min"
        )

    if args.cost_steps > 0:
        cfg = settings.stage1
        cost = measure_sft_cost(table.numpy(), train_sequences, cfg, llm_cfg, steps=args.cost_steps, device=args.device)
        add(
            "sft-efficiency",
            {
                "dataset": dataset,
                "model": llm_cfg.name_or_path,
                "variant": f"batch {cfg.batch_size}, N={cfg.max_items}",
                "seed": cfg.seed,
                "device": device_name(args.device),
                **cost,
            },
        )
        r = cost["ratio_instance_over_user"]
        print(
            f"instance-level / user-level per epoch: {r['passes']:.1f}x passes, {r['tokens']:.1f}x tokens, "
            f"{r['seconds_per_epoch']:.1f}x seconds (extrapolated)"
        )


if __name__ == "__main__":
    main()
