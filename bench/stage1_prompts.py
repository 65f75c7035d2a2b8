"""Benchmark: stage-1 training prompts, random windows (--prompts windows) against the paper's last-N history
(--prompts history), read from finished runs: held-out MSE beside the no-LLM head, and the stage-2 category
agreement (Fig. 4 C1), which is what stage 2's one-item prompts depend on.

    tslrec stage1 --train-dir runs/ml-100k/stage0 --out runs/ml-100k-s1-history/stage1 --epochs 3 --seed 42 \
        --prompts history
    tslrec stage2 --stage1-dir runs/ml-100k-s1-history/stage1 --out runs/ml-100k-s1-history/stage2 --bf16
    python -m bench.stage1_prompts --dataset ml-100k --runs windows=runs/ml-100k,history=runs/ml-100k-s1-history
Each DIR holds stage1/ and stage2/ (a `tslrec run` folder does). Writes bench/results/stage1-prompts-<dataset>.json,
one record per run, with the tslrec commands that made it. `--what batching` records runs that differ in
`--batching` instead (stage1-batching-<dataset>.json), e.g. two one-thread runs side by side on one stage-0 table:
    tslrec stage1 --train-dir runs/bench-main-job/stage0 --out runs/s1-batching-length/stage1 --epochs 3 --seed 42
    tslrec stage1 ... --out runs/s1-batching-random/stage1 ... --batching random      (each followed by stage2)
    python -m bench.stage1_prompts --what batching --dataset ml-100k \
        --runs length=runs/s1-batching-length,random=runs/s1-batching-random
`--what llm` records runs that differ in `--llm` (stage1-llm-<dataset>.json): what a larger LLM costs; `--what head`
runs that differ in `--head-norm` (stage1-head-<dataset>.json); `--what text` runs with and without `--item-text`
(stage1-text-<dataset>.json); `--what packing` runs that differ in `--pack-tokens` (stage1-packing-<dataset>.json);
`--what epochs` runs that differ in `--epochs` (stage1-epochs-<dataset>.json); `--what default` a run with every
stage-1 and LLM setting at its default but the seed (stage1-default-<dataset>.json; any other setting is refused):
    tslrec stage1 --train-dir runs/ml-1m-cpu/stage0 --out runs/ml-1m-cpu/stage1 --seed 42     (then stage2)
    python -m bench.stage1_prompts --what default --dataset ml-1m --runs 4-epochs=runs/ml-1m-cpu
`--what budget` records runs that differ in any stage-1 settings, each labelled with what it changed, for the
frontier of held-out MSE against the whole stage's minutes (stage1-budget-<dataset>.json), e.g. on the main job's
stage-0 table, one run at a time on an otherwise idle machine:
    tslrec stage1 --train-dir runs/ml-100k/stage0 --out runs/s1-budget-lr3e-3/stage1 --lr 3e-3 --seed 42
    tslrec stage2 --stage1-dir runs/s1-budget-lr3e-3/stage1 --out runs/s1-budget-lr3e-3/stage2
    python -m bench.stage1_prompts --what budget --dataset ml-100k --runs lr3e-3=runs/s1-budget-lr3e-3
Every record gives stage 1's training speed as a fraction of the matmul peak of the precision the run used, on
its thread count, measured when the record is made (so make it on the machine the runs used, while it is idle):
see `bench.peak.stage1_training_speed`.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path

from bench.peak import stage1_training_speed
from bench.records import add
from tslrec.core.artifacts import read_json
from tslrec.core.settings import as_recorded_before
from tslrec.llm.loading import LLMConfig
from tslrec.stage1_reconstruct.config import Stage1Config

WHATS = ("prompts", "batching", "llm", "head", "text", "packing", "epochs", "default", "budget")  # what runs differ in
NOT_A_SETTING = {"seed"}  # what a `--what default` run may set


def changed_from_defaults(cfg: dict) -> list[str]:
    """The stage-1 and LLM settings a run's config.json holds at other than their defaults (the seed aside)."""
    recorded = {**as_recorded_before(Stage1Config()), **cfg["stage1"]}  # a field left out is at its `before` value
    changed = [f"stage1.{k}" for k, v in asdict(Stage1Config()).items() if k not in NOT_A_SETTING and recorded[k] != v]
    return changed + [f"llm.{k}" for k, v in asdict(LLMConfig()).items() if cfg["llm"].get(k) != v]


def _setting(cfg: dict, name: str) -> object:
    """The value of `name` ("stage1.lr", "llm.dtype") in a run's config.json (a left-out field: its `before`)."""
    section, _, key = name.partition(".")
    recorded = {**as_recorded_before(Stage1Config()), **cfg["stage1"]} if section == "stage1" else cfg[section]
    return recorded.get(key)


def record(dataset: str, what: str, label: str, folder: Path) -> dict:
    s1 = read_json(folder / "stage1" / "metrics.json", "stage-1 metrics")
    cfg = read_json(folder / "stage1" / "config.json", "stage-1 config")
    if what == "default" and (changed := changed_from_defaults(cfg)):
        where = folder / "stage1" / "config.json"
        print(f"{where}: not the default stage 1 ({', '.join(changed)}); use another --what", file=sys.stderr)
        raise SystemExit(2)
    s2 = read_json(folder / "stage2" / "manifest.json", "stage-2 manifest")["source"]
    m = s1["metrics"]
    agree = s2["category_agreement"]
    return {
        "dataset": dataset,
        "model": f"tslrec-stage1-{s2['llm']}",
        "variant": f"{what}-{label}",
        "seed": cfg.get("stage1", cfg).get("seed"),
        "device": f"cpu, {s1['timing'].get('cpu_capability', 'CPU not recorded')}, "
        f"{s1['timing'].get('torch_threads')} threads",
        "metrics": {
            "mse": m["mse"],
            "mse_mean_embedding": m["mse_mean_embedding"],
            "mse_ratio_to_mean_embedding": m["mse_ratio_to_mean_embedding"],
            "mse_global_mean": m["mse_global_mean"],
            "mse_untuned_llm": m.get("mse_untuned_llm"),  # the frozen LLM (its variant in untuned_llm_variant)
            "mse_val": m.get("mse_val"),  # the validation users': what a choice between runs may rest on
            "mse_mean_embedding_val": m.get("mse_mean_embedding_val"),
            "C1": agree["C1"],
            "C2": agree["C2"],
            "chance_top1": agree["chance_top1"],
        },
        "timings": {
            "stage1_train_seconds": round(s1["timing"]["train_seconds"], 1),
            "stage1_wall_seconds": round(s1["timing"]["wall_seconds"], 1),  # the whole stage, baselines included
            "stage1_train_tokens": s1["timing"]["train_tokens"],
            "steps": s1["steps"],
            "stage2_seconds": s2["extraction"]["seconds"],
            **stage1_training_speed(s1, cfg),
        },
        "config": cfg,
        "prompt_tokens": s1.get("prompt_tokens"),  # with item text: title tokens per item and what the cap cut
        "versions": s1.get("versions", {}),
        "commit": s1.get("versions", {}).get("tslrec_commit"),  # the code that trained the run, not this recorder's
        "runs": str(folder),
        "settings_changed": {k: _setting(cfg, k) for k in changed_from_defaults(cfg)},  # against today's defaults
        "untuned_llm_variant": m.get("untuned_llm_variant"),
        "note": "MSE on held-out users' last max_items items (the history prompt) for both; C1 on one-item prompts",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True)
    p.add_argument("--runs", required=True, help="label=DIR,... (DIR holds stage1/ and stage2/)")
    p.add_argument("--what", default="prompts", choices=WHATS, help="the setting the runs differ in")
    args = p.parse_args()
    for entry in args.runs.split(","):
        label, _, folder = entry.partition("=")
        rec = record(args.dataset, args.what, label, Path(folder))
        add(f"stage1-{args.what}-{args.dataset.lower()}", rec)  # file names are lower case, as the others
        m = rec["metrics"]
        print(
            f"{label}: held-out MSE {m['mse']:.6f} (no-LLM head {m['mse_mean_embedding']:.6f}), C1 {m['C1']:.3f} "
            f"(chance {m['chance_top1']:.3f})"
        )


if __name__ == "__main__":
    main()
