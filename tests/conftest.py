"""Shared fixtures: small hand-built datasets written as the file formats users bring."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest


def write_atomic(
    folder: Path,
    rows: list[tuple],
    header: str = "user_id:token\titem_id:token\trating:float\ttimestamp:float",
    name: str = "toy",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.inter"
    path.write_text(header + "\n" + "\n".join("\t".join(str(x) for x in r) for r in rows) + "\n")
    return path


@pytest.fixture
def cyclic_sequences() -> list[np.ndarray]:
    """Users walk a fixed cycle 1 -> 2 -> ... -> 8 -> 1 from different starting points: next item is deterministic."""
    n = 8
    seqs = []
    for u in range(64):
        start = u % n
        length = 6 + u % 7
        seqs.append(np.array([(start + t) % n + 1 for t in range(length)], dtype=np.int64))
    return seqs


@contextmanager
def lock_held_elsewhere(path: Path) -> Iterator[None]:
    """Another live process holds an exclusive flock on `path` for the duration of the block (then it is killed,
    and the kernel drops its lock)."""
    holder = (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_CREAT | os.O_RDWR); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)"
    )
    other = subprocess.Popen([sys.executable, "-c", holder, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        yield
    finally:
        other.kill()
        other.wait()
