"""Stage 1 training loop: user-level SFT with LoRA, driven by accelerate.

One LLM pass per user per epoch. The same script runs on one CPU, one GPU or
`accelerate launch` on many GPUs: batches are sharded by the Accelerator, the model is
wrapped for DDP, and only the main process writes files.

Resuming: a checkpoint (trainable weights, optimizer, scheduler, counters, CPU and CUDA RNG) is
written every `checkpoint_every` optimizer steps and after each validation. Restarting with the
same output folder and settings continues from it; the data order of every epoch is a
function of (seed, epoch), so the run ends at the same total optimizer step count as an
uninterrupted one. Other settings (config.json: Stage1Config, LLMConfig, prompt, the item
table's contents, the dataset) are refused with an InputError naming the first changed one;
`force=True` (`--force`) starts over instead.

Determinism: everything random is seeded from `Stage1Config.seed` (k-means, user split, data
order, LoRA and head init, LoRA dropout), so two runs with the same settings give bitwise-identical
weights and metrics. The projection's init divides by a norm over the whole vocabulary, a parallel
sum whose order follows the thread count; it runs on one thread, and with that 1 and 2 threads gave
identical weights after 12 steps of SmolLM2 on ML-100K. A CPU with another instruction set (e.g.
AMX vs AVX-512 bfloat16 matrix kernels) or many more threads may still round bf16 products
differently: `torch.get_num_threads()` is recorded in metrics.json.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tslrec.core.artifacts import package_versions, read_json, save_tensors, write_json
from tslrec.core.errors import InputError

from tslrec.core.modules import load_trainable_state, trainable_state

from .checkpointing import check_same_config, config_fingerprint, find_checkpoint, load_checkpoint, save_checkpoint
from .config import Stage1Config
from .baselines import mean_embedding_baseline, untuned_head_baseline
from .data import Stage1Data, UserBatches, epoch_order, prepare_stage1_data
from .evaluation import evaluate_mse, reconstruction_loss
from .grouping import global_mean_mse
from tslrec.llm.loading import LLMConfig, load_llm
from .model import ReconstructionModel
from .model_io import CONFIG_FILE, build_reconstruction_model, save_reconstruction_model

CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.json"
GROUPS_FILE = "groups.safetensors"
LOG_FILE = "log.json"
BASELINE_CACHE = "baseline_untuned_head.json"
SUB_RUN = "untuned_head_proj"  # the head+proj baseline's own stage 1 run


def train_stage1(item_embeddings: np.ndarray, train_sequences: list[np.ndarray], out_dir: str | Path,
                 cfg: Stage1Config | None = None, llm_cfg: LLMConfig | None = None, device: str = "auto",
                 run_info: dict[str, Any] | None = None, on_step: Callable[[int], None] | None = None,
                 progress: bool = True, force: bool = False) -> dict[str, Any]:
    """Train stage 1 and write its artefacts to `out_dir`; return the metrics dict.

    item_embeddings: float32 [N+1, D] pretrained item table (row 0 = padding).
    train_sequences: per user, TRAINING item ids only (each user's sequence without the last two).
    run_info: extra facts recorded in config.json/metrics.json (dataset name, hash, source folder).
    on_step: called with the optimizer step count after every step (progress hooks, tests).
    Re-running with the same out_dir and settings resumes from the last checkpoint, or
    returns the saved metrics if the run had finished; with other settings it raises InputError.
    force: discard whatever an earlier run left in out_dir (checkpoint, metrics, cached baseline) and start over.
    """
    cfg = (cfg or Stage1Config()).validate()
    llm_cfg = llm_cfg or LLMConfig()
    out_dir = Path(out_dir)
    t_start = time.time()
    data = prepare_stage1_data(item_embeddings, train_sequences, cfg)
    config = {"stage1": cfg.to_dict(), "llm": dict(vars(llm_cfg)), "item_dim": int(data.item_embeddings.shape[1]),
              "num_items": int(data.item_embeddings.shape[0] - 1), "k": cfg.k, "prompt": {
                  "prefix": cfg.prefix(), "suffix": cfg.suffix_text}, "run": run_info or {},
              "item_table_sha256": hashlib.sha256(data.item_embeddings.numpy().tobytes()).hexdigest()}
    if not force:
        done = _finished_metrics(out_dir, config)
        if done is not None:
            return done
        _check_checkpoint(out_dir, config)  # before the LLM loads: a refused resume costs nothing

    from accelerate import Accelerator

    # mixed_precision="no": bf16 is Stage1Config.bf16's autocast alone, never an accelerate config file's default
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no")
    dev = accelerator.device
    main = accelerator.is_main_process
    if main:
        if force:
            _discard_run(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in out_dir.glob(f".{CHECKPOINT_DIR}.*"):  # temp folders of a killed save
            shutil.rmtree(stale, ignore_errors=True)
        saved = out_dir / CONFIG_FILE
        if saved.is_file() and config_fingerprint(read_json(saved, "stage 1 config")) != config_fingerprint(config):
            (out_dir / BASELINE_CACHE).unlink(missing_ok=True)  # computed under other settings
        write_json(out_dir / CONFIG_FILE, config)
        save_tensors(out_dir / GROUPS_FILE, {"item_group": torch.from_numpy(data.groups.item_group),
                                             "centroids": torch.from_numpy(data.groups.centroids),
                                             "user_targets": torch.from_numpy(data.targets),
                                             "train_users": torch.from_numpy(data.train_users),
                                             "val_users": torch.from_numpy(data.val_users),
                                             "test_users": torch.from_numpy(data.test_users)})
    accelerator.wait_for_everyone()  # no process reads the folder before the main one has cleaned it

    report_users = data.test_users if len(data.test_users) else data.val_users  # users the reported MSEs are on
    baselines = {"mse_global_mean": global_mean_mse(data.targets[data.train_users], data.targets[report_users]),
                 "mse_global_mean_val": global_mean_mse(data.targets[data.train_users], data.targets[data.val_users]),
                 **mean_embedding_baseline(data, cfg)}
    llm, tokenizer = load_llm(llm_cfg, kind="causal_lm")
    if cfg.untuned_baseline == "head":
        baselines.update(_cached(out_dir / BASELINE_CACHE, main, lambda: untuned_head_baseline(
            llm, tokenizer, data, cfg, dev, progress=progress and main)))

    torch.manual_seed(cfg.seed)
    model = build_reconstruction_model(llm, tokenizer, data.item_embeddings.shape[1], cfg, llm_cfg)
    sample = data.item_embeddings[1:][torch.randperm(data.item_embeddings.shape[0] - 1)[:2048]]
    model.encoder.match_token_scale(sample)
    with torch.no_grad():  # start at the global-mean prediction; the head's weights learn the deviations
        model.head.bias.copy_(torch.log(torch.from_numpy(data.targets[data.train_users]).mean(0).clamp(min=1e-8)))
    model.to(dev)
    table = data.item_embeddings.to(dev)  # [N+1, D]
    head_params = list(model.encoder.item_proj.parameters()) + list(model.head.parameters())
    head_ids = {id(p) for p in head_params}
    lora_params = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    groups = [{"params": head_params, "lr": cfg.head_lr}]
    if lora_params:
        groups.insert(0, {"params": lora_params, "lr": cfg.lr})
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    collate = UserBatches(data, cfg.max_items)

    def loader_for(epoch: int) -> DataLoader:
        """This epoch's batches. Its own generator keeps DataLoader from drawing on the global RNG,
        so a resumed run sees the same LoRA-dropout masks as an uninterrupted one."""
        return accelerator.prepare(DataLoader(epoch_order(data.train_users, cfg.seed, epoch), batch_size=cfg.batch_size,
                                              shuffle=False, collate_fn=collate,
                                              generator=torch.Generator().manual_seed(cfg.seed + epoch)))

    batches_per_epoch = len(loader_for(0))
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    from transformers import get_scheduler

    scheduler = get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=int(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    model, optimizer = accelerator.prepare(model, optimizer)
    core: ReconstructionModel = accelerator.unwrap_model(model)

    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_val": None, "best_step": None,
                             "bad_evals": 0, "stopped_early": False, "history": [], "train_seconds": 0.0,
                             "train_tokens": 0, "train_passes": 0, "fingerprint": config_fingerprint(config)}
    best: dict[str, torch.Tensor] | None = None
    ckpt = _check_checkpoint(out_dir, config)
    if ckpt is not None:
        state, best = load_checkpoint(ckpt, core, optimizer, scheduler)
        if main:
            print(f"resuming from {ckpt} at optimizer step {state['step']}/{total_steps}")

    def checkpoint() -> None:
        if main:
            save_checkpoint(out_dir / CHECKPOINT_DIR, core, optimizer, scheduler, state, best)
        accelerator.wait_for_everyone()

    def validate() -> bool:
        """Validation MSE; update best/patience; return True to stop early."""
        nonlocal best
        mse, _ = evaluate_mse(core, table, data, data.val_users, cfg, dev)
        improved = state["best_val"] is None or mse < state["best_val"] - 1e-9
        if improved:
            state.update(best_val=mse, best_step=state["step"], bad_evals=0)
            best = {k: v.cpu() for k, v in trainable_state(core).items()}
        else:
            state["bad_evals"] += 1
        state["history"].append({"step": state["step"], "epoch": state["epoch"], "val_mse": mse})
        if progress and main:
            tqdm.write(f"step {state['step']}: val MSE {mse:.6f} (best {state['best_val']:.6f}, "
                       f"global-mean {baselines['mse_global_mean_val']:.6f})")
        return state["bad_evals"] >= cfg.patience

    clock = {"t0": time.time(), "tokens": core.encoder.llm_tokens, "passes": core.encoder.llm_passes}

    def pause_clock() -> None:
        """Add training time/tokens/passes since the last call to the totals (validation is excluded)."""
        state["train_seconds"] += time.time() - clock["t0"]
        state["train_tokens"] += core.encoder.llm_tokens - clock["tokens"]
        state["train_passes"] += core.encoder.llm_passes - clock["passes"]

    def resume_clock() -> None:
        clock.update(t0=time.time(), tokens=core.encoder.llm_tokens, passes=core.encoder.llm_passes)

    bar = tqdm(total=total_steps, initial=state["step"], desc="stage1", disable=not (progress and main))
    while state["step"] < total_steps and not state["stopped_early"]:
        epoch = state["epoch"]
        if state["batch_in_epoch"] >= batches_per_epoch:  # the checkpoint fell on an epoch end
            state.update(epoch=epoch + 1, batch_in_epoch=0)
            continue
        loader = loader_for(epoch)
        if state["batch_in_epoch"]:
            loader = accelerator.skip_first_batches(loader, state["batch_in_epoch"])
        model.train()
        resume_clock()
        running, micro = 0.0, 0
        for ids, mask, targets in loader:
            state["batch_in_epoch"] += 1
            micro += 1
            last_of_step = micro == cfg.grad_accum or state["batch_in_epoch"] == batches_per_epoch
            item_embs = table[ids]  # [B, T, D]
            with contextlib.nullcontext() if last_of_step else accelerator.no_sync(model):
                with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=cfg.bf16):
                    _, probs = model(item_embs, mask)  # [B, K]
                loss = reconstruction_loss(probs, targets, cfg.loss_reduction)
                in_step = micro_weight(cfg.grad_accum, batches_per_epoch, state["batch_in_epoch"] - micro)
                accelerator.backward(loss / in_step)
            running += float(loss.detach())
            if not last_of_step:
                continue
            if cfg.grad_clip > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            step_loss = running / micro
            running, micro = 0.0, 0
            state["history"].append({"step": state["step"], "loss": step_loss, "lr": scheduler.get_last_lr()[0]})
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.5f}", epoch=epoch)
            finished = state["step"] >= total_steps
            if cfg.eval_every and state["step"] % cfg.eval_every == 0 and not finished:
                pause_clock()
                state["stopped_early"] = validate()
                checkpoint()
                model.train()
                resume_clock()
            elif state["step"] % cfg.checkpoint_every == 0 or finished:
                pause_clock()
                checkpoint()
                resume_clock()
            if on_step is not None:
                on_step(state["step"])
            if finished or state["stopped_early"]:
                break
        pause_clock()
        if state["stopped_early"]:
            break
        if state["batch_in_epoch"] >= batches_per_epoch:
            if cfg.eval_every is None or state["step"] >= total_steps:
                state["stopped_early"] = validate() and state["step"] < total_steps
            state.update(epoch=epoch + 1, batch_in_epoch=0)
            checkpoint()
    bar.close()
    if best is None or "val_mse" not in state["history"][-1]:
        validate()  # a run that ended on max_steps in the middle of an epoch
    if best is not None:
        load_trainable_state(core, best, "best weights")

    mse_report = evaluate_mse(core, table, data, report_users, cfg, dev)[0] if len(data.test_users) else state["best_val"]
    if accelerator.num_processes > 1:  # tokens and passes of every process, not just this one
        totals = accelerator.reduce(torch.tensor([state["train_tokens"], state["train_passes"]], device=dev), "sum")
        state.update(train_tokens=int(totals[0]), train_passes=int(totals[1]))
    metrics = _final_metrics(state, baselines, mse_report, data, cfg, total_steps, steps_per_epoch, t_start)
    metrics["timing"]["processes"] = accelerator.num_processes
    metrics["timing"]["torch_threads"] = torch.get_num_threads()  # CPU numbers depend on it (module docstring)
    if cfg.untuned_baseline == "head+proj" and cfg.lora:
        sub = train_stage1(item_embeddings, train_sequences, out_dir / SUB_RUN,
                           Stage1Config(**{**cfg.to_dict(), "lora": False, "untuned_baseline": "none"}),
                           llm_cfg, device, run_info, progress=progress)
        metrics["metrics"]["mse_untuned_llm"] = sub["metrics"]["mse"]
        metrics["metrics"]["mse_untuned_llm_val"] = sub["metrics"]["mse_val"]
        metrics["metrics"]["untuned_llm_variant"] = "head+proj (LLM frozen, projection and head trained)"
    if main:
        save_reconstruction_model(core, out_dir)
        write_json(out_dir / LOG_FILE, state["history"])
        write_json(out_dir / METRICS_FILE, metrics)
        shutil.rmtree(out_dir / CHECKPOINT_DIR, ignore_errors=True)
    accelerator.wait_for_everyone()
    return metrics


def micro_weight(grad_accum: int, batches_per_epoch: int, first_batch_of_step: int) -> int:
    """Number of micro-batches in the optimizer step that starts at `first_batch_of_step` (the last step of an
    epoch may be shorter), so the accumulated gradient is a mean over the step's micro-batches."""
    return min(grad_accum, batches_per_epoch - first_batch_of_step)


def _cached(path: Path, main: bool, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Result of `compute`, stored in `path` so a resumed run does not repeat it."""
    if path.is_file():
        return read_json(path, "baseline result")
    result = compute()
    if main:
        write_json(path, result)
    return result


def _finished_metrics(out_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """Saved metrics if `out_dir` holds a finished run with these settings; InputError naming the first
    changed setting if it holds one with other settings."""
    if not (out_dir / METRICS_FILE).is_file():
        return None
    saved_path = out_dir / CONFIG_FILE
    saved = read_json(saved_path, "stage 1 config") if saved_path.is_file() else {}
    if config_fingerprint(saved) == config_fingerprint(config):
        return read_json(out_dir / METRICS_FILE, "stage 1 metrics")
    check_same_config(saved_path, saved, config, "finished stage 1 run")
    raise AssertionError("unreachable: the fingerprints differ, so some setting does")


def _check_checkpoint(out_dir: Path, config: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from, if any; InputError if it was written with other settings."""
    ckpt = find_checkpoint(out_dir / CHECKPOINT_DIR)
    if ckpt is None:
        return None
    saved = read_json(ckpt / "state.json", "checkpoint state").get("fingerprint")
    if saved is None:
        raise InputError(f"{ckpt}: this checkpoint records no settings (written by an older tslrec), so resuming "
                         "could mix two configurations; to start over pass --force (force=True from Python)")
    if saved != config_fingerprint(config):
        check_same_config(ckpt, json.loads(saved), config, "checkpoint")
    return ckpt


def _discard_run(out_dir: Path) -> None:
    """force=True: remove what an earlier run left in out_dir (checkpoints, metrics, log, cached baselines)."""
    for name in (METRICS_FILE, LOG_FILE, BASELINE_CACHE):
        (out_dir / name).unlink(missing_ok=True)
    for name in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old", SUB_RUN):
        shutil.rmtree(out_dir / name, ignore_errors=True)


def _final_metrics(state: dict[str, Any], baselines: dict[str, Any], mse: float, data: Stage1Data, cfg: Stage1Config,
                   total_steps: int, steps_per_epoch: int, t_start: float) -> dict[str, Any]:
    """metrics.json content. `mse` is on the test users (validation users if there are none)."""
    on = "test" if len(data.test_users) else "validation"
    epochs_done = state["step"] / max(steps_per_epoch, 1)
    train_s = state["train_seconds"]
    return {
        "metrics": {"mse": mse, "mse_global_mean": baselines["mse_global_mean"],
                    "mse_untuned_llm": baselines.get("mse_untuned_llm"),
                    "untuned_llm_variant": baselines.get("untuned_llm_variant"),
                    "mse_untuned_llm_val": baselines.get("mse_untuned_llm_val"),
                    "mse_mean_embedding": baselines["mse_mean_embedding"],
                    "mse_mean_embedding_val": baselines["mse_mean_embedding_val"],
                    "untuned_llm_best_step": baselines.get("untuned_llm_best_step"),
                    "mse_ratio_to_global_mean": mse / baselines["mse_global_mean"],
                    "mse_ratio_to_mean_embedding": mse / baselines["mse_mean_embedding"],
                    "mse_val": state["best_val"], "mse_global_mean_val": baselines["mse_global_mean_val"],
                    "reported_on": f"{on} users",
                    "note": (f"MSE averaged over {on} users (never trained on) and K; validation users pick the "
                             "checkpoint" + ("" if on == "test" else ", so this number is slightly optimistic")
                             + "; mse_mean_embedding is a head on the mean item embedding, with no LLM")},
        "steps": state["step"], "total_steps_planned": total_steps, "steps_per_epoch": steps_per_epoch,
        "epochs_run": epochs_done, "best_step": state["best_step"], "stopped_early": state["stopped_early"],
        "users": {"train": int(len(data.train_users)), "val": int(len(data.val_users)), "test": int(len(data.test_users)),
                  "dropped_no_train_items": data.dropped_users},
        "groups": {"k": cfg.k, "min_size": int(data.groups.sizes.min()), "max_size": int(data.groups.sizes.max())},
        "timing": {"wall_seconds": time.time() - t_start, "train_seconds": train_s,
                   "seconds_per_epoch": train_s / epochs_done if epochs_done else None,
                   "train_tokens": state["train_tokens"], "train_llm_passes": state["train_passes"],
                   "tokens_per_second": state["train_tokens"] / train_s if train_s else None,
                   "untuned_llm_seconds": baselines.get("untuned_llm_seconds")},
        "versions": package_versions(),
    }
