"""Copy saved tensors into a model's parameters by name, with the file named in a one-line error."""

from __future__ import annotations

from pathlib import Path

import torch

from tslrec.core.errors import InputError


@torch.no_grad()
def copy_weights(
    targets: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor], source: str | Path, rerun: str
) -> None:
    """targets[name].copy_(tensors[name]) for every name; a missing key or a wrong shape -> InputError naming
    `source` and telling the user to re-run `rerun`."""
    try:
        for name, param in targets.items():
            param.copy_(tensors[name])
    except (KeyError, RuntimeError) as e:
        raise InputError(f"{source}: wrong keys or shapes ({str(e).splitlines()[0][:100]}); re-run `{rerun}`") from None
