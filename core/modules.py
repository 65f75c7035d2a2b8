"""Small helpers over torch modules that every trainer uses: eval mode for a block, trainable weights
by name, peak memory."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from .errors import InputError


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in eval mode (no dropout) for the block, then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Detached copies of every trainable parameter, by name."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@torch.no_grad()
def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Copy saved trainable parameters into `model`; a missing or mis-shaped one -> InputError naming `source`."""
    params = dict(model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(state) != expected:
        diff = sorted(expected.symmetric_difference(state))[:3]
        raise InputError(
            f"{source}: checkpoint parameters do not match the model ({', '.join(diff)} ...); "
            "it was written with other settings: use a new --out"
        )
    for n, t in state.items():
        if params[n].shape != t.shape:
            raise InputError(
                f"{source}: parameter {n} has shape {tuple(t.shape)}, expected "
                f"{tuple(params[n].shape)}; use a new --out"
            )
        params[n].copy_(t.to(params[n].device, params[n].dtype))


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated GPU memory on CUDA, else the process's peak resident memory (Linux reports kB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
