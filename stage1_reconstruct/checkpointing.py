"""Resumable training checkpoints without pickle: safetensors for tensors, JSON for the rest.

One checkpoint folder holds:
    trainable.safetensors   every trainable parameter, by name
    optimizer.safetensors   optimizer state tensors, keyed "<param index>.<name>"
    best.safetensors        trainable parameters of the best validation so far (if any)
    state.json              step counters, scheduler state, optimizer param groups, history, RNG (CPU, and
                            CUDA when the model is there), the run's settings (core.run_settings)
The folder is written next to its final place and renamed, so a kill never leaves half a checkpoint.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tslrec.core.artifacts import load_tensors, read_json, save_tensors, write_json
from tslrec.core.errors import InputError
from tslrec.core.modules import load_trainable_state, trainable_state


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
) -> None:
    """Write a complete checkpoint folder atomically (temp folder + rename)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        save_tensors(tmp / "trainable.safetensors", trainable_state(model))
        opt = optimizer.state_dict()
        opt_tensors: dict[str, torch.Tensor] = {}
        opt_scalars: dict[str, Any] = {}
        for idx, pstate in opt["state"].items():
            for name, value in pstate.items():
                key = f"{idx}.{name}"
                if torch.is_tensor(value):
                    opt_tensors[key] = value
                else:
                    opt_scalars[key] = value
        save_tensors(tmp / "optimizer.safetensors", opt_tensors or {"_empty": torch.zeros(1)})
        if best is not None:
            save_tensors(tmp / "best.safetensors", best)
        full_state = dict(state)
        full_state["optimizer_param_groups"] = opt["param_groups"]
        full_state["optimizer_scalars"] = opt_scalars
        full_state["scheduler"] = scheduler.state_dict()
        full_state["torch_rng"] = torch.get_rng_state().tolist()
        device = _device_of(model)
        if device.type == "cuda":  # LoRA dropout on the GPU draws from the CUDA generator
            full_state["cuda_rng"] = torch.cuda.get_rng_state(device).tolist()
        write_json(tmp / "state.json", full_state)
        old = folder.with_name(folder.name + ".old")
        if folder.exists():
            os.replace(folder, old)
        os.replace(tmp, folder)
        if old.exists():
            shutil.rmtree(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def find_checkpoint(folder: str | Path) -> Path | None:
    """The checkpoint folder to resume from, if any (also recovers from a kill between two renames)."""
    folder = Path(folder)
    if (folder / "state.json").is_file():
        return folder
    old = folder.with_name(folder.name + ".old")
    if (old / "state.json").is_file():
        return old
    return None


def load_checkpoint(
    folder: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> tuple[dict[str, Any], dict[str, torch.Tensor] | None]:
    """Restore model, optimizer, scheduler and torch RNG; return (state dict, best trainable params or None)."""
    folder = Path(folder)
    state = read_json(folder / "state.json", "checkpoint state")
    load_trainable_state(model, load_tensors(folder / "trainable.safetensors", "checkpoint weights"), folder)
    opt_tensors = load_tensors(folder / "optimizer.safetensors", "checkpoint optimizer state")
    opt_tensors.pop("_empty", None)
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in list(opt_tensors.items()) + list(state.get("optimizer_scalars", {}).items()):
        idx, name = key.split(".", 1)
        per_param.setdefault(int(idx), {})[name] = value
    groups = state["optimizer_param_groups"]
    for g in groups:
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
    try:
        optimizer.load_state_dict({"state": per_param, "param_groups": groups})
        scheduler.load_state_dict(state["scheduler"])
    except (ValueError, KeyError) as e:
        raise InputError(f"{folder}: optimizer state does not fit this model ({e}); use a new --out") from None
    torch.set_rng_state(torch.tensor(state["torch_rng"], dtype=torch.uint8))
    device = _device_of(model)
    if device.type == "cuda" and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(torch.tensor(state["cuda_rng"], dtype=torch.uint8), device)
    best_path = folder / "best.safetensors"
    best = load_tensors(best_path, "checkpoint best weights") if best_path.is_file() else None
    return state, best


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))
