"""Where a training run stands: counters, the best validation so far, patience and time.

The three trainers (backbones, stage 1, Lite-LLM4Rec) share this one record. It goes into
every checkpoint as plain JSON types (`to_dict`) and comes back with `from_dict`, so a
resumed run continues with exactly the counters it stopped with. A trainer that counts more
(tokens, a running loss) subclasses it with its own fields.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

from .errors import InputError

S = TypeVar("S", bound="RunState")


@dataclass
class RunState:
    """Counters of one training run; `record` after each validation, `should_stop` for patience."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken (a trainer that counts only epochs leaves it 0)
    batch: int = 0  # batches of the current epoch already trained (where a resumed epoch picks up)
    best_score: float | None = None  # best validation score so far (None before the first one)
    best_at: int = 0  # the epoch or step (the trainer's counter) of the best score; 0 = before training
    bad: int = 0  # validations since the best one (patience count)
    elapsed: float = 0.0  # seconds of training and validation (checkpoint writes excluded)
    train_seconds: float = 0.0  # seconds of training alone
    seconds_to_best: float = 0.0  # `elapsed` when the best score was recorded
    stopped: bool = False  # the run ended early (patience ran out)
    history: list[dict[str, Any]] = field(default_factory=list)  # one entry per step, epoch or validation

    def record(self, score: float, at: int, higher_is_better: bool = True, min_delta: float = 0.0) -> bool:
        """Note a validation score reached at epoch or step `at`; True if it is the best so far.

        A better score must beat the best by more than `min_delta`; a NaN score never does.
        On a new best the patience count restarts, otherwise it grows by one.
        """
        if self.best_score is None:
            improved = not math.isnan(score)
        elif higher_is_better:
            improved = score > self.best_score + min_delta
        else:
            improved = score < self.best_score - min_delta
        if improved:
            self.best_score, self.best_at, self.bad, self.seconds_to_best = score, at, 0, self.elapsed
        else:
            self.bad += 1
        return improved

    def should_stop(self, patience: int) -> bool:
        """True once `patience` validations in a row have not beaten the best."""
        return self.bad >= patience

    def best_text(self, digits: int = 4) -> str:
        """The best score and when, for progress output ("0.4213@7"; "none" before the first)."""
        return "none" if self.best_score is None else f"{self.best_score:.{digits}f}@{self.best_at}"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types only: fits json.dump and torch.load(weights_only=True)."""
        return asdict(self)

    @classmethod
    def from_dict(cls: type[S], saved: dict[str, Any], source: object = "checkpoint") -> S:
        """The state `to_dict` wrote; keys that are not fields are ignored, a missing field is an InputError
        naming `source` (the checkpoint's path)."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in saved]
        if missing:
            raise InputError(
                f"{source}: the saved run state lacks {', '.join(missing)} (written by an older "
                "tslrec); start over with --force (force=True from Python)"
            )
        return cls(**{n: saved[n] for n in names})
