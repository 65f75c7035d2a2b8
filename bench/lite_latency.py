"""Benchmark: inference latency of Lite-LLM4Rec vs a generative LLM recommender, same LLM, same users.

    python bench/lite_latency.py --dataset ml-1m --kcore 5

Both methods rank items for batches of 32 users (their test-time histories, last 20 items):
- lite-llm4rec: one forward pass over one position per item (+ BOS), the head scores all N items, top-20;
- generative: the same LLM (LoRA, a few SFT steps so it writes item ids) reads the history as text
  (item titles) and beam search (20 beams, transformers generate) writes the top-20 item ids.
Latency only: both models are barely trained, which does not change their cost. Records the
milliseconds per batch of 32 users per method, the ratio, and the input length per user
(LLM positions for Lite vs prompt tokens for the generative model) -> bench/results/lite-latency.json.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from records import add

from tslrec.backbones.batching import pad_right
from tslrec.core.artifacts import package_versions
from tslrec.lite_llm4rec.generative import (
    GenerativeConfig,
    finetune_steps,
    generate_top_k,
    history_prompt,
    prompt_lengths,
)
from tslrec.lite_llm4rec.item_llm import ItemLLMConfig, item_vectors_for_dataset
from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.lora import add_lora
from tslrec.pipelines.data import DataConfig, load_dataset


def title(text: str) -> str:
    """'Title (Year)' from tslrec's 'Title (Year); genres: ...' item text."""
    return text.split("; genres:")[0]


def timed(fn, repeats: int, warm_up) -> tuple[list[float], object]:
    """Milliseconds of fn(1) .. fn(repeats), after one untimed warm_up() call; and the last output."""
    warm_up()
    times, out = [], None
    for b in range(1, repeats + 1):
        t0 = time.perf_counter()
        out = fn(b)
        times.append((time.perf_counter() - t0) * 1000)
    return times, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--llm", default="smollm2")
    p.add_argument("--item-llm", default="minilm")
    p.add_argument("--users", type=int, default=32, help="users per batch")
    p.add_argument("--max-history", type=int, default=20, help="most recent items per user, both methods")
    p.add_argument("--lite-batches", type=int, default=5, help="timed Lite batches")
    p.add_argument("--gen-batches", type=int, default=2, help="timed generative batches")
    p.add_argument("--gen-chunk", type=int, default=8, help="users per generate() call inside a batch (memory)")
    p.add_argument("--num-beams", type=int, default=20)
    p.add_argument("--sft-steps", type=int, default=8, help="LoRA SFT steps of the generative model")
    p.add_argument("--no-bf16", action="store_true", help="fp32 instead of bf16 autocast (both methods)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    bf16 = not args.no_bf16
    ds = load_dataset(args.dataset, DataConfig(kcore=args.kcore, max_len=args.max_history))
    rng = np.random.default_rng(args.seed)
    n_batches = max(args.lite_batches, args.gen_batches) + 1  # batch 0 warms up
    users = rng.choice(ds.num_users, size=n_batches * args.users, replace=False)
    histories = [ds.sequences[u][:-1][-args.max_history :] for u in users]  # test-time input: all but the test item
    batches = [histories[b * args.users : (b + 1) * args.users] for b in range(n_batches)]

    # ---- Lite-LLM4Rec: one forward pass, scores for all items
    vectors, _ = item_vectors_for_dataset(ds, ItemLLMConfig(name_or_path=args.item_llm))
    torch.manual_seed(args.seed)
    lite = build_lite_model(vectors, LiteConfig(), LLMConfig(name_or_path=args.llm)).eval()

    @torch.no_grad()
    def lite_batch(b: int) -> torch.Tensor:
        seq, _ = pad_right(batches[b], args.max_history)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            scores = lite.score(lite(seq))  # [32, N+1]
        return scores.topk(20, dim=1).indices  # [32, 20]

    lite_ms, lite_top = timed(lite_batch, args.lite_batches, lambda: lite_batch(0))
    lite_positions = [len(h) + lite.rec.num_prefix for h in histories]
    lite = None  # frees the Lite model before the generative one loads

    # ---- generative baseline: same LLM, history as text, beam search over item-id tokens
    llm, tok = load_llm(LLMConfig(name_or_path=args.llm), kind="causal_lm")
    lora = LiteConfig()
    llm = add_lora(llm, lora.lora_r, lora.lora_alpha, lora.lora_dropout, lora.lora_target_modules)
    gen_cfg = GenerativeConfig(max_history=args.max_history, num_beams=args.num_beams, top_k=min(20, args.num_beams))
    titles = [title(t) for t in ds.item_text]
    train_users = rng.choice(ds.num_users, size=256, replace=False)
    sft_prompts = [
        history_prompt(titles, list(ds.sequences[u][:-3]), gen_cfg) for u in train_users
    ]  # training items only
    sft_targets = [int(ds.sequences[u][-3]) for u in train_users]
    t0 = time.perf_counter()
    losses = finetune_steps(
        llm, tok, sft_prompts, sft_targets, steps=args.sft_steps, batch_size=4, lr=1e-3, seed=args.seed, bf16=bf16
    )
    sft_seconds = time.perf_counter() - t0
    prompts = [[history_prompt(titles, list(h), gen_cfg) for h in batch] for batch in batches]

    def gen_batch(b: int, users: int = args.users) -> list[list[int]]:
        out = []
        for s in range(0, users, args.gen_chunk):
            out += generate_top_k(
                llm, tok, prompts[b][s : min(s + args.gen_chunk, users)], ds.num_items, gen_cfg, bf16=bf16
            )
        return out

    gen_ms, gen_top = timed(gen_batch, args.gen_batches, lambda: gen_batch(0, users=args.gen_chunk))
    gen_tokens = [n for batch in prompts for n in prompt_lengths(tok, batch)]

    lite_mean, gen_mean = statistics.mean(lite_ms), statistics.mean(gen_ms)
    record = {
        "dataset": ds.name,
        "model": "lite-llm4rec-vs-generative",
        "variant": f"{args.llm}-beam{args.num_beams}",
        "seed": args.seed,
        "device": f"cpu ({torch.get_num_threads()} threads)",
        "users_per_batch": args.users,
        "ms_per_batch": {"lite-llm4rec": round(lite_mean, 1), f"generative-beam{args.num_beams}": round(gen_mean, 1)},
        "ms_per_batch_runs": {
            "lite-llm4rec": [round(t, 1) for t in lite_ms],
            f"generative-beam{args.num_beams}": [round(t, 1) for t in gen_ms],
        },
        "generative_over_lite": round(gen_mean / lite_mean, 1),
        "input_length_per_user": {
            "lite_positions_mean": round(statistics.mean(lite_positions), 2),
            "generative_prompt_tokens_mean": round(statistics.mean(gen_tokens), 2),
            "items_per_user_mean": round(statistics.mean(len(h) for h in histories), 2),
        },
        "generative_valid_ids_per_user": round(statistics.mean(len(r) for r in gen_top), 2),
        "lite_top20_shape": list(lite_top.shape),
        "settings": {
            "llm": args.llm,
            "item_llm": args.item_llm,
            "max_history": args.max_history,
            "num_beams": args.num_beams,
            "top_k": gen_cfg.top_k,
            "bf16_autocast": bf16,
            "gen_chunk_users": args.gen_chunk,
            "generative_sft_steps": args.sft_steps,
            "generative_sft_seconds": round(sft_seconds, 1),
            "generative_sft_losses": [round(x, 3) for x in losses],
            "lite_weights": "untrained adapter/head + fresh LoRA (latency does not depend on training)",
            "timing": "wall clock per batch after an untimed warm-up call; CPU shared with other jobs",
        },
        "versions": package_versions(),
    }
    add("lite-latency", record)
    print(
        f"{ds.name}: {args.users} users/batch, Lite {lite_mean:.0f} ms vs generative (beam {args.num_beams}) "
        f"{gen_mean:.0f} ms -> {gen_mean / lite_mean:.1f}x; input per user: {statistics.mean(lite_positions):.1f} "
        f"positions vs {statistics.mean(gen_tokens):.1f} tokens"
    )


if __name__ == "__main__":
    main()
