"""Benchmark records: bench/results/<name>.json is a JSON list, one record per run."""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import sys
from pathlib import Path

from tslrec.core.artifacts import source_commit, write_json

RESULTS = Path(__file__).resolve().parent / "results"
KEY = ("dataset", "model", "variant", "seed", "device")


def git_commit() -> str:
    """$TSLREC_COMMIT if set (a copied tree on a GPU box, whose .git may be stale or absent), else the checkout's
    HEAD, with -dirty when tracked files other than bench/results (the records themselves) have changed."""
    return os.environ.get("TSLREC_COMMIT") or source_commit() or "unknown"


def command_line() -> str:
    return "python " + " ".join(shlex.quote(a) for a in sys.argv)


def load(name: str) -> list[dict]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else []


COMMIT_AT_START = git_commit()  # the code a long benchmark runs is the code it started with


def add(name: str, record: dict) -> None:
    """Append `record` (with command and the commit the process started at, unless the record names the commit of
    the code that produced it), replacing an earlier run with the same key."""
    record = {**record, "command": command_line(), "commit": record.get("commit") or COMMIT_AT_START}
    RESULTS.mkdir(parents=True, exist_ok=True)
    with open(RESULTS / f".{name}.lock", "w") as lock:  # benchmarks side by side may share a record file
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = [r for r in load(name) if tuple(r.get(k) for k in KEY) != tuple(record.get(k) for k in KEY)]
        write_json(RESULTS / f"{name}.json", records + [record])
