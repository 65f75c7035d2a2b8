"""The matmul peak of this machine, measured in the benchmark's own process (speeds are given as a fraction)."""

from __future__ import annotations

import json
import time
from functools import cache

import torch

from tslrec.core.artifacts import torch_threads
from tslrec.llm.loading import LLMConfig, load_llm, transformer_body

DTYPES = {"bf16": torch.bfloat16, "float32": torch.float32}  # a run's resolved precision -> its matmul dtype


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of an n x n x n matmul in `dtype` on this CPU/GPU, measured now, on torch's current threads."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


@cache
def peak_on_threads(precision: str, threads: int) -> float:
    """The matmul peak of `precision` (bf16 or float32) on `threads` torch threads, measured now."""
    with torch_threads(threads):
        return matmul_peak_gflops(DTYPES[precision])


@cache
def body_parameters(llm_json: str) -> int:
    """Parameters of the LLM's transformer body that every token passes through (its token embeddings excluded);
    llm_json: the run's LLMConfig as JSON."""
    model, _ = load_llm(LLMConfig(**json.loads(llm_json)))
    body = transformer_body(model)
    return sum(p.numel() for p in body.parameters()) - body.get_input_embeddings().weight.numel()


def stage1_training_speed(metrics: dict, config: dict) -> dict:
    """Stage 1's training FLOP/s against the matmul peak of the precision it used, on its threads: 4 x (the LLM
    body's parameters) FLOPs per real prompt token (forward 2N, and 2N for the backward's input gradients through
    the frozen weights; attention scores, LoRA weight gradients and padding are not counted).
    metrics, config: the run's stage-1 metrics.json and config.json."""
    t = metrics["timing"]
    precision = config["stage1"].get("precision", "bf16")  # runs recorded before precision existed used bf16
    n = body_parameters(json.dumps(config["llm"], sort_keys=True))
    gflops = 4 * n * t["train_tokens"] / t["train_seconds"] / 1e9
    peak = peak_on_threads(precision if precision in DTYPES else "bf16", int(t["torch_threads"]))
    return {
        "llm_body_parameters": n,
        "tokens_per_second": round(t["train_tokens"] / t["train_seconds"], 1),
        "train_gflops": round(gflops, 1),
        "precision": precision,
        f"matmul_peak_gflops_{precision}": round(peak, 1),
        "fraction_of_matmul_peak": round(gflops / peak, 3),
    }
