"""Benchmark: where a stage-1 training step's time goes on this machine, against the matmul peak of its precision
measured in the same process.

    python -m bench.stage1_profile                           # the main job's stage 1 (ML-100K, SmolLM2), 1 thread
    python -m bench.stage1_profile --threads 2 --steps 6

Builds the stage-1 model of the config (`stages.stage1` of configs/ml-100k.yaml by default) on a random item
table of stage 0's width (the cost does not depend on its values), times `--steps` training micro-batches spread
over the first epoch (after an untimed one), then profiles the same steps and splits their CPU time by operator:
the LLM's matrix products (mm, addmm, bmm), attention, the other operators, and what no operator accounts for
(Python, autograd bookkeeping, the optimizer's loop). It also times a 1024 x 1024 matmul in float32 and in
bf16 on the same threads: what bf16 costs on this CPU. Writes bench/results/stage1-profile-<dataset>.json: the
step's FLOP/s (4 x the LLM body's parameters per real prompt position after the shared prefix, as a run's
train_tokens counts them) and the matrix products' own FLOP/s (as the profiler counts them), each as a share of
the peak.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from bench.peak import DTYPES, body_parameters, matmul_peak_gflops, peak_on_threads
from bench.records import add
from tslrec.core.precision import cpu_capability
from tslrec.data import load_dataset
from tslrec.pipelines.run_job import active_stages, load_config, stage_job
from tslrec.stage1_reconstruct.cost import Stage1Probe

ROOT = Path(__file__).resolve().parent.parent
MATMUL = ("aten::mm", "aten::addmm", "aten::bmm")
ATTENTION = "attention"  # any operator whose name holds it: SDPA and its backward


def kind(op: str) -> str:
    if op in MATMUL:
        return "matrix products"
    return "attention" if ATTENTION in op else "other operators"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "ml-100k.yaml")
    p.add_argument("--steps", type=int, default=4, help="micro-batches timed and profiled")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default=None, help="results file (default stage1-profile-<dataset>)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, [])
    jobs = {s.name: stage_job(s, cfg) for s in active_stages(cfg)}
    train, job = jobs["stage0"], jobs["stage1"]
    ds = load_dataset(str(cfg["dataset"]), train.data)
    table = np.random.default_rng(0).normal(size=(ds.num_items + 1, train.model.hidden)).astype(np.float32)
    probe = Stage1Probe(table, ds.train_sequences(), job.stage1, job.llm, "cpu")
    first, *batches = probe.sample(args.steps + 1)
    probe.train_step(first)  # warm-up
    tokens_before = probe.model.encoder.llm_tokens
    t0 = time.perf_counter()
    positions = sum(probe.train_step(users) for users in batches)
    wall = time.perf_counter() - t0
    real_tokens = probe.model.encoder.llm_tokens - tokens_before  # as a run's train_tokens counts them
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as prof:
        t0 = time.perf_counter()
        for users in batches:
            probe.train_step(users)
        profiled_wall = time.perf_counter() - t0
    seconds: dict[str, float] = defaultdict(float)
    matmul_flops = 0.0
    for e in prof.key_averages():
        seconds[kind(e.key)] += e.self_cpu_time_total / 1e6
        matmul_flops += e.flops if e.key in MATMUL else 0
    seconds["outside operators"] = max(0.0, profiled_wall - sum(seconds.values()))
    precision = probe.cfg.precision
    peak = peak_on_threads(precision, args.threads)
    peaks = {p: round(matmul_peak_gflops(DTYPES[p], n=1024, repeats=3), 1) for p in DTYPES}  # both, side by side
    step_gflops = 4 * body_parameters(json.dumps(asdict(job.llm), sort_keys=True)) * real_tokens / wall / 1e9
    matmul_gflops = matmul_flops / seconds["matrix products"] / 1e9
    shares = {k: round(v / profiled_wall, 3) for k, v in sorted(seconds.items(), key=lambda kv: -kv[1])}
    add(
        args.name or f"stage1-profile-{ds.name}",
        {
            "dataset": ds.name,
            "model": f"tslrec-stage1-{job.llm.name_or_path}",
            "variant": f"{args.config.stem}, {args.steps} micro-batches of {job.stage1.batch_size} users",
            "seed": job.stage1.seed,
            "device": f"cpu, {cpu_capability()}, {args.threads} thread{'s' if args.threads > 1 else ''}",
            "metrics": {},
            "timings": {
                "precision": precision,
                "cpu_capability": cpu_capability(),
                "threads": args.threads,
                "seconds_per_micro_batch": round(wall / len(batches), 3),
                "item_slots_per_micro_batch": positions / len(batches),  # the padded [B, T] item ids
                "real_tokens_per_micro_batch": real_tokens / len(batches),
                f"matmul_peak_gflops_{precision}": round(peak, 1),
                "step_gflops": round(step_gflops, 2),
                "step_fraction_of_peak": round(step_gflops / peak, 3),
                "matrix_product_gflops": round(matmul_gflops, 2),
                "matrix_product_fraction_of_peak": round(matmul_gflops / peak, 3),
                "share_of_profiled_time": shares,
                "profiled_over_timed": round(profiled_wall / wall, 3),
                "matmul_gflops_1024_by_precision": peaks,  # what bf16 costs here: emulated without AMX/AVX512-BF16
            },
        },
    )
    print(
        f"{wall / len(batches):.2f} s a micro-batch; {step_gflops:.1f} GFLOP/s, {step_gflops / peak:.0%} of the "
        f"{precision} peak ({peak:.1f}); matrix products {matmul_gflops:.1f} GFLOP/s; profiled time: {shares}"
    )


if __name__ == "__main__":
    main()
