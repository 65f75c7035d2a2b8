"""A trainer's checkpoint: everything a killed run needs to continue as if it had never stopped.

One file, written atomically (a temporary name, then a rename) and read with torch.load(weights_only=True), which
unpickles nothing but tensors and plain types. It holds:
    model, optimizer, scheduler     state dicts (the trainer chooses which weights: all, or the trainable ones)
    best_model                      the weights of the best validation so far
    state                           the RunState (epoch, step, batch, best score, patience, times, history)
    settings                        the RunSettings values the run was started with; a run with others is refused
    code                            the commit of the code that wrote it; continued by other code, a run says so
    rng, cuda_rng, numpy_rng        the global CPU, CUDA (when the run is there) and numpy generators
    <name>                          each torch.Generator the trainer owns (e.g. `gen`, the sampled negatives)
A resumed run restores all of it, so the same seed gives the same numbers, bit for bit, killed or not.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .artifacts import atomic_path, source_commit
from .errors import InputError
from .run_settings import RunSettings
from .run_state import RunState

FORCE = "start over with --force (force=True from Python)"


def rng_states(device: torch.device, generators: Mapping[str, torch.Generator | None] = {}) -> dict[str, Any]:
    """The global CPU, CUDA (on a CUDA `device`) and numpy generator states, and each of `generators`'."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    out: dict[str, Any] = {
        "rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "numpy_rng": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "gauss": [has_gauss, gauss]},
    }
    out.update({name: g.get_state() if g is not None else None for name, g in generators.items()})
    return out


def restore_rng(saved: Mapping[str, Any], device: torch.device, generators: Mapping[str, Any] = {}) -> None:
    """Set every generator `rng_states` recorded (one an older checkpoint lacks is left as it is)."""
    torch.set_rng_state(torch.as_tensor(saved["rng"], dtype=torch.uint8))
    if device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(torch.as_tensor(saved["cuda_rng"], dtype=torch.uint8), device)
    numpy_rng = saved.get("numpy_rng")
    if numpy_rng is not None:
        keys = np.asarray(numpy_rng["keys"], dtype=np.int64).astype(np.uint32)
        np.random.set_state(("MT19937", keys, int(numpy_rng["pos"]), int(numpy_rng["gauss"][0]), numpy_rng["gauss"][1]))
    for name, g in generators.items():
        if g is not None and saved.get(name) is not None:
            g.set_state(torch.as_tensor(saved[name], dtype=torch.uint8))


class Checkpoint:
    """The checkpoint file of one run: `save` after each epoch or validation, `load` + `restore` to continue.

    settings: what the run is tied to; `load` refuses a checkpoint written with other ones (one-line InputError).
    generators: the torch.Generators the trainer owns, by name (saved and restored with the global ones).
    growable: {dotted setting name: the RunState counter it bounds} (e.g. TrainConfig.epochs: "epoch"): settings
        that may grow past what the checkpoint already ran.
    """

    def __init__(
        self,
        path: str | Path,
        settings: RunSettings,
        device: torch.device,
        generators: Mapping[str, torch.Generator | None] = {},
        growable: Mapping[str, str] = {},
    ) -> None:
        self.path, self.settings, self.device = Path(path), settings, device
        self.generators, self.growable = dict(generators), dict(growable)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)

    def save(
        self,
        weights: dict[str, torch.Tensor],
        optimizer: torch.optim.Optimizer,
        state: RunState,
        best: dict[str, torch.Tensor] | None,
        scheduler: Any = None,
    ) -> None:
        """Write the checkpoint atomically: a kill leaves the previous one or this one, never half of one."""
        payload = {
            "model": weights,
            "optimizer": optimizer.state_dict(),
            "best_model": best,
            "state": state.to_dict(),
            "settings": self.settings.values,
            "code": source_commit(),
            **rng_states(self.device, self.generators),
        }
        if scheduler is not None:
            payload["scheduler"] = scheduler.state_dict()
        with atomic_path(self.path) as tmp:
            torch.save(payload, tmp)

    def load(self) -> dict[str, Any] | None:
        """The saved checkpoint (None if there is none), refused with a one-line InputError when it is damaged or
        was written with other settings."""
        if not self.path.is_file():
            return None
        try:
            saved = torch.load(self.path, map_location="cpu", weights_only=True)
            done = {name: int(saved["state"][counter]) for name, counter in self.growable.items()}
        except Exception as e:  # noqa: BLE001 - torch's weights-only reader raises many types on a damaged file
            raise InputError(f"{self.path}: checkpoint is corrupt or truncated ({type(e).__name__}); {FORCE}") from None
        self.settings.refuse(self.path, saved.get("settings"), "checkpoint", done)
        if saved.get("code") and saved["code"] != source_commit():  # the settings agree; the code may differ
            print(
                f"note: {self.path} was written by code {saved['code']}, continued by {source_commit()}",
                file=sys.stderr,
            )
        return saved

    def restore(
        self,
        saved: dict[str, Any],
        load_weights: Callable[[dict[str, torch.Tensor]], Any],
        optimizer: torch.optim.Optimizer,
        state_type: type[RunState] = RunState,
        scheduler: Any = None,
    ) -> RunState:
        """Put a loaded checkpoint back: the weights (through `load_weights`), optimizer, scheduler and every
        generator; returns the run state it was written at."""
        try:
            load_weights(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
        except InputError:
            raise
        except Exception as e:  # noqa: BLE001 - a wrong key or shape is a RuntimeError, a damaged entry anything
            raise InputError(f"{self.path}: checkpoint does not fit this model ({type(e).__name__}); {FORCE}") from None
        state = state_type.from_dict(saved["state"], self.path)
        restore_rng(saved, self.device, self.generators)
        return state
