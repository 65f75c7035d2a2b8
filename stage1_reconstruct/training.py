"""Stage 1 training loop: user-level SFT with LoRA, driven by accelerate.

One LLM pass per user per epoch. The same script runs on one CPU, one GPU or `accelerate launch` on many GPUs:
batches are sharded by the Accelerator, the model is wrapped for DDP, and only the main process writes files.

Resuming: a checkpoint (core.checkpoint: trainable weights, optimizer, scheduler, counters, CPU, CUDA and numpy RNG;
checkpoint.pt) is written every `checkpoint_every` optimizer steps and after each validation. Restarting with the
same output folder and settings continues from it; the data order of every epoch is a function of (seed, epoch), so
the run ends at the same total optimizer step count as an uninterrupted one. Other settings (config.json:
Stage1Config, LLMConfig, prompt, the item table's contents, the dataset) are refused with an InputError naming the
first changed one; `force=True` (`--force`) starts over instead.

Continuing on all users (`Stage1Config.all_users_epochs` > 0): after early stopping the reported MSEs are measured
on the then-held-out users, and training goes on from the best weights over every user (held-out ones included) for
that many epochs, with the same loop, its own checkpoint file (resumable the same way) and no validation; the
saved adapter and heads are the weights after it, and metrics.json's "all_users" records what it did.

Determinism: everything random is seeded from `Stage1Config.seed` (k-means, user split, data order, LoRA and head
init, LoRA dropout), so two runs with the same settings give bitwise-identical weights and metrics. The projection's
init divides by a norm over the whole vocabulary, a parallel sum whose order follows the thread count; it runs on
one thread, and with that 1 and 2 threads gave identical weights after 12 steps of SmolLM2 on ML-100K. A CPU with
another instruction set (e.g. AMX vs AVX-512 bfloat16 matrix kernels) or many more threads may still round bf16
products differently: `torch.get_num_threads()` is recorded in metrics.json.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from tslrec.core.artifacts import package_versions, read_json, resolve_device, save_tensors, write_json
from tslrec.core.checkpoint import Checkpoint
from tslrec.core.errors import InputError
from tslrec.core.modules import load_trainable_state, trainable_state
from tslrec.core.precision import autocast, precision_record, resolved
from tslrec.core.run_settings import RunSettings, plain
from tslrec.core.run_state import RunState
from tslrec.llm.loading import LLMConfig, load_llm
from tslrec.llm.soft_prompt import tokenize_item_texts

from .baselines import mean_embedding_baseline, split_users, untuned_head_baseline
from .config import Stage1Config
from .data import (
    Stage1Data,
    UserBatches,
    check_item_texts,
    epoch_batches,
    item_texts_sha256,
    pieces_for_processes,
    prepare_stage1_data,
    prompt_token_cost,
)
from .evaluation import distribution_mse, predict_distributions, reconstruction_loss
from .grouping import global_mean_mse
from .model import ReconstructionModel
from .model_io import CONFIG_FILE, build_reconstruction_model, save_reconstruction_model

CHECKPOINT = "checkpoint.pt"
ALL_USERS_CHECKPOINT = "checkpoint_all_users.pt"  # the continuation on all users (Stage1Config.all_users_epochs)
CHECKPOINTS = (CHECKPOINT, ALL_USERS_CHECKPOINT)
OLDER_CHECKPOINTS = ("checkpoint", "checkpoint_all_users")  # the folders an older tslrec wrote (and their .old)
METRICS_FILE = "metrics.json"
GROUPS_FILE = "groups.safetensors"
LOG_FILE = "log.json"
BASELINE_CACHE = "baseline_untuned_head.json"
SUB_RUN = "untuned_head_proj"  # the head+proj baseline's own stage 1 run
TRACE_ENV = "TSLREC_STAGE1_TRACE"  # a folder: each process appends a StepTrace per step (to check multi-process runs)


@dataclass
class Stage1State(RunState):
    """RunState counting optimizer steps (`batch`: batches done in `epoch`; history: a loss entry per step and a
    val_mse entry per validation), plus what stage 1 alone counts."""

    train_tokens: int = 0  # LLM input tokens in training passes (this process until the end, then all of them)
    train_passes: int = 0  # LLM forward passes in training


@dataclass
class StepTrace:
    """One process's view of one optimizer step: which users it trained on and where its weights ended up.

    Written as a JSON line to $TSLREC_STAGE1_TRACE/process<i>.jsonl when that variable is set, so that a
    multi-process run can be checked for disjoint data shards and in-sync weights (read them with `read_step_traces`).
    """

    process: int  # accelerator.process_index
    step: int  # optimizer steps done, this one included
    epoch: int
    users: list[int]  # this process's users in the step's micro-batches, in order
    weights_sha256: str  # this process's trainable weights after the step (the same in every process when in sync)


def read_step_traces(folder: str | Path) -> dict[int, list[StepTrace]]:
    """The StepTraces a run wrote to `folder` ($TSLREC_STAGE1_TRACE), by process index, in step order."""
    traces: dict[int, list[StepTrace]] = {}
    for path in sorted(Path(folder).glob("process*.jsonl")):
        for line in path.read_text().splitlines():
            trace = StepTrace(**json.loads(line))
            traces.setdefault(trace.process, []).append(trace)
    return traces


def weights_sha256(weights: dict[str, torch.Tensor]) -> str:
    """sha256 over the names and raw bytes of `weights` (bitwise equality, any dtype or device)."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        digest.update(name.encode())
        digest.update(weights[name].detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())  # [bytes]
    return digest.hexdigest()


def train_stage1(
    item_embeddings: np.ndarray,
    train_sequences: list[np.ndarray],
    out_dir: str | Path,
    cfg: Stage1Config | None = None,
    llm_cfg: LLMConfig | None = None,
    device: str = "auto",
    run_info: dict[str, Any] | None = None,
    on_step: Callable[[int], None] | None = None,
    progress: bool = True,
    force: bool = False,
    item_texts: list[str] | None = None,
) -> dict[str, Any]:
    """Train stage 1 and write its artefacts to `out_dir`; return the metrics dict.

    item_embeddings: float32 [N+1, D] pretrained item table (row 0 = padding).
    train_sequences: per user, TRAINING item ids only (each user's sequence without the last two).
    run_info: extra facts recorded in config.json/metrics.json (dataset name, hash, source folder).
    on_step: called with the optimizer step count after every step (progress hooks, tests).
    Re-running with the same out_dir and settings resumes from the last checkpoint, or
    returns the saved metrics if the run had finished; with other settings it raises InputError.
    force: discard whatever an earlier run left in out_dir (checkpoint, metrics, cached baseline) and start over.
    item_texts: each item's text ([0] = padding), shown in the prompt before its soft token when cfg.item_text
    (beyond the paper); ignored otherwise.
    """
    cfg = resolved(cfg or Stage1Config(), resolve_device(device))  # the precision `auto` means here is recorded
    llm_cfg = llm_cfg or LLMConfig()
    out_dir = Path(out_dir)
    t_start = time.time()
    data = prepare_stage1_data(item_embeddings, train_sequences, cfg)
    check_item_texts(item_texts, data.item_embeddings.shape[0] - 1, cfg)
    texts = item_texts if cfg.item_text else None
    config = _run_config(data, cfg, llm_cfg, run_info, texts)
    if not force:
        done = _finished_metrics(out_dir, config)
        if done is not None:
            return done
        _older_checkpoints(out_dir)
        for name in CHECKPOINTS:  # before the LLM loads: a refused resume costs nothing
            Checkpoint(out_dir / name, stage1_settings(config), torch.device("cpu")).load()

    from accelerate import Accelerator

    # mixed_precision="no": bf16 is Stage1Config.precision's autocast alone, never an accelerate config file's default
    accelerator = Accelerator(cpu=device == "cpu", mixed_precision="no")
    if accelerator.is_main_process:
        _prepare_out_dir(out_dir, config, data, force)
    accelerator.wait_for_everyone()  # no process reads the folder before the main one has cleaned it

    run = _Stage1Run(accelerator, data, config, cfg, llm_cfg, out_dir, progress, on_step, texts)
    run.train()
    metrics = run.finish(t_start)  # the held-out MSEs: before any continuation, which trains on those users
    if cfg.all_users_epochs > 0:
        metrics = run.continue_on_all_users(metrics, t_start)
    if cfg.untuned_baseline == "head+proj" and cfg.lora:
        # The head+proj untuned-LLM baseline: this run again without LoRA (the LLM frozen; the projection and head
        # trained), as its own resumable run in out_dir/SUB_RUN.
        no_lora = Stage1Config(**{**cfg.to_dict(), "lora": False, "untuned_baseline": "none"})
        sub_run = (item_embeddings, train_sequences, out_dir / SUB_RUN, no_lora, llm_cfg, device, run_info)
        sub = train_stage1(*sub_run, progress=progress, item_texts=texts)["metrics"]
        metrics["metrics"].update(
            mse_untuned_llm=sub["mse"],
            mse_untuned_llm_val=sub["mse_val"],
            untuned_llm_variant="head+proj (LLM frozen, projection and head trained)",
        )
    run.save(metrics)
    return metrics


def _run_config(
    data: Stage1Data, cfg: Stage1Config, llm_cfg: LLMConfig, run_info: dict[str, Any] | None, texts: list[str] | None
) -> dict[str, Any]:
    """config.json: every setting and input a finished run or a checkpoint is tied to (with item text, the
    texts' sha256, which stage 2 checks its dataset against)."""
    config = {
        "stage1": _stage1_settings(cfg),
        "llm": dict(vars(llm_cfg)),
        "item_dim": int(data.item_embeddings.shape[1]),
        "num_items": int(data.item_embeddings.shape[0] - 1),
        "k": cfg.k,
        "prompt": {"prefix": cfg.prefix(), "suffix": cfg.suffix_text},
        "run": run_info or {},
        "item_table_sha256": hashlib.sha256(data.item_embeddings.numpy().tobytes()).hexdigest(),
    }
    if texts is not None:
        config["item_text_sha256"] = item_texts_sha256(texts)
    return config


def _stage1_settings(cfg: Stage1Config) -> dict[str, Any]:
    """config.json's Stage1Config. A setting at its `before` value (all_users_epochs off, batching random) is left
    out, so a run that does what runs did before the setting existed writes the same config.json and keeps its
    fingerprint (its finished folder and checkpoints stay valid); Stage1Config.from_dict reads the missing key back
    as that value."""
    settings = cfg.to_dict()
    for f in fields(cfg):
        if "before" in f.metadata and settings[f.name] == f.metadata["before"]:
            del settings[f.name]
    return settings


SECTIONS = {"stage1": "Stage1Config", "llm": "LLMConfig"}  # config.json keys -> names in error messages


def _named(config: dict[str, Any]) -> dict[str, Any]:
    return {SECTIONS.get(k, k): v for k, v in config.items()}


def stage1_settings(config: dict[str, Any]) -> RunSettings:
    """The settings of a stage 1 run (config.json's, sections named by their configs): what its checkpoints and
    finished folder are tied to. A setting config.json leaves out reads as its `before` value (core.run_settings)."""
    return RunSettings(plain(_named(config)), {"Stage1Config": Stage1Config(), "LLMConfig": LLMConfig()})


def _finished_metrics(out_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """Saved metrics if `out_dir` holds a finished run with these settings; InputError naming the first
    changed setting if it holds one with other settings."""
    if not (out_dir / METRICS_FILE).is_file():
        return None
    saved_path = out_dir / CONFIG_FILE
    saved = read_json(saved_path, "stage 1 config") if saved_path.is_file() else {}
    stage1_settings(config).refuse(saved_path, _named(saved), "finished stage 1 run")
    return read_json(out_dir / METRICS_FILE, "stage 1 metrics")


def _older_checkpoints(out_dir: Path) -> None:
    """A checkpoint folder an older tslrec wrote: a one-line InputError (--force discards it), never a resume."""
    for name in OLDER_CHECKPOINTS:
        if (out_dir / name).is_dir() or (out_dir / f"{name}.old").is_dir():
            raise InputError(
                f"{out_dir / name}: a checkpoint folder of an older tslrec, which this version does not resume; "
                "to start over pass --force (force=True from Python), or write to another --out"
            )


def _prepare_out_dir(out_dir: Path, config: dict[str, Any], data: Stage1Data, force: bool) -> None:
    """Main process only: clear what force (an earlier run's checkpoints, metrics, log, cached baselines) or a killed
    save left, drop a baseline cached under other settings, write config.json and the groups file."""
    if force:
        for name in (METRICS_FILE, LOG_FILE, BASELINE_CACHE, *CHECKPOINTS):
            (out_dir / name).unlink(missing_ok=True)
        for name in (*OLDER_CHECKPOINTS, *(c + ".old" for c in OLDER_CHECKPOINTS), SUB_RUN):
            shutil.rmtree(out_dir / name, ignore_errors=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINTS:
        for stale in out_dir.glob(f".{name}.*"):  # temp files of a killed save
            stale.unlink()
    saved = out_dir / CONFIG_FILE
    if saved.is_file() and stage1_settings(config).changes(_named(read_json(saved, "stage 1 config"))):
        (out_dir / BASELINE_CACHE).unlink(missing_ok=True)  # computed under other settings
    write_json(out_dir / CONFIG_FILE, config)
    groups = {"item_group": data.groups.item_group, "centroids": data.groups.centroids, "user_targets": data.targets}
    splits = {f"{part}_users": getattr(data, f"{part}_users") for part in ("train", "val", "test")}
    save_tensors(out_dir / GROUPS_FILE, {name: torch.from_numpy(a) for name, a in {**groups, **splits}.items()})


def stage1_optimizer(model: ReconstructionModel, cfg: Stage1Config) -> torch.optim.Optimizer:
    """AdamW: LoRA weights at cfg.lr, projection and head at cfg.head_lr."""
    head = [*model.encoder.item_proj.parameters(), *model.head.parameters()]
    lora = [p for p in model.parameters() if p.requires_grad and all(p is not h for h in head)]
    groups = ([{"params": lora, "lr": cfg.lr}] if lora else []) + [{"params": head, "lr": cfg.head_lr}]
    return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass(frozen=True)
class _Phase:
    """What one part of a run trains: the early-stopped training on the training users, or the continuation on
    every user (Stage1Config.all_users_epochs)."""

    name: str  # the progress bar's label
    users: np.ndarray  # int64 [U]: the users whose prompts it trains on
    epochs: float  # its length in passes over `users` (fractional for the continuation)
    checkpoint: str  # its checkpoint file in out_dir
    max_steps: int | None = None  # a cap on its optimizer steps
    early_stopping: bool = False  # validation, patience and max_minutes; False: exactly its steps, never validated
    first_epoch: int = 0  # its epoch e draws the data order and windows of epoch first_epoch + e
    step_offset: int = 0  # optimizer steps before it: on_step, StepTrace and log.json count on from there


class _Stage1Run:
    """One stage 1 run: its model, optimizer, scheduler, data and state, and the parts of its training loop.

    The loop trains one _Phase at a time: first the early-stopped one; `continue_on_all_users` then switches to
    the continuation (a fresh state, optimizer and schedule; the same loop and checkpoints)."""

    def __init__(
        self,
        accelerator: Any,
        data: Stage1Data,
        config: dict[str, Any],
        cfg: Stage1Config,
        llm_cfg: LLMConfig,
        out_dir: Path,
        progress: bool,
        on_step: Callable[[int], None] | None,
        item_texts: list[str] | None,
    ) -> None:
        """Compute the baselines, load the LLM, build the model (seeded from cfg.seed) and optimizer, and resume from
        a checkpoint if any.
        item_texts: shown in the prompt when cfg.item_text; tokenised once here, with the LLM's tokenizer."""
        self.accelerator, self.data, self.cfg, self.out_dir = accelerator, data, cfg, out_dir
        self.on_step, self.config = on_step, config
        self.dev, self.main = accelerator.device, accelerator.is_main_process
        self.progress = progress and self.main
        users = split_users(data)  # train, val and report (the users the reported MSEs are on)
        self.baselines = {
            "mse_global_mean": global_mean_mse(data.targets[users["train"]], data.targets[users["report"]]),
            "mse_global_mean_val": global_mean_mse(data.targets[users["train"]], data.targets[users["val"]]),
            **mean_embedding_baseline(data, cfg),
        }
        llm, tokenizer = load_llm(llm_cfg, kind="causal_lm")
        titles = tokenize_item_texts(tokenizer, item_texts, cfg.item_text_tokens) if item_texts is not None else None
        if cfg.untuned_baseline == "head":  # its result is kept in out_dir, so that a resumed run does not repeat it
            cache = out_dir / BASELINE_CACHE
            if cache.is_file():
                untuned = read_json(cache, "baseline result")
            else:
                untuned = untuned_head_baseline(llm, tokenizer, data, cfg, self.dev, self.progress, titles)
                if self.main:
                    write_json(cache, untuned)
            self.baselines.update(untuned)
        torch.manual_seed(cfg.seed)  # the model's init: projection scaled to the LLM's token embeddings
        model = build_reconstruction_model(llm, tokenizer, data.item_embeddings.shape[1], cfg, llm_cfg, titles)
        sample = data.item_embeddings[1:][torch.randperm(data.item_embeddings.shape[0] - 1)[:2048]]  # [<=2048, D]
        model.encoder.match_token_scale(sample)
        with torch.no_grad():  # start at the global-mean prediction; the head's weights learn the deviations
            model.head.bias.copy_(torch.log(torch.from_numpy(data.targets[data.train_users]).mean(0).clamp(min=1e-8)))
        model.to(self.dev)
        self.table = data.item_embeddings.to(self.dev)  # [N+1, D]
        self.positions_per_item = model.encoder.positions_per_item()  # [N+1], with item text
        optimizer = stage1_optimizer(model, cfg)
        first = _Phase("stage1", data.train_users, cfg.epochs, CHECKPOINT, cfg.max_steps, early_stopping=True)
        self._begin(first, optimizer)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.core: ReconstructionModel = accelerator.unwrap_model(self.model)
        self.best: dict[str, torch.Tensor] | None = None  # trainable weights at the best validation MSE
        self.main_state: Stage1State | None = None  # the early-stopped training's, once the continuation runs
        text_tokens = model.encoder.prompt.num_text_tokens  # prompt tokens with and without item text (item_text only):
        self.prompt_cost = prompt_token_cost(data, cfg.max_items, titles, text_tokens) if titles is not None else None
        trace = os.environ.get(TRACE_ENV)
        self.trace: Path | None = Path(trace) / f"process{accelerator.process_index}.jsonl" if trace else None
        self.resume_clock()
        self.resume()

    def _begin(self, phase: _Phase, optimizer: torch.optim.Optimizer) -> None:
        """Plan `phase`: its batches and optimizer steps (`epochs` passes, rounded up, at least 1, at most max_steps),
        cfg.lr_schedule (with warm-up) over those steps on `optimizer` (before accelerator.prepare), and a fresh
        state tied to the run's settings."""
        from transformers import get_scheduler

        cfg = self.cfg
        self.phase = phase
        self.batches_per_epoch = len(self.loader_for(0))
        self.steps_per_epoch = math.ceil(self.batches_per_epoch / cfg.grad_accum)
        steps = max(1, math.ceil(phase.epochs * self.steps_per_epoch - 1e-9))  # 1e-9: 0.3 * 10 is 3.0000000000000004
        self.total_steps = steps if phase.max_steps is None else min(steps, phase.max_steps)
        warmup = int(cfg.warmup_ratio * self.total_steps)
        self.scheduler = get_scheduler(
            cfg.lr_schedule, optimizer, num_warmup_steps=warmup, num_training_steps=self.total_steps
        )
        self.state = Stage1State()
        self.ckpt = Checkpoint(self.out_dir / phase.checkpoint, stage1_settings(self.config), self.dev)

    def resume(self) -> None:
        """Continue the current phase from its checkpoint, if one was written (with other settings: InputError)."""
        saved = self.ckpt.load()
        if saved is None:
            return
        weights = partial(load_trainable_state, self.core, source=self.ckpt.path)
        self.state = self.ckpt.restore(saved, weights, self.optimizer, Stage1State, self.scheduler)
        self.best = saved["best_model"]
        if self.main:
            print(f"resuming from {self.ckpt.path} at optimizer step {self.state.step}/{self.total_steps}")

    def loader_for(self, epoch: int) -> DataLoader:
        """This process's batches in the phase's epoch `epoch`, each (users [B], ids [B, T], mask [B, T],
        targets [B, K]). Every micro-step's users across the processes are one batch of epoch_batches (batch_size
        users per process), in pieces that accelerate deals out in turn, so the steps take the same users whatever
        the process count. Its own generator keeps DataLoader from drawing on the global RNG, so a resumed run sees
        the same LoRA-dropout masks as an uninterrupted one."""
        cfg, epoch, n = self.cfg, self.phase.first_epoch + epoch, self.accelerator.num_processes
        prompts = UserBatches(self.data, cfg.max_items, cfg.prompts, cfg.seed, epoch, self.positions_per_item)
        together = epoch_batches(self.phase.users, cfg.batch_size * n, cfg.seed, epoch, cfg.batching, prompts)
        users = pieces_for_processes(together, cfg.batch_size, n)
        rows = np.cumsum([0] + [len(b) for b in users])
        return self.accelerator.prepare(
            DataLoader(
                [u for batch in users for u in batch],
                batch_sampler=[range(a, b) for a, b in zip(rows[:-1], rows[1:], strict=True)],
                collate_fn=lambda batch: (torch.tensor(batch, dtype=torch.long), *prompts(batch)),
                generator=torch.Generator().manual_seed(cfg.seed + epoch),
            )
        )

    def train(self) -> None:
        """Optimizer steps until total_steps or until patience runs out, validating and checkpointing on the way."""
        s = self.state
        self.bar = tqdm(total=self.total_steps, initial=s.step, desc=self.phase.name, disable=not self.progress)
        while s.step < self.total_steps and not s.stopped:
            if s.batch >= self.batches_per_epoch:  # the checkpoint fell on an epoch end
                s.epoch, s.batch = s.epoch + 1, 0
                continue
            self._train_epoch()
            if s.stopped:
                break
            if s.batch >= self.batches_per_epoch:
                self._end_epoch()
        self.bar.close()

    def _train_epoch(self) -> None:
        """Train the current epoch from batch `state.batch` on, until its end, total_steps or early stopping."""
        s, cfg = self.state, self.cfg
        loader = self.loader_for(s.epoch)
        if s.batch:
            loader = self.accelerator.skip_first_batches(loader, s.batch)
        self.model.train()
        self.resume_clock()
        running, micro, users = 0.0, 0, []
        for batch_users, ids, mask, targets in loader:  # [B], [B, T], [B, T], [B, K]
            s.batch += 1
            micro += 1
            users += batch_users.tolist()
            last_of_step = micro == cfg.grad_accum or s.batch == self.batches_per_epoch
            running += self._forward_backward(ids, mask, targets, micro, last_of_step)
            if not last_of_step:
                continue
            self._optimizer_step(running / micro)
            self._write_trace(users)
            running, micro, users = 0.0, 0, []
            if self._after_step():
                break
        self.pause_clock()

    def _forward_backward(
        self, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, micro: int, last_of_step: bool
    ) -> float:
        """One micro-batch (the `micro`-th of its optimizer step): forward and backward, the gradient divided by the
        step's micro-batch count (an epoch's last step may have fewer) so the step's is a mean over them; processes
        sync gradients on a step's last one only. The loss."""
        item_embs = self.table[ids]  # [B, T, D]
        with contextlib.nullcontext() if last_of_step else self.accelerator.no_sync(self.model):
            with autocast(self.dev, self.cfg.precision):
                _, probs = self.model(item_embs, mask, ids)  # [B, K]; ids show titles with item text
            loss = reconstruction_loss(probs, targets, self.cfg.loss_reduction)
            in_step = min(self.cfg.grad_accum, self.batches_per_epoch - (self.state.batch - micro))
            self.accelerator.backward(loss / in_step)
        return float(loss.detach())

    def _optimizer_step(self, step_loss: float) -> None:
        """Clip, step optimizer and scheduler, count the step and log its mean micro-batch loss (over every
        process's micro-batches, so the log does not depend on the process count)."""
        if self.cfg.grad_clip > 0:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.accelerator.num_processes > 1:  # each process saw only its shard of the step's users
            step_loss = float(self.accelerator.reduce(torch.tensor([step_loss], device=self.dev), "mean"))
        s = self.state
        s.step += 1
        s.history.append({"step": s.step, "loss": step_loss, "lr": self.scheduler.get_last_lr()[0]})
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{step_loss:.5f}", epoch=s.epoch)

    def _write_trace(self, users: list[int]) -> None:
        """With $TSLREC_STAGE1_TRACE set: append this process's StepTrace of the step just taken."""
        if self.trace is None:
            return
        s, phase, weights = self.state, self.phase, weights_sha256(trainable_state(self.core))
        step, epoch = phase.step_offset + s.step, phase.first_epoch + s.epoch
        trace = StepTrace(self.accelerator.process_index, step, epoch, users, weights)
        self.trace.parent.mkdir(parents=True, exist_ok=True)
        with self.trace.open("a") as f:
            f.write(json.dumps(asdict(trace)) + "\n")

    def _after_step(self) -> bool:
        """Validate every eval_every steps (the last step is validated by the epoch's end or `finish`), checkpoint
        after a validation, every checkpoint_every steps and at the last step; True to leave the epoch. A phase
        without early stopping is never validated and has no time budget."""
        s, cfg = self.state, self.cfg
        finished = s.step >= self.total_steps
        validates = self.phase.early_stopping and not finished
        out_of_time = validates and self._out_of_time()  # then keep the better of now and the best so far, and stop
        if out_of_time or (validates and cfg.eval_every and s.step % cfg.eval_every == 0):
            with self._paused():
                s.stopped = self.validate() or out_of_time
                self.checkpoint()
                self.model.train()
            if out_of_time:
                return True
        elif s.step % cfg.checkpoint_every == 0 or finished:
            with self._paused():
                self.checkpoint()
        if self.on_step is not None:
            self.on_step(self.phase.step_offset + s.step)
        return finished or s.stopped

    def _out_of_time(self) -> bool:
        """True once the training minutes (`Stage1Config.max_minutes`) are spent; every process agrees."""
        if self.cfg.max_minutes is None:
            return False
        spent = self.state.train_seconds + time.time() - self._clock[0]
        flag = torch.tensor([float(spent >= 60 * self.cfg.max_minutes)], device=self.dev)
        if self.accelerator.num_processes > 1:
            flag = self.accelerator.reduce(flag, reduction="max")  # the slowest clock must not leave the others
        return bool(flag.item())

    def _end_epoch(self) -> None:
        """At an epoch's end: validate (unless eval_every decides when, but always after the last step; never without
        early stopping), move on to the next epoch and checkpoint."""
        s = self.state
        if self.phase.early_stopping and (self.cfg.eval_every is None or s.step >= self.total_steps):
            s.stopped = self.validate() and s.step < self.total_steps
        s.epoch, s.batch = s.epoch + 1, 0
        self.checkpoint()

    def validate(self) -> bool:
        """Validation MSE; keep the weights if it is the best so far; True when patience has run out."""
        s = self.state
        t0 = time.time()
        mse = self.mse(self.data, self.data.val_users)
        s.elapsed += time.time() - t0
        if s.record(mse, s.step, higher_is_better=False, min_delta=1e-9):
            self.best = {k: v.cpu() for k, v in trainable_state(self.core).items()}
        s.history.append({"step": s.step, "epoch": s.epoch, "val_mse": mse})
        if self.progress:
            tqdm.write(
                f"step {s.step}: val MSE {mse:.6f} (best {s.best_text(6)}, "
                f"global-mean {self.baselines['mse_global_mean_val']:.6f})"
            )
        return s.should_stop(self.cfg.patience)

    def mse(self, data: Stage1Data, users: np.ndarray) -> float:
        """MSE (averaged over `users` and K) of the current weights' distributions against the targets."""
        _, probs = predict_distributions(self.core, self.table, data, users, self.cfg, self.dev)
        return distribution_mse(probs, data.targets[users])[0]

    def checkpoint(self) -> None:
        if self.main:
            self.ckpt.save(trainable_state(self.core), self.optimizer, self.state, self.best, self.scheduler)
        self.accelerator.wait_for_everyone()

    def resume_clock(self) -> None:
        """Start timing training (and counting its LLM tokens and passes) from now."""
        self._clock = (time.time(), self.core.encoder.llm_tokens, self.core.encoder.llm_passes)

    def pause_clock(self) -> None:
        """Add the training time, tokens and passes since `resume_clock` to the totals (validation is excluded)."""
        t0, tokens, passes = self._clock
        s, seconds = self.state, time.time() - t0
        s.train_seconds += seconds
        s.elapsed += seconds
        s.train_tokens += self.core.encoder.llm_tokens - tokens
        s.train_passes += self.core.encoder.llm_passes - passes

    @contextlib.contextmanager
    def _paused(self) -> Iterator[None]:
        """Leave the block (a validation, a checkpoint) out of the training time, tokens and passes."""
        self.pause_clock()
        yield
        self.resume_clock()

    def _count_every_process(self) -> None:
        """At the end of a phase: its training tokens and passes, of every process rather than this one's."""
        if self.accelerator.num_processes > 1:
            s = self.state
            totals = self.accelerator.reduce(torch.tensor([s.train_tokens, s.train_passes], device=self.dev), "sum")
            s.train_tokens, s.train_passes = int(totals[0]), int(totals[1])

    def finish(self, t_start: float) -> dict[str, Any]:
        """Validate the last weights if no validation saw them, restore the best ones, measure the reported MSE
        (test users; validation users if there are none); the metrics dict (metrics.json)."""
        s, data, b, sizes = self.state, self.data, self.baselines, self.data.groups.sizes
        if self.best is None or "val_mse" not in s.history[-1]:
            self.validate()  # a run that ended on max_steps in the middle of an epoch
        if self.best is not None:
            load_trainable_state(self.core, self.best, "best weights")
        if len(data.test_users):
            mse = self.mse(data, data.test_users)
        else:
            mse = s.best_score if s.best_score is not None else math.nan  # NaN: every validation MSE was NaN
        self._count_every_process()
        on = "test" if len(data.test_users) else "validation"
        epochs_done = s.step / max(self.steps_per_epoch, 1)
        train_s = s.train_seconds
        metrics = {
            "metrics": {
                "mse": mse,
                "mse_global_mean": b["mse_global_mean"],
                "mse_untuned_llm": b.get("mse_untuned_llm"),
                "untuned_llm_variant": b.get("untuned_llm_variant"),
                "mse_untuned_llm_val": b.get("mse_untuned_llm_val"),
                "mse_mean_embedding": b["mse_mean_embedding"],
                "mse_mean_embedding_val": b["mse_mean_embedding_val"],
                "untuned_llm_best_step": b.get("untuned_llm_best_step"),
                "mse_ratio_to_global_mean": mse / b["mse_global_mean"],
                "mse_ratio_to_mean_embedding": mse / b["mse_mean_embedding"],
                "mse_val": s.best_score,
                "mse_global_mean_val": b["mse_global_mean_val"],
                "reported_on": f"{on} users",
                "note": (
                    f"MSE averaged over {on} users (never trained on) and K; validation users pick the "
                    "checkpoint"
                    + ("" if on == "test" else ", so this number is slightly optimistic")
                    + "; mse_mean_embedding is a head on the mean item embedding, with no LLM"
                ),
            },
            "steps": s.step,
            "total_steps_planned": self.total_steps,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs_run": epochs_done,
            "best_step": s.best_at,
            "stopped_early": s.stopped,
            "users": {
                "train": int(len(data.train_users)),
                "val": int(len(data.val_users)),
                "test": int(len(data.test_users)),
                "dropped_no_train_items": data.dropped_users,
            },
            "groups": {"k": self.cfg.k, "min_size": int(sizes.min()), "max_size": int(sizes.max())},
            "timing": {
                "wall_seconds": time.time() - t_start,
                "train_seconds": train_s,
                "seconds_per_epoch": train_s / epochs_done if epochs_done else None,
                "train_tokens": s.train_tokens,
                "train_llm_passes": s.train_passes,
                "tokens_per_second": s.train_tokens / train_s if train_s else None,
                "untuned_llm_seconds": b.get("untuned_llm_seconds"),
                "processes": self.accelerator.num_processes,
                "torch_threads": torch.get_num_threads(),  # CPU numbers depend on it (module docstring)
                **precision_record(self.dev, self.cfg.precision),  # never `auto`: what it resolved to, and the CPU
            },
            "versions": package_versions(),
        }
        if self.prompt_cost is not None:
            metrics["prompt_tokens"] = self.prompt_cost
        return metrics

    def continue_on_all_users(self, metrics: dict[str, Any], t_start: float) -> dict[str, Any]:
        """After `finish` (which measured the held-out MSEs and loaded the best weights): train on from those weights
        over every user, held-out ones included, for cfg.all_users_epochs epochs. `metrics`, with what the
        continuation did under "all_users"; its MSEs stay the ones measured before, on then-held-out users."""
        cfg, data = self.cfg, self.data
        self.main_state, self.best = self.state, None
        users = np.sort(np.concatenate([data.train_users, data.val_users, data.test_users]))  # [U]
        # no max_steps, no validation; windows and order unlike any epoch the early-stopped training planned
        epochs, offset = cfg.all_users_epochs, self.main_state.step
        phase = _Phase(
            "stage1 all users", users, epochs, ALL_USERS_CHECKPOINT, first_epoch=cfg.epochs, step_offset=offset
        )
        # The learning rate: a warm restart of cfg.lr_schedule (warm-up, then decay) over the continuation's own
        # steps, at cfg.lr / cfg.head_lr, with fresh AdamW moments. Continuing the early-stopped schedule is no
        # option: a run that went its planned length ended it at lr ~0 (the continuation would change nothing), and
        # cosine past its end rises again. A constant lr (the best step's, or the peak) has the same problem or
        # leaves un-annealed final weights that no held-out user can check. The saved AdamW moments belong to the
        # last weights, not to the best ones the continuation starts from, hence fresh ones, and with them warm-up.
        optimizer = stage1_optimizer(self.core, cfg)
        self._begin(phase, optimizer)
        self.optimizer = self.accelerator.prepare(optimizer)
        torch.manual_seed(cfg.seed)  # its LoRA-dropout masks: a function of the seed, not of the draws before it
        self.resume()
        self.train()
        self._count_every_process()
        s, held_out = self.state, len(data.val_users) + len(data.test_users)
        metrics["all_users"] = {
            "epochs": cfg.all_users_epochs,
            "epochs_run": s.step / max(self.steps_per_epoch, 1),
            "steps": s.step,
            "steps_per_epoch": self.steps_per_epoch,
            "users": int(len(data.train_users)) + held_out,
            "held_out_users": held_out,
            "train_seconds": s.train_seconds,
            "train_tokens": s.train_tokens,
            "train_llm_passes": s.train_passes,
            "lr_schedule": (
                f"{cfg.lr_schedule}{'' if cfg.lr_schedule == 'constant' else ' with warm-up'}, restarted over these "
                "steps; fresh AdamW moments"
            ),
            "note": (
                "after early stopping, training went on from the best weights over every user, held-out ones "
                "included; the saved adapter and heads are its weights, the MSEs were measured before it"
            ),
        }
        metrics["metrics"]["note"] += (
            "; measured before the continuation on all users (see all_users), whose weights are the ones saved"
        )
        metrics["timing"]["wall_seconds"] = time.time() - t_start
        return metrics

    def log(self) -> list[dict[str, Any]]:
        """log.json: the early-stopped training's steps and validations, then the continuation's steps (if it ran),
        numbered on from there and marked "all_users"."""
        if self.main_state is None:
            return self.state.history
        offset = self.phase.step_offset
        continued = [{**e, "step": offset + e["step"], "all_users": True} for e in self.state.history]
        return self.main_state.history + continued

    def save(self, metrics: dict[str, Any]) -> None:
        """Main process: write the final model, log.json and metrics.json; the checkpoints are no longer needed."""
        if self.main:
            save_reconstruction_model(self.core, self.out_dir)
            write_json(self.out_dir / LOG_FILE, self.log())
            write_json(self.out_dir / METRICS_FILE, metrics)
            for name in CHECKPOINTS:
                (self.out_dir / name).unlink(missing_ok=True)
        self.accelerator.wait_for_everyone()
