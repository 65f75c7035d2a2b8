"""`tslrec lite`: Lite-LLM4Rec on any dataset with item text: item vectors -> train -> evaluate -> export.

Writes to --out:
    item_vectors/          the item vectors the model used, in the tslrec item-embedding export format
    model/                 config.json, weights.safetensors, lora/ or llm/ (see lite_llm4rec.model_io)
    per_user_test.safetensors   per-user test metric vectors (for paired tests)
    metrics.json           test metrics (full ranking, leave-one-out), validation metrics, timing, config (last)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from tslrec.core.artifacts import package_versions, resolve_device, save_tensors, use_deterministic_kernels, \
    write_json
from tslrec.backbones.batching import LeaveOneOutSplits
from tslrec.lite_llm4rec.item_llm import ItemLLMConfig, item_vectors_for_dataset
from tslrec.lite_llm4rec.model import FINETUNE, LiteConfig, build_lite_model
from tslrec.lite_llm4rec.model_io import save_lite_model
from tslrec.lite_llm4rec.segments import STRATEGIES
from tslrec.lite_llm4rec.training import LiteTrainConfig, LiteTrainResult, train_lite
from tslrec.llm.loading import DTYPES, LLMConfig
from tslrec.stage2_augment.embedding_file import save_item_embeddings

from .data import load_dataset
from .options import add_data_options, data_config
from .train_job import eval_config

MAX_LEN = 20  # the paper's sampling segments hold 20 input items, so the model sees at most 20


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lite", help="Lite-LLM4Rec: Item-LLM vectors -> Recommendation LLM -> item projection head")
    p.add_argument("--dataset", required=True, help="built-in name (ml-100k, ml-1m) or a path; the items need text")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-lite-<strategy>-s<seed>)")
    add_data_options(p, max_len=MAX_LEN)
    add_lite_options(p)
    p.set_defaults(func=run)


def add_lite_options(p: argparse.ArgumentParser) -> None:
    item, lite, train = ItemLLMConfig(), LiteConfig(), LiteTrainConfig()
    g = p.add_argument_group("Item LLM")
    g.add_argument("--item-llm", default=item.name_or_path, help="text model: minilm, smollm2, a folder, .gguf or hub id")
    g.add_argument("--item-max-tokens", type=int, default=item.max_tokens, help="item text truncated to this many tokens")
    g.add_argument("--item-vectors", default=None,
                   help="export folder of item vectors: used if present (must match the dataset), else written there "
                        "(default: a cache folder keyed by dataset, text and model)")
    g = p.add_argument_group("Recommendation LLM")
    g.add_argument("--llm", default="smollm2", help="built-in name (smollm2, minilm), local folder, .gguf file or hub id")
    g.add_argument("--llm-layers", type=int, default=None,
                   help="keep only the first N transformer blocks of --llm (default: all; fewer = faster on a CPU)")
    g.add_argument("--finetune", default=lite.finetune, choices=list(FINETUNE), help="LoRA adapters or every LLM weight")
    g.add_argument("--lora-r", type=int, default=lite.lora_r, help="LoRA rank")
    g.add_argument("--lora-alpha", type=int, default=lite.lora_alpha, help="LoRA alpha")
    g.add_argument("--lora-dropout", type=float, default=lite.lora_dropout, help="LoRA dropout")
    g.add_argument("--lora-target-modules", default=None, help="comma-separated module names (default: peft's for the model type)")
    g.add_argument("--no-bos", action="store_true", help="do not put the tokenizer's BOS token before the items")
    g.add_argument("--tune-item-vectors", action="store_true", help="also train the item vectors with the recommendation loss")
    g.add_argument("--dtype", default="float32", choices=list(DTYPES), help="LLM weight dtype")
    g.add_argument("--gradient-checkpointing", action="store_true", help="less memory, ~35%% more time")
    g.add_argument("--trust-remote-code", action="store_true", help="allow model code from a hub repository (both LLMs)")
    g = p.add_argument_group("training and evaluation")
    g.add_argument("--strategy", default=train.strategy, choices=list(STRATEGIES),
                   help="sampling: one random segment per user per epoch; all: every training prefix")
    g.add_argument("--segment-len", type=int, default=train.segment_len, help="sampling: most items per segment (inputs + target)")
    g.add_argument("--epochs", type=int, default=train.epochs, help="passes over the training rows")
    g.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps (quick runs)")
    g.add_argument("--batch-size", type=int, default=train.batch_size, help="training rows per step")
    g.add_argument("--eval-batch-size", type=int, default=train.eval_batch_size, help="users per evaluation batch")
    g.add_argument("--lr", type=float, default=train.lr, help="learning rate of the LLM weights")
    g.add_argument("--head-lr", type=float, default=train.head_lr, help="learning rate of adapter, head, item vectors")
    g.add_argument("--weight-decay", type=float, default=train.weight_decay, help="AdamW weight decay")
    g.add_argument("--eval-every", type=int, default=None, help="validate every N steps (default: each epoch)")
    g.add_argument("--patience", type=int, default=train.patience, help="validations without improvement before stopping")
    g.add_argument("--no-bf16", action="store_true", help="disable bfloat16 autocast")
    g.add_argument("--seed", type=int, default=train.seed, help="random seed")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    g.add_argument("--mask-history", action="store_true", help="remove history items from the candidates (off in the papers)")
    g.add_argument("--sampled-negatives", type=int, default=0, help="rank against N sampled negatives (labelled 'sampled')")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def configs(args: argparse.Namespace) -> tuple[ItemLLMConfig, LiteConfig, LLMConfig, LiteTrainConfig]:
    """The four configs from the command line, each validated (bad values -> InputError before any work)."""
    item = ItemLLMConfig(name_or_path=args.item_llm, max_tokens=args.item_max_tokens,
                         trust_remote_code=args.trust_remote_code).validate()
    targets = [m.strip() for m in args.lora_target_modules.split(",") if m.strip()] if args.lora_target_modules else None
    lite = LiteConfig(finetune=args.finetune, lora_r=args.lora_r, lora_alpha=args.lora_alpha,
                      lora_dropout=args.lora_dropout, lora_target_modules=targets, add_bos=not args.no_bos,
                      tune_item_vectors=args.tune_item_vectors).validate()
    llm = LLMConfig(name_or_path=args.llm, dtype=args.dtype, gradient_checkpointing=args.gradient_checkpointing,
                    trust_remote_code=args.trust_remote_code, num_layers=args.llm_layers)
    train = LiteTrainConfig(strategy=args.strategy, segment_len=args.segment_len, epochs=args.epochs,
                            max_steps=args.max_steps, batch_size=args.batch_size, eval_batch_size=args.eval_batch_size,
                            lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay, bf16=not args.no_bf16,
                            eval_every=args.eval_every, patience=args.patience, seed=args.seed).validate()
    return item, lite, llm, train


def execute(args: argparse.Namespace) -> tuple[dict, Path]:
    """Run the whole job; returns (the metrics.json record, output folder)."""
    start = time.perf_counter()
    item_cfg, lite_cfg, llm_cfg, train_cfg = configs(args)
    data_cfg = data_config(args)
    eval_cfg = eval_config(args)
    ds = load_dataset(args.dataset, data_cfg)
    device = resolve_device(args.device)
    use_deterministic_kernels(device, warn_only=True)  # float cumsum (prefix means) has no deterministic CUDA kernel
    progress = not args.no_progress
    vectors, vector_info = item_vectors_for_dataset(ds, item_cfg, args.item_vectors, device, progress)
    out = Path(args.out or f"runs/{ds.name}-lite-{train_cfg.strategy}-s{train_cfg.seed}")
    out.mkdir(parents=True, exist_ok=True)
    config = {"data": asdict(data_cfg), "item_llm": asdict(item_cfg), "lite": asdict(lite_cfg), "llm": asdict(llm_cfg),
              "train": asdict(train_cfg), "eval": asdict(eval_cfg)}
    fingerprint = hashlib.sha256(json.dumps([config, ds.hash, vector_info["source"]], sort_keys=True,
                                            default=str).encode()).hexdigest()[:12]
    checkpoint = out / f"checkpoint-{fingerprint}.pt"  # a changed setting never resumes another run's state
    model = build_lite_model(vectors, lite_cfg, llm_cfg, seed=train_cfg.seed)
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, data_cfg.max_len)
    result = train_lite(model, ds.train_sequences(), splits, train_cfg, data_cfg.max_len, device, eval_cfg,
                        checkpoint=checkpoint, progress=progress)
    save_lite_model(model, out / "model", lite_cfg, llm_cfg)
    save_item_embeddings(out / "item_vectors", model.item_vectors, ds.item_ids, ds.name, ds.hash,
                         source={**vector_info["source"], "tuned_by_lite": lite_cfg.tune_item_vectors})
    save_tensors(out / "per_user_test.safetensors", result.test.per_user)
    record = run_record(ds, train_cfg, config, result, vector_info, device, time.perf_counter() - start)
    write_json(out / "metrics.json", record)  # written last: its presence means the run is complete
    checkpoint.unlink(missing_ok=True)
    return record, out


def run_record(ds, train_cfg: LiteTrainConfig, config: dict, result: LiteTrainResult, vector_info: dict,
               device: torch.device, wall_seconds: float) -> dict:
    """The metrics.json / benchmark record of one run."""
    return {
        "dataset": ds.name, "model": "lite-llm4rec", "variant": train_cfg.strategy, "seed": train_cfg.seed,
        "protocol": result.test.protocol,
        "metrics": {k: round(v, 6) for k, v in result.test.metrics.items()},
        "valid_metrics": {k: round(v, 6) for k, v in result.valid.metrics.items()},
        "best_step": result.best_step, "steps": result.steps, "epochs_run": result.epochs_run,
        "train_targets_per_epoch": result.train_targets_per_epoch,
        "seconds_to_best": round(result.seconds_to_best, 1), "train_seconds": round(result.train_seconds, 1),
        "positions_per_second": round(result.positions_per_second, 1), "wall_seconds": round(wall_seconds, 1),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "dataset_info": {k: v for k, v in ds.summary().items() if k != "preprocessing"},
        "item_vectors": vector_info,
        "config": config,
        "versions": package_versions(),
        "history": result.history,
    }


def run(args: argparse.Namespace) -> None:
    record, out = execute(args)
    m = record["metrics"]
    print(f"lite-llm4rec ({record['variant']}) on {record['dataset']} ({record['protocol']}), "
          f"best step {record['best_step']}/{record['steps']}")
    print("test  " + "  ".join(f"{k} {m[k]:.4f}" for k in ("Recall@10", "Recall@20", "NDCG@10", "NDCG@20") if k in m))
    print(f"wrote {out}/metrics.json")
