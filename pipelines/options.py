"""Settings every job shares, and the description of one `tslrec` subcommand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tslrec.core.artifacts import resolve_device
from tslrec.core.errors import InputError
from tslrec.core.settings import setting
from tslrec.evaluation.ranking import EvalResult

from .trackers import check_trackers


@dataclass
class Runtime:
    """Where a job runs and what it shows; never part of a result."""

    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    progress: bool = setting(True, "hide progress bars", flag="--no-progress")
    threads: int | None = setting(
        None,
        (
            "torch CPU threads (default: torch's choice, one per core); recorded with the run. On a machine "
            "shared with another job, fewer threads than cores avoid a many-fold slowdown"
        ),
    )

    def start(self) -> torch.device:
        """Apply the thread count, if one is given, and return the device the job runs on."""
        if self.threads is not None:
            if self.threads < 1:
                raise InputError(f"Runtime.threads={self.threads}: need at least 1")
            torch.set_num_threads(self.threads)
        return resolve_device(self.device)


def force_field(discards: str = "the checkpoint an unfinished run left in --out") -> Any:
    """The `force` setting of a job that continues earlier work: start over, discarding `discards`."""
    return setting(False, f"start over: discard {discards} (a run with other settings is refused without it)")


@dataclass
class TrainingRuntime(Runtime):
    """A training job's runtime: also where its curve goes besides history.csv."""

    log_with: list[str] = setting(
        help=(
            "experiment trackers that also get the curve of history.csv when the run ends, through accelerate: "
            "tensorboard, wandb, mlflow, aim, comet_ml, clearml, dvclive, swanlab or trackio (installed "
            "separately; local ones write under <out>/trackers)"
        ),
        factory=list,
    )

    def __post_init__(self) -> None:
        if self.log_with:  # accelerate loads only when a tracker is asked for
            check_trackers(self.log_with)


def training_runtime(runtime: Runtime) -> TrainingRuntime:
    """`runtime` as a training job's: a plain `Runtime` (from older code or the front door) gets no trackers."""
    return runtime if isinstance(runtime, TrainingRuntime) else TrainingRuntime(**asdict(runtime))


def record_head(dataset: str, model: str, variant: str, seed: int, test: EvalResult, valid: EvalResult) -> dict:
    """The keys every metrics.json and benchmark record starts with: what ran, and its test and validation metrics."""
    return {
        "dataset": dataset,
        "model": model,
        "variant": variant,
        "seed": seed,
        "protocol": test.protocol,
        "metrics": {k: round(v, 6) for k, v in test.metrics.items()},
        "valid_metrics": {k: round(v, 6) for k, v in valid.metrics.items()},
    }


@dataclass(frozen=True)
class Command:
    """A `tslrec` subcommand: its settings (a job config whose values are the defaults) and what runs it."""

    name: str  # the word after `tslrec`
    help: str  # one line for `tslrec --help`
    defaults: Any  # the job config with default values; its fields are the flags
    run: Callable[[Any], Any]  # the typed entry point, called with the parsed job config
    report: Callable[[Any], None] = lambda result: None  # prints the result for a person
