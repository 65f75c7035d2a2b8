"""Benchmark: inference latency of Lite-LLM4Rec vs generative LLM recommenders, same LLM, same users.

    OMP_NUM_THREADS=1 python -m bench.lite_latency --dataset ml-1m --kcore 5 --sft-steps 24   # CPU, 1 thread
    python -m bench.lite_latency --dataset ml-1m --kcore 5 --sft-steps 24 --device cuda        # GPU

Every method ranks the same batches of 32 users (their test-time histories, last 20 items), in one process: the same
LLM (float32 weights, LoRA of the same rank) at the same precision (`--precision auto`: bf16 autocast only where the
device computes it natively), the same torch threads, the same device.
A timed call goes from the users' item-id histories to their top-20 item ids on the host:
- lite-llm4rec: one forward pass over one position per item (+ BOS), the head scores all N items, top-20;
- generative-titles: the LLM (LoRA, a few SFT steps so that it writes item ids) reads the history as item titles
  and beam search (20 beams, transformers generate) writes the top-20 item ids;
- generative-ids: the same with the history written as item ids, the digits the model writes back (P5 / POD).
A generative batch goes through generate() in calls of `--gen-chunk` users (memory); its time is the whole batch's.
Latency only: the models are barely trained, which does not change their cost. One record per method -> (paper
Table 4) milliseconds per batch of 32 users: median, min, max over the timed batches; (paper Table 5) input length
per user: LLM positions for Lite, prompt tokens for the generative models; generative / Lite (medians), in
bench/results/lite-latency.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench import records
from tslrec.core.artifacts import package_versions, resolve_device
from tslrec.core.precision import PRECISIONS, autocast, precision_record, resolve_precision
from tslrec.data import DataConfig, SequenceDataset, load_dataset
from tslrec.data.splits import pad_right
from tslrec.lite_llm4rec.generative import (
    GenerativeConfig,
    finetune_steps,
    generate_top_k,
    history_prompt,
    item_ids_as_text,
    prompt_lengths,
)
from tslrec.lite_llm4rec.item_llm import ItemLLMConfig, item_vectors_for_dataset
from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.lora import add_lora

NAME = "lite-latency"
HISTORY_AS = ("titles", "ids")  # how a generative prompt writes the user's items -> variant generative-<rendering>

Batch = list[np.ndarray]  # one history (internal item ids, oldest first) per user
Ranker = Callable[[Batch], list[list[int]]]  # histories -> top-k item ids per user, on the host


@dataclass
class Measured:
    """One method's timings on the shared batches, and its input length per user."""

    variant: str
    ms: list[float]  # per timed batch
    input_lengths: list[int]  # per user of every sampled batch
    input_unit: str
    top: list[list[int]]  # the last timed batch's top-k per user
    settings: dict = field(default_factory=dict)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so that a wall-clock reading covers the work it times."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(rank: Ranker, warm_up: Batch, batches: list[Batch], device: torch.device) -> tuple[list[float], list]:
    """Milliseconds of rank(batch) per batch, after one untimed rank(warm_up); and the last batch's output."""
    rank(warm_up)
    times, out = [], []
    for batch in batches:
        synchronize(device)
        t0 = time.perf_counter()
        out = rank(batch)
        synchronize(device)
        times.append((time.perf_counter() - t0) * 1000)
    return times, out


def weight_dtypes(model: nn.Module) -> str:
    """The dtypes of a model's parameters, e.g. 'float32' (checked equal across the methods)."""
    return ",".join(sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()}))


def check_threads(threads: int) -> None:
    """Every method runs on the torch threads the benchmark started with."""
    if torch.get_num_threads() != threads:
        raise RuntimeError(f"torch threads changed from {threads} to {torch.get_num_threads()} during the benchmark")


def measure_lite(
    ds: SequenceDataset, batches: list[Batch], timed_batches: int, args: argparse.Namespace, device: torch.device
) -> Measured:
    """Lite-LLM4Rec: one forward pass per batch, the head scores all items, top-k."""
    vectors, _ = item_vectors_for_dataset(ds, ItemLLMConfig(name_or_path=args.item_llm), device=device)
    torch.manual_seed(args.seed)
    lite = build_lite_model(vectors, LiteConfig(), LLMConfig(name_or_path=args.llm), seed=args.seed)
    lite = lite.to(device).eval()

    @torch.no_grad()
    def rank(batch: Batch) -> list[list[int]]:
        seq, _ = pad_right(batch, args.max_history)
        with autocast(device, args.precision):
            scores = lite.score(lite(seq.to(device)))  # [U, N+1], column 0 (padding) = -inf
        return scores.topk(args.top_k, dim=1).indices.tolist()

    ms, top = timed(rank, batches[0], batches[1 : 1 + timed_batches], device)
    return Measured(
        variant="lite-llm4rec",
        ms=ms,
        input_lengths=[len(h) + lite.rec.num_prefix for b in batches for h in b],
        input_unit="LLM positions (one per item" + (", + BOS)" if lite.rec.num_prefix else ")"),
        top=top,
        settings={"weights": weight_dtypes(lite.rec), "lite_weights": "untrained adapter/head + fresh LoRA"},
    )


def history_items(ds: SequenceDataset, history_as: str) -> list[str]:
    """Each item as a generative prompt writes it: its title ('Toy Story (1995)') or its id ('1')."""
    return ds.item_titles() if history_as == "titles" else item_ids_as_text(ds.num_items)


def measure_generative(
    ds: SequenceDataset,
    history_as: str,
    batches: list[Batch],
    timed_batches: int,
    sft_users: np.ndarray,
    args: argparse.Namespace,
    device: torch.device,
) -> Measured:
    """A generative recommender on the same LLM: LoRA, a few SFT steps to write ids, then beam search per batch."""
    item_text = history_items(ds, history_as)
    cfg = GenerativeConfig(max_history=args.max_history, num_beams=args.num_beams, top_k=args.top_k)
    bf16 = args.precision == "bf16"
    llm, tok = load_llm(LLMConfig(name_or_path=args.llm), kind="causal_lm")
    lora = LiteConfig()  # the LoRA Lite gets
    torch.manual_seed(args.seed)
    llm = add_lora(llm, lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.lora_target_modules).to(device)

    # SFT on training items only: each user's last training item after the items before it
    prompts = [history_prompt(item_text, list(ds.sequences[u][:-3]), cfg) for u in sft_users]
    targets = [int(ds.sequences[u][-3]) for u in sft_users]
    t0 = time.perf_counter()
    losses = finetune_steps(
        llm, tok, prompts, targets, args.sft_steps, batch_size=4, lr=1e-3, seed=args.seed, bf16=bf16
    )
    sft_seconds = time.perf_counter() - t0

    def rank(batch: Batch) -> list[list[int]]:
        users = [history_prompt(item_text, list(h), cfg) for h in batch]
        out: list[list[int]] = []
        for s in range(0, len(users), args.gen_chunk):
            out += generate_top_k(llm, tok, users[s : s + args.gen_chunk], ds.num_items, cfg, bf16=bf16)
        return out

    ms, top = timed(rank, batches[0][: args.gen_chunk], batches[1 : 1 + timed_batches], device)
    every_prompt = [history_prompt(item_text, list(h), cfg) for b in batches for h in b]
    return Measured(
        variant=f"generative-{history_as}",
        ms=ms,
        input_lengths=prompt_lengths(tok, every_prompt),
        input_unit="prompt tokens",
        top=top,
        settings={
            "weights": weight_dtypes(llm),
            "history_as": history_as,
            "num_beams": args.num_beams,
            "gen_chunk_users": args.gen_chunk,
            "example_prompt": every_prompt[0],
            "sft_steps": args.sft_steps,
            "sft_seconds": round(sft_seconds, 1),
            "sft_losses": [round(x, 3) for x in losses],
        },
    )


def ms_summary(ms: list[float], users: int) -> dict:
    """Milliseconds per batch of `users` users: median, min, max, number of timed batches, every batch."""
    return {
        "ms_per_batch_median": round(statistics.median(ms), 1),
        "ms_per_batch_min": round(min(ms), 1),
        "ms_per_batch_max": round(max(ms), 1),
        "batches": len(ms),
        "users_per_batch": users,
        "ms_per_batch_all": [round(t, 1) for t in ms],
    }


def to_record(
    m: Measured, lite: Measured, ds: SequenceDataset, device: str, shared: dict, args: argparse.Namespace
) -> dict:
    """One method's record: input length per user (metrics), ms per batch (timings), settings."""
    metrics = {
        "input_length_per_user": round(statistics.mean(m.input_lengths), 2),
        "items_per_user": shared["items_per_user"],
        "ranked_per_user": round(statistics.mean(len(r) for r in m.top), 2),  # valid distinct ids, <= top_k
    }
    timings = ms_summary(m.ms, args.users)
    if m is not lite:  # both medians over the same batches (1..n of this method's n), which both methods timed
        timings["over_lite"] = round(statistics.median(m.ms) / statistics.median(lite.ms[: len(m.ms)]), 1)
        timings["over_lite_batches"] = len(m.ms)
    return {
        "dataset": ds.name,
        "model": args.llm,
        "variant": m.variant,
        "seed": args.seed,
        "device": device,
        "metrics": metrics,
        "timings": timings,
        "settings": {**shared["settings"], "input_unit": m.input_unit, **m.settings},
        "versions": package_versions(),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--llm", default="smollm2", help="the LLM of every method")
    p.add_argument("--item-llm", default="minilm", help="Lite's item LLM (item vectors are computed before timing)")
    p.add_argument("--users", type=int, default=32, help="users per batch, every method")
    p.add_argument("--max-history", type=int, default=20, help="most recent items per user, every method")
    p.add_argument("--top-k", type=int, default=20, help="items ranked per user, every method (<= --num-beams)")
    p.add_argument("--lite-batches", type=int, default=5, help="timed Lite batches")
    p.add_argument("--gen-batches", type=int, default=2, help="timed batches per generative method (Lite's first)")
    p.add_argument("--gen-chunk", type=int, default=8, help="users per generate() call inside a batch (memory)")
    p.add_argument("--num-beams", type=int, default=20)
    p.add_argument("--generative", nargs="+", choices=HISTORY_AS, default=list(HISTORY_AS), help="history as")
    p.add_argument("--sft-steps", type=int, default=8, help="LoRA SFT steps of each generative model")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="every method's: auto = bf16 autocast only where the device computes it natively, float32 elsewhere",
    )
    p.add_argument("--device", default="auto", help="auto (cuda if available, else cpu), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's, OMP_NUM_THREADS)")
    p.add_argument("--results", default=str(records.RESULTS), help="results folder (another one for smoke runs)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    args.top_k = min(args.top_k, args.num_beams)  # beam search returns at most num_beams sequences
    records.RESULTS = Path(args.results)
    device = resolve_device(args.device)
    args.precision = resolve_precision(args.precision, device)
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    where = f"{torch.cuda.get_device_name(device)}, " if device.type == "cuda" else ""
    device_name = f"{device.type} ({where}{threads} threads)"

    ds = load_dataset(args.dataset, DataConfig(kcore=args.kcore, max_len=args.max_history))
    rng = np.random.default_rng(args.seed)
    n_batches = max(args.lite_batches, args.gen_batches) + 1  # batch 0 warms up
    users = rng.choice(ds.num_users, size=n_batches * args.users, replace=False)
    sft_users = rng.choice(ds.num_users, size=256, replace=False)  # the same for each generative method
    histories = [ds.sequences[u][:-1][-args.max_history :] for u in users]  # test-time input: all but the test item
    batches = [histories[b * args.users : (b + 1) * args.users] for b in range(n_batches)]
    shared = {
        "items_per_user": round(statistics.mean(len(h) for h in histories), 2),
        "settings": {
            "llm": args.llm,
            "item_llm": args.item_llm,
            "max_history": args.max_history,
            "top_k": args.top_k,
            **precision_record(device, args.precision),
            "threads": threads,
            "timed_batches": "batches 1..n of the same sampled users for every method (batch 0 warms up)",
            "timing": "wall clock per batch of users, histories to top-k ids on the host (device synchronized)",
        },
    }

    lite = measure_lite(ds, batches, args.lite_batches, args, device)
    measured = [lite]
    check_threads(threads)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    for history_as in args.generative:
        measured.append(measure_generative(ds, history_as, batches, args.gen_batches, sft_users, args, device))
        check_threads(threads)
    weights = {m.settings["weights"] for m in measured}
    if len(weights) != 1:
        raise RuntimeError(f"the methods ran with different weight dtypes: {weights}")

    for m in measured:
        rec = to_record(m, lite, ds, device_name, shared, args)
        records.add(NAME, rec)
        ratio = f", {rec['timings']['over_lite']}x Lite" if "over_lite" in rec["timings"] else ""
        print(
            f"{ds.name} {device_name} {m.variant}: {rec['timings']['ms_per_batch_median']:.0f} ms per batch of "
            f"{args.users} users (median of {len(m.ms)}){ratio}; {rec['metrics']['input_length_per_user']} "
            f"{m.input_unit} per user"
        )
    print(f"-> {records.RESULTS / NAME}.json")


if __name__ == "__main__":
    main()
