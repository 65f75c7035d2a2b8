"""Settings every job shares, and the description of one `tslrec` subcommand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tslrec.backbones.evaluation import EvalResult


@dataclass
class Runtime:
    """Where a job runs and what it shows; never part of a result."""

    device: str = field(default="auto", metadata={"help": "auto, cpu, cuda or cuda:N"})
    progress: bool = field(default=True, metadata={"flag": "--no-progress", "help": "hide progress bars"})


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
