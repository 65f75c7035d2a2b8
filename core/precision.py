"""The numeric precision a run computes in: `auto` (the default everywhere), `bf16` or `float32`.

`auto` means bfloat16 autocast only where the device computes bfloat16 natively: a CUDA GPU with bf16
support, or a CPU with AMX or AVX512-BF16. Elsewhere (AVX2-only CPUs, most laptops) bf16 is emulated and
runs many times slower than float32, so `auto` is float32 there. A run records the precision it resolved
to, never `auto`: a run started with bf16 on one machine does not silently continue in float32 on another.
"""

from __future__ import annotations

import dataclasses
from contextlib import AbstractContextManager
from typing import Any, Literal, get_args

import torch

from .errors import InputError
from .settings import setting

Precision = Literal["auto", "bf16", "float32"]  # the type of every config's `precision` (see precision_field)
PRECISIONS: tuple[str, ...] = get_args(Precision)
HELP = (
    "auto = bfloat16 autocast where the device computes it natively (CUDA with bf16, a CPU with AMX or "
    "AVX512-BF16), float32 elsewhere; bf16 or float32 to choose"
)


def _cpu_bf16_units() -> list[str]:
    """The CPU's native bfloat16 units that torch sees: AVX512_BF16 and AMX (empty on AVX2-only CPUs)."""
    probes = (("AVX512_BF16", "_is_avx512_bf16_supported"), ("AMX", "_is_amx_tile_supported"))
    return [label for label, probe in probes if getattr(torch.cpu, probe, lambda: False)()]


def precision_field(what: str, old_switch: str, old_switch_means: str, replaces: str = "bf16", flag: str = "") -> Any:
    """The `precision` setting of a config (`precision: Precision = precision_field(...)`): `auto` by default, with
    the older boolean it replaces (`replaces`, read from runs recorded with it) and that boolean's switch
    (`old_switch`, e.g. --no-bf16, which meant `old_switch_means`), still accepted with a note."""
    other = "float32" if old_switch_means == "bf16" else "bf16"
    return setting(
        "auto",
        f"{what}: {HELP}",
        replaces=(replaces, {True: "bf16", False: "float32"}),
        deprecated={old_switch: (old_switch_means, other)},
        **({"flag": flag} if flag else {}),
    )


def cpu_capability() -> str:
    """The CPU's vector capability as torch reports it (e.g. AVX2, AVX512), with +AVX512_BF16 / +AMX where present."""
    return "+".join([torch.backends.cpu.get_cpu_capability(), *_cpu_bf16_units()])


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 matmuls natively (not by emulation)."""
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.get_device_capability(device)[0] >= 8  # Ampere and later
    if device.type == "cpu":
        return bool(_cpu_bf16_units())
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`bf16` or `float32`: what `precision` means on `device` (bf16 on a GPU without it is an InputError)."""
    if precision not in PRECISIONS:
        raise InputError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "float32"
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise InputError(f"precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use float32")
    return precision


def resolved(config: Any, device: torch.device) -> Any:
    """A copy of the dataclass `config` with every `precision` field in it (nested ones too) resolved on `device`."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "precision" and isinstance(value, str):
            changes[f.name] = resolve_precision(value, device)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes[f.name] = resolved(value, device)
    return dataclasses.replace(config, **changes)


def autocast(device: torch.device, precision: str) -> AbstractContextManager:
    """bfloat16 autocast on `device` when `precision` (already resolved) is bf16; a no-op context otherwise."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def precision_record(device: torch.device, precision: str) -> dict[str, Any]:
    """What a timing record states about the arithmetic: the precision used and the hardware's capability."""
    rec: dict[str, Any] = {"precision": precision, "native_bf16": native_bf16(device)}
    if device.type == "cuda":
        rec["gpu"] = torch.cuda.get_device_name(device)
    else:
        rec["cpu_capability"] = cpu_capability()
    return rec
