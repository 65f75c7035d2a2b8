"""Benchmark: stage 2 with the prompt prefix computed once (key/value cache) vs the full prompt per item.

    OMP_NUM_THREADS=1 python -m bench.stage2_prefix_cache --stage1-dir runs/ml-100k/stage1 --items 512 --precision bf16

Both passes run in this one process on the same items, alternating, so their ratio is measured
under the same load. Writes bench/results/stage2-prefix-cache.json: seconds per 1,000 items with
and without the cache, their ratio, how far the two outputs differ, and each pass's FLOP/s against
the matmul peak of the precision it used, measured in this process on its threads.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from bench.peak import body_parameters, peak_on_threads
from bench.records import add
from tslrec.core.artifacts import package_versions, resolve_device
from tslrec.core.precision import PRECISIONS, cpu_capability, precision_record, resolve_precision
from tslrec.pipelines.run_folders import load_train_folder, read_stage1_folder
from tslrec.stage1_reconstruct.model import ReconstructionModel
from tslrec.stage1_reconstruct.model_io import load_reconstruction_model


def timed(
    model: ReconstructionModel, items: torch.Tensor, args: argparse.Namespace, cache: bool
) -> tuple[float, torch.Tensor, torch.Tensor]:
    start = time.perf_counter()
    emb, probs = model.encode_items(
        items, batch_size=args.batch_size, precision=args.precision, progress=False, cache_prefix=cache
    )
    return time.perf_counter() - start, emb, probs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stage1-dir", required=True, help="a finished `tslrec stage1` folder")
    p.add_argument("--items", type=int, default=512, help="first N items of the catalogue")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2, help="timed passes of each kind, alternating")
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="as `tslrec stage2 --precision`")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    if args.items < 1 or args.batch_size < 1 or args.repeats < 1:
        p.error("--items, --batch-size and --repeats must be at least 1")
    stage1 = read_stage1_folder(args.stage1_dir)
    train = load_train_folder(stage1.train_dir)
    device = resolve_device(args.device)
    model, _ = load_reconstruction_model(stage1.folder, device)
    args.precision = precision = resolve_precision(args.precision, device)
    items = train.item_table[1 : args.items + 1].float()  # [n, D]
    timed(model, items[: args.batch_size], args, cache=True)  # warm-up
    seconds: dict[bool, list[float]] = {True: [], False: []}
    outputs: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}  # cache -> (emb [n, H], probs [n, K])
    for _ in range(args.repeats):
        for cache in (False, True):
            s, emb, probs = timed(model, items, args, cache)
            seconds[cache].append(s)
            outputs[cache] = (emb, probs)
    cached, full = outputs[True], outputs[False]
    per_1000 = {c: 1000 * min(v) / len(items) for c, v in seconds.items()}
    prompt = model.encoder.prompt
    positions = {False: prompt.num_text_tokens + 1, True: int(prompt.suffix_ids.numel()) + 1}  # LLM positions an item
    threads = torch.get_num_threads()
    # forward only: 2 x (the LLM body's parameters) FLOPs per position an item passes through (attention over the
    # prefix not counted), against the peak of the precision used, measured now on these threads
    body = body_parameters(json.dumps(stage1.config["llm"], sort_keys=True))
    gflops = {c: 2 * body * positions[c] * 1000 / per_1000[c] / 1e9 for c in per_1000}
    peak = peak_on_threads(precision, threads) if device.type == "cpu" else None
    record = {
        "dataset": train.dataset.name,
        "model": "tslrec-stage2",
        "variant": "prefix-cache-" + ("fp32" if precision == "float32" else precision),
        "seed": None,
        "device": f"{device}, {cpu_capability()}, {threads} thread{'s' if threads > 1 else ''}"
        if device.type == "cpu"
        else str(device),
        "metrics": {},
        "timings": {
            "seconds_per_1000_items_full_prompt": round(per_1000[False], 2),
            "seconds_per_1000_items_cached_prefix": round(per_1000[True], 2),
            "speedup": round(per_1000[False] / per_1000[True], 2),
            "items": len(items),
            "batch_size": args.batch_size,
            **precision_record(device, precision),
            "torch_threads": threads,
            "all_seconds": {"full_prompt": seconds[False], "cached_prefix": seconds[True]},
            "llm_body_parameters": body,
            "gflops_full_prompt": round(gflops[False], 1),
            "gflops_cached_prefix": round(gflops[True], 1),
            **(
                {
                    f"matmul_peak_gflops_{precision}": round(peak, 1),
                    "fraction_of_matmul_peak_full_prompt": round(gflops[False] / peak, 3),
                    "fraction_of_matmul_peak_cached_prefix": round(gflops[True] / peak, 3),
                }
                if peak
                else {}
            ),
        },
        "positions_per_item": {"full_prompt": positions[False], "cached_prefix": positions[True]},
        "max_abs_diff": {
            "embeddings": float((cached[0] - full[0]).abs().max()),
            "category_probs": float((cached[1] - full[1]).abs().max()),
        },
        "min_cosine_embeddings": float(torch.nn.functional.cosine_similarity(cached[0], full[0]).min()),
        "same_top_category": float((cached[1].argmax(1) == full[1].argmax(1)).float().mean()),
        "llm": stage1.config.get("llm", {}).get("name_or_path"),
        "stage1_dir": str(stage1.folder),
        "versions": package_versions(),
    }
    add("stage2-prefix-cache", record)
    t = record["timings"]
    print(
        f"{len(items)} items: full prompt {t['seconds_per_1000_items_full_prompt']} s / 1,000, cached prefix "
        f"{t['seconds_per_1000_items_cached_prefix']} s / 1,000 ({t['speedup']}x); max |diff| "
        f"{record['max_abs_diff']['embeddings']:.2e}, same top category {record['same_top_category']:.3f}; "
        f"{t['gflops_full_prompt']} and {t['gflops_cached_prefix']} GFLOP/s"
        + (f" of a {t[f'matmul_peak_gflops_{precision}']} GFLOP/s {precision} peak" if peak else "")
    )


if __name__ == "__main__":
    main()
