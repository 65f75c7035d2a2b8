"""`tslrec train`: train and evaluate one backbone on one dataset; write metrics, weights and the item table."""
from __future__ import annotations

import argparse
import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import torch

from tslrec.core.artifacts import (package_versions, resolve_device, save_tensors, use_deterministic_kernels,
                                        write_json)
from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.batching import LeaveOneOutSplits
from tslrec.backbones.evaluation import EvalConfig
from tslrec.backbones.item_embedding import FUSIONS
from tslrec.backbones.registry import BACKBONES, build_backbone
from tslrec.backbones.training import TrainConfig, TrainResult, train

from .data import DataConfig, SequenceDataset, load_dataset
from .options import add_data_options, data_config
from .side_information import SideInformation, add_side_information_options, load_side_information


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train and evaluate a backbone on item IDs (stage 0) "
                                     "or with stage-2 LLM embeddings (--fusion)")
    p.add_argument("--dataset", required=True, help="built-in name (ml-100k, ml-1m) or a path")
    p.add_argument("--backbone", default="sasrec", help=f"one of {', '.join(BACKBONES)}")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<backbone>[-<fusion>]-s<seed>)")
    p.add_argument("--fusion", choices=FUSIONS, default="base",
                   help="item representation: base (IDs), ci (IDs + k-means group), gate (TSLRec), or another ablation")
    add_side_information_options(p)
    add_data_options(p)
    add_model_options(p)
    add_train_options(p)
    p.add_argument("--export-item-embeddings", action="store_true",
                   help="also write item_embeddings.safetensors ([N+1, H], row 0 = padding) for stage 1")
    p.add_argument("--force", action="store_true",
                   help="start over: discard the checkpoint an unfinished run left in --out (a run with other "
                        "settings is refused without it)")
    p.set_defaults(func=run)


def add_model_options(p: argparse.ArgumentParser) -> None:
    d = BackboneConfig(num_items=1)
    p.add_argument("--hidden", type=int, default=d.hidden, help="embedding and state size")
    p.add_argument("--layers", type=int, default=d.num_layers, help="transformer / filter blocks")
    p.add_argument("--heads", type=int, default=d.num_heads, help="attention heads (sasrec)")
    p.add_argument("--dropout", type=float, default=d.dropout, help="dropout rate")


def add_train_options(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--epochs", type=int, default=d.epochs, help="maximum epochs")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="users per step")
    p.add_argument("--lr", type=float, default=d.lr, help="AdamW learning rate")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help="AdamW weight decay")
    p.add_argument("--loss", choices=["ce", "bce"], default=d.loss, help="ce: softmax over all items; bce: sampled negatives")
    p.add_argument("--patience", type=int, default=d.patience, help="early-stopping patience on validation NDCG@10")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast while training (evaluation stays float32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--mask-history", action="store_true", help="remove history items from the candidates (off in the papers)")
    p.add_argument("--sampled-negatives", type=int, default=0, help="rank against N sampled negatives instead of all items (labelled 'sampled')")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")


def backbone_config(args: argparse.Namespace, num_items: int) -> BackboneConfig:
    return BackboneConfig(num_items=num_items, hidden=args.hidden, max_len=args.max_len, num_layers=args.layers,
                          num_heads=args.heads, dropout=args.dropout)


def train_config(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                       loss=args.loss, patience=args.patience, seed=args.seed, bf16=args.bf16)


def eval_config(args: argparse.Namespace) -> EvalConfig:
    return EvalConfig(mask_history=args.mask_history, sampled_negatives=args.sampled_negatives)


def tensor_sha256(t: torch.Tensor | None) -> str | None:
    """Content hash of a tensor (dtype, shape and values), or None."""
    if t is None:
        return None
    t = t.detach().cpu().contiguous()
    h = hashlib.sha256(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def side_information_fingerprint(side: SideInformation) -> dict:
    """The fusion and the content of the files it reads (not their paths): what a checkpoint is tied to."""
    return {"fusion": asdict(side.fusion), "llm_table_sha256": tensor_sha256(side.llm_table),
            "clusters_sha256": tensor_sha256(side.clusters)}


def run_record(ds: SequenceDataset, backbone: str, variant: str, data_cfg: DataConfig, model_cfg: BackboneConfig,
               train_cfg: TrainConfig, eval_cfg: EvalConfig, result: TrainResult, device: torch.device,
               wall_seconds: float) -> dict:
    """The metrics.json / benchmark record of one training run."""
    return {
        "dataset": ds.name, "model": backbone, "variant": variant, "seed": train_cfg.seed,
        "protocol": result.test.protocol,
        "metrics": {k: round(v, 6) for k, v in result.test.metrics.items()},
        "valid_metrics": {k: round(v, 6) for k, v in result.valid.metrics.items()},
        "best_epoch": result.best_epoch, "epochs": result.epochs_run,
        "seconds_per_epoch": round(result.seconds_per_epoch, 2), "seconds_to_best": round(result.seconds_to_best, 1),
        "wall_seconds": round(wall_seconds, 1), "peak_memory_mb": round(result.peak_memory_mb, 1),
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dataset_info": {k: v for k, v in ds.summary().items() if k != "preprocessing"},
        "config": {"data": asdict(data_cfg), "model": asdict(model_cfg), "train": asdict(train_cfg), "eval": asdict(eval_cfg)},
        "versions": package_versions(),
        "history": result.history,
    }


def run(args: argparse.Namespace) -> None:
    start = time.perf_counter()
    data_cfg = data_config(args)
    ds = load_dataset(args.dataset, data_cfg)
    if args.backbone not in BACKBONES:  # fail before any work
        build_backbone(args.backbone, BackboneConfig(num_items=1))
    side = load_side_information(args.fusion, ds, args.item_embeddings, args.clusters, args.finetune_llm_table)
    variant = "" if side.variant == "base" else f"-{side.variant}"
    out = Path(args.out or f"runs/{ds.name}-{args.backbone}{variant}-s{args.seed}")
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)
    use_deterministic_kernels(device)
    model_cfg = backbone_config(args, ds.num_items)
    train_cfg, eval_cfg = train_config(args), eval_config(args)
    torch.manual_seed(train_cfg.seed)
    model = build_backbone(args.backbone, model_cfg, side.fusion, side.llm_table, side.clusters)
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, data_cfg.max_len)
    ckpt = out / "checkpoint.pt"
    settings = {"dataset": {"name": ds.name, "hash": ds.hash}, "DataConfig": asdict(data_cfg), "backbone": args.backbone,
                "side_information": side_information_fingerprint(side)}  # with the train/model/eval configs
    result = train(model, splits, train_cfg, device, eval_cfg, checkpoint=ckpt, progress=not args.no_progress,
                   settings=settings, force=getattr(args, "force", False))
    save_tensors(out / "model.safetensors", model.state_dict())
    save_tensors(out / "per_user_test.safetensors", result.test.per_user)
    if args.export_item_embeddings:
        save_tensors(out / "item_embeddings.safetensors", {"embeddings": model.item_embedding.table().detach().float()},
                     metadata={"dataset": ds.name, "dataset_hash": ds.hash, "backbone": args.backbone})
    record = run_record(ds, args.backbone, side.variant, data_cfg, model_cfg, train_cfg, eval_cfg, result, device,
                        time.perf_counter() - start)
    record["side_information"] = side.record()
    record["dataset_source"] = str(Path(args.dataset).resolve()) if Path(args.dataset).exists() else args.dataset
    write_json(out / "metrics.json", record)  # written last: its presence means the run is complete
    ckpt.unlink(missing_ok=True)
    print_result(record, out)


def print_result(record: dict, out: Path) -> None:
    m = record["metrics"]
    print(f"{record['model']} on {record['dataset']} ({record['protocol']}), best epoch {record['best_epoch']}/{record['epochs']}")
    print("test  " + "  ".join(f"{k} {m[k]:.4f}" for k in ("HR@5", "HR@10", "HR@20", "NDCG@5", "NDCG@10", "NDCG@20", "MRR@10") if k in m))
    print(f"wrote {out}/metrics.json")
