"""A run's curve (the rows of history.csv) to experiment trackers through accelerate, when the run ends."""

from __future__ import annotations

from pathlib import Path

from tslrec.core.errors import InputError


def check_trackers(names: list[str]) -> None:
    """One-line InputError for a name accelerate has no tracker for, or one whose package is not installed."""
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS, get_available_trackers
    from accelerate.utils import LoggerType

    unknown = [n for n in names if n not in LOGGER_TYPE_TO_CLASS]
    if unknown:
        raise InputError(
            f"TrainingRuntime.log_with: no tracker {', '.join(unknown)}; use {', '.join(LOGGER_TYPE_TO_CLASS)}"
        )
    available = {str(t) for t in get_available_trackers()}
    missing = [n for n in names if n in LoggerType.list() and n not in available]
    if missing:
        raise InputError(
            f"TrainingRuntime.log_with: {', '.join(missing)} is not installed; pip install {' '.join(missing)}"
        )


def log_history(folder: Path, rows: list[dict], x: str, names: list[str]) -> None:
    """Each row's numbers at step row[x] (epoch or step) to each tracker, as a run named after `folder`."""
    if not names or not rows:
        return
    from accelerate.tracking import LOGGER_TYPE_TO_CLASS

    for name in names:
        kind = LOGGER_TYPE_TO_CLASS[name]
        tracker = kind(folder.name, folder / "trackers") if kind.requires_logging_directory else kind(folder.name)
        tracker.start()
        for row in rows:
            values = {k: v for k, v in row.items() if k != x and isinstance(v, (int, float)) and v == v}  # no NaN
            tracker.log(values, step=int(row[x]))
        tracker.finish()
