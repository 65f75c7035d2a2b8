"""Benchmark: where the gap between unmasked and masked full ranking comes from, for trained backbones.

    python -m bench.unmasked_gap runs/bench-backbones-ml-1m-cpu/gru4rec-target-weights-s42 ...
    python -m bench.unmasked_gap --label max-len-50 runs/ml-1m-cpu/stage0
Each argument is a finished `tslrec train` folder. Its test split is ranked three ways, in float32:
  not masked        every item is a candidate (the protocol the done criteria and RecBole use)
  input masked      the items of the model's own input are not candidates (its last max_len items before the
                    target: the sequence it was given, so it could have learned not to repeat them)
  history masked    the user's whole history before the target is not a candidate
A target that also occurs earlier stays a candidate in every protocol. Each record counts the users who are a
hit at 10 with the history masked and a miss without: how many of them the input mask alone brings back (the
model scored items it was given above the target) and how many only the whole-history mask does (items older
than its input window), and the learned input-item bias where the model has one (`--input-item-bias`). Writes
bench/results/<name>.json (default unmasked-gap-<dataset>), one record per folder.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.records import add
from tslrec.backbones.training import evaluate_split
from tslrec.data.splits import EvalSplit, LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.pipelines.recommend_job import load_trained_model

K = 10


def input_masked(split: EvalSplit) -> EvalSplit:
    """The same split, with `seen` / `prior_len` narrowed to the model's input (so `mask_history` masks only it)."""
    return replace(split, seen=split.history, prior_len=split.lengths)


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 6) for k, v in metrics.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folders", nargs="+", type=Path, help="finished `tslrec train` output folders")
    p.add_argument("--label", default=None, help="the records' variant (default: the one each run recorded)")
    p.add_argument("--name", default=None, help="results file name (default unmasked-gap-<dataset>)")
    args = p.parse_args()
    torch.set_grad_enabled(False)
    for folder in args.folders:
        t0 = time.perf_counter()
        model, ds = load_trained_model(folder)
        record = json.loads((folder / "metrics.json").read_text())
        max_len = model.cfg.max_len
        test = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, max_len).test
        cfg, masked, cpu = EvalConfig(), EvalConfig(mask_history=True), torch.device("cpu")
        runs = {
            "not masked": evaluate_split(model, test, cfg, cpu),
            "input masked": evaluate_split(model, input_masked(test), masked, cpu),
            "history masked": evaluate_split(model, test, masked, cpu),
        }
        hit = {name: r.ranks <= K for name, r in runs.items()}  # [U] each
        lost = hit["history masked"] & ~hit["not masked"]  # hits that unmasking costs
        back_by_input = lost & hit["input masked"]
        rec = {
            "dataset": ds.name,
            "model": record["model"],
            "variant": args.label or record.get("variant", "base"),
            "seed": record["seed"],
            "metrics": rounded(runs["not masked"].metrics),
            "metrics_input_masked": rounded(runs["input masked"].metrics),
            "metrics_history_masked": rounded(runs["history masked"].metrics),
            "hits_lost_to_unmasking": {
                "k": K,
                "users": int(lost.sum()),
                "back_with_input_masked": int(back_by_input.sum()),
                "only_with_history_masked": int((lost & ~hit["input masked"]).sum()),
            },
            "users": len(test.targets),
            "users_longer_than_input": int((test.prior_len > max_len).sum()),
            "max_len": max_len,
            "input_item_bias": None if model.input_item_bias is None else round(float(model.input_item_bias), 4),
            "run": str(folder),
            "timings": {"seconds": round(time.perf_counter() - t0, 1), "threads": torch.get_num_threads()},
            "device": f"cpu, {torch.get_num_threads()} threads",
        }
        add(args.name or f"unmasked-gap-{ds.name}", rec)
        m = {n: r.metrics[f"HR@{K}"] for n, r in runs.items()}
        g = rec["hits_lost_to_unmasking"]
        print(
            f"{rec['model']} {rec['variant']} s{rec['seed']}: HR@{K} not masked {m['not masked']:.4f}, input masked "
            f"{m['input masked']:.4f}, history masked {m['history masked']:.4f}; {g['users']} hits lost to "
            f"unmasking, {g['back_with_input_masked']} back with the input masked",
            flush=True,
        )


if __name__ == "__main__":
    main()
