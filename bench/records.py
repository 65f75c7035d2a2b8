"""Benchmark records: bench/results/<name>.json is a JSON list, one record per run."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
from pathlib import Path
from typing import TypedDict, get_type_hints

from tslrec.core.artifacts import source_commit, write_json
from tslrec.core.errors import InputError

RESULTS = Path(__file__).resolve().parent / "results"
KEY = ("dataset", "model", "variant", "seed", "device")


class Record(TypedDict):
    """The fields every record has (a record may hold more: config, protocol, versions, ...)."""

    dataset: str
    model: str
    variant: str
    seed: int | None
    metrics: dict  # name -> value; empty where the benchmark measures only time
    timings: dict  # name -> seconds; empty where none was measured
    device: str  # the device, its CPU capability and threads, in words
    command: str  # the command that wrote it, from the repository root
    commit: str  # the code that produced it


def checked(record: dict, where: str) -> Record:
    """`record` if it has every field of `Record` with its type, else an InputError naming `where` and the field."""
    for key, kind in get_type_hints(Record).items():
        if key not in record:
            raise InputError(
                f"{where}: field '{key}' is missing; a benchmark record has {', '.join(Record.__annotations__)}"
            )
        if not isinstance(record[key], kind) or isinstance(record[key], bool):
            raise InputError(f"{where}: field '{key}' is {type(record[key]).__name__}, not {kind}; fix the record")
    return record  # type: ignore[return-value]


def git_commit() -> str:
    """$TSLREC_COMMIT if set (a copied tree on a GPU box, whose .git may be stale or absent), else the checkout's
    HEAD, with -dirty when tracked files other than bench/results (the records themselves) have changed."""
    return os.environ.get("TSLREC_COMMIT") or source_commit() or "unknown"


def command_line() -> str:
    """This process's command, as `python -m bench.<name> ...` when run as a module."""
    spec = getattr(sys.modules["__main__"], "__spec__", None)
    head = ["-m", spec.name] if spec is not None else sys.argv[:1]
    return "python " + " ".join(shlex.quote(a) for a in [*head, *sys.argv[1:]])


def load(name: str) -> list[Record]:
    """The records of bench/results/<name>.json (none if absent), each checked against `Record`."""
    path = RESULTS / f"{name}.json"
    records = json.loads(path.read_text()) if path.is_file() else []
    return [checked(r, f"{path} record {i}") for i, r in enumerate(records)]


COMMIT_AT_START = git_commit()  # the code a long benchmark runs is the code it started with


def add(name: str, record: dict) -> None:
    """Append `record` (with command and the commit the process started at, unless the record names the commit of
    the code that produced it), replacing an earlier run with the same key."""
    record = checked({**record, "command": command_line(), "commit": record.get("commit") or COMMIT_AT_START}, name)
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f".{name}.lock", "w") as lock:  # benchmarks side by side may share a record file
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = [r for r in load(name) if tuple(r.get(k) for k in KEY) != tuple(record.get(k) for k in KEY)]
        write_json(RESULTS / f"{name}.json", records + [record])
