"""Benchmark: the TSLRec stage-2 fusion ablation (base / ci / gate on four backbones) and the cost of stage 2.

    # the paper's grid on ML-1M (needs a finished stage 1 on the same dataset and preprocessing)
    python bench/ablation.py --dataset ml-1m --kcore 5 --max-len 200 --stage1-dir runs/ml-1m/stage1 --seeds 3
    # reuse an export, smaller grid; anything after the known flags goes to `tslrec ablate` unchanged
    python bench/ablation.py --dataset ml-100k --item-embeddings runs/ml-100k/stage2 --stage1-dir runs/ml-100k/stage1 \
        --backbones sasrec --seeds 1 --epochs 3

Runs `tslrec stage2` (unless --item-embeddings is given) and `tslrec ablate` in-process, then writes
bench/results/<name>.json (default ablation-<dataset>.json): one record per cell (dataset, model,
variant, seed, test metrics, timings) plus one record for stage 2 itself (seconds per 1,000 items),
each with the command and commit. Re-running resumes the grid (finished cells are not retrained).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch
from records import add

from tslrec.core.artifacts import load_tensors, read_json, resolve_device
from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.batching import LeaveOneOutSplits
from tslrec.backbones.evaluation import EvalConfig
from tslrec.backbones.registry import build_backbone
from tslrec.backbones.training import evaluate_split
from tslrec.pipelines.ablation_grid import cell_dir, collect, make_grid
from tslrec.pipelines.ablation_report import summarize
from tslrec.pipelines.cli import main as cli_main
from tslrec.pipelines.data import SequenceDataset, load_dataset
from tslrec.pipelines.options import DataConfig
from tslrec.pipelines.side_information import load_side_information

DEFAULT_BACKBONES = "gru4rec,caser,sasrec,fmlprec"
DEFAULT_FUSIONS = "base,ci,gate"


def run_cli(argv: list[str]) -> None:
    print("tslrec " + " ".join(argv), flush=True)
    code = cli_main(argv)
    if code != 0:
        raise SystemExit(code)


def stage2_record(export: Path, dataset: str) -> dict | None:
    """The stage-2 timing the export's manifest recorded (None if another tool wrote it)."""
    manifest = read_json(export / "manifest.json", "embedding manifest")
    source = manifest.get("source", {})
    timing = source.get("extraction")
    if not timing:
        return None
    return {"dataset": dataset, "model": "tslrec-stage2", "variant": f"extract-{source.get('llm')}", "seed": None,
            "device": timing.get("device"), "metrics": {},
            "timings": {"seconds": timing["seconds"], "items": timing["items"],
                        "seconds_per_1000_items": timing["seconds_per_1000_items"], "batch_size": timing["batch_size"],
                        "bf16_autocast": timing["bf16_autocast"]},
            "llm": source.get("llm"), "llm_dtype": source.get("llm_dtype"), "k": source.get("k"),
            "pooling": source.get("pooling"), "category_agreement": source.get("category_agreement"),
            "stage1_dir": source.get("stage1_dir")}


def cell_record(record: dict, stage2: dict | None) -> dict:
    """A finished cell's metrics.json as a benchmark record."""
    keep = ("dataset", "model", "variant", "seed", "device", "protocol", "metrics", "valid_metrics", "best_epoch",
            "epochs", "dataset_info", "config", "side_information", "versions")
    rec = {k: record.get(k) for k in keep}
    rec["timings"] = {k: record.get(k) for k in ("seconds_per_epoch", "seconds_to_best", "wall_seconds", "peak_memory_mb")}
    if stage2 is not None:
        rec["timings"]["stage2_seconds_per_1000_items"] = stage2["timings"]["seconds_per_1000_items"]
    return rec


def history_masked_metrics(folder: Path, record: dict, ds: SequenceDataset, splits: LeaveOneOutSplits,
                           device: torch.device) -> dict:
    """The cell's chosen weights evaluated once more with the user's whole history before the target removed
    from the candidates (the Lite-LLM4Rec paper's protocol; a secondary protocol here, always labelled).
    The model is rebuilt from the files the cell itself recorded, with its own evaluation settings."""
    side_info = record["side_information"]
    fusion = side_info["fusion"]
    export = side_info.get("item_embeddings", {}).get("folder")
    clusters = side_info.get("clusters")
    clusters = None if clusters is None or clusters.endswith("(item_groups)") else clusters
    side = load_side_information(fusion["kind"], ds, export, clusters, fusion["finetune_llm_table"])
    model = build_backbone(record["model"], BackboneConfig(**record["config"]["model"]), side.fusion, side.llm_table,
                           side.clusters)
    model.load_state_dict(load_tensors(folder / "model.safetensors", "cell weights"))
    model.to(device)
    masked = evaluate_split(model, splits.test, EvalConfig(**{**record["config"]["eval"], "mask_history": True}), device)
    return {k: round(v, 6) for k, v in masked.metrics.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-1m")
    p.add_argument("--kcore", type=int, default=5)
    p.add_argument("--max-len", type=int, default=200)
    p.add_argument("--stage1-dir", default=None, help="finished `tslrec stage1` folder (group map; stage 2 input)")
    p.add_argument("--item-embeddings", default=None, help="existing `tslrec stage2` export (skips stage 2)")
    p.add_argument("--backbones", default=DEFAULT_BACKBONES)
    p.add_argument("--fusions", default=DEFAULT_FUSIONS)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--seed", type=int, default=42, help="first seed")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="grid folder (default runs/bench-ablation-<dataset>)")
    p.add_argument("--name", default=None, help="results file name (default ablation-<dataset>)")
    args, ablate_extra = p.parse_known_args()
    if args.item_embeddings is None and args.stage1_dir is None:
        p.error("pass --stage1-dir (stage 2 runs first) or --item-embeddings")
    stem = Path(args.dataset).stem
    out = Path(args.out or f"runs/bench-ablation-{stem}")
    export = Path(args.item_embeddings) if args.item_embeddings else out / "stage2"
    if args.item_embeddings is None and not (export / "manifest.json").is_file():
        run_cli(["stage2", "--stage1-dir", args.stage1_dir, "--out", str(export), "--device", args.device, "--no-progress"])
    stage2 = stage2_record(export, stem)
    stage1_dir = Path((stage2 or {}).get("stage1_dir") or args.stage1_dir or "")  # the stage 1 behind the export
    if stage2 is not None and (stage1_dir / "metrics.json").is_file():
        s1 = read_json(stage1_dir / "metrics.json", "stage 1 metrics")
        keep = ("mse", "mse_global_mean", "mse_ratio_to_global_mean", "mse_mean_embedding", "mse_untuned_llm")
        stage2["stage1"] = {"metrics": {k: s1["metrics"].get(k) for k in keep}, "steps": s1.get("steps"),
                            "users": s1.get("users"), "train_seconds": s1.get("timing", {}).get("train_seconds")}
    side = ["--item-embeddings", str(export)] + (["--stage1-dir", args.stage1_dir] if args.stage1_dir else [])
    run_cli(["ablate", "--dataset", args.dataset, "--kcore", str(args.kcore), "--max-len", str(args.max_len),
             "--backbones", args.backbones, "--fusions", args.fusions, "--seeds", str(args.seeds), "--seed", str(args.seed),
             "--device", args.device, "--out", str(out / "grid"), "--no-progress", *side, *ablate_extra])
    name = args.name or f"ablation-{stem}"
    if stage2 is not None:
        add(name, stage2)
    cells = make_grid(args.backbones.split(","), args.fusions.split(","), [args.seed + i for i in range(args.seeds)])
    finished = collect(out / "grid", cells)
    if not finished:
        raise SystemExit(f"no finished cells in {out / 'grid'}; nothing to record")
    first = finished[0].record
    ds = load_dataset(first["dataset_source"], DataConfig(**first["config"]["data"]))  # as the cells loaded it
    if ds.hash != first["dataset_info"]["hash"]:
        raise SystemExit(f"{args.dataset}: the data changed since the grid was trained (hash {ds.hash[:12]} vs "
                         f"{first['dataset_info']['hash'][:12]}); re-run the grid in a new --out")
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, first["config"]["data"]["max_len"])
    rows = {(row.backbone, row.fusion): row for row in summarize(finished)}
    for result in finished:
        rec = cell_record(result.record, stage2)
        row = rows[(result.cell.backbone, result.cell.fusion)]
        # the grid's tests against base, the same on every seed's record: Welch over per-seed means (the verdict)
        # and, secondary, the paired test over users on seed-averaged per-user metrics
        rec["vs_base"] = {m: {"test": t.name, "mean_diff": round(t.mean_diff, 6), "t": t.t, "p": t.p, "seeds": t.seeds,
                              "base_seeds": t.base_seeds, "verdict": t.verdict()} for m, t in row.tests.items()}
        rec["vs_base_paired_users"] = {m: {"mean_diff": round(t.mean_diff, 6), "t": round(t.t, 4), "p": t.p,
                                           "users": t.users} for m, t in row.user_tests.items()}
        rec["metrics_history_masked"] = history_masked_metrics(cell_dir(out / "grid", result.cell), result.record, ds,
                                                               splits, resolve_device(args.device))
        add(name, rec)
    print(f"wrote bench/results/{name}.json ({len(finished)} of {len(cells)} cells finished"
          + (f", stage 2 {stage2['timings']['seconds_per_1000_items']:.1f} s per 1,000 items)" if stage2 else ")"))


if __name__ == "__main__":
    main()
