"""Atomic writes leave nothing behind: the temporary files and folders of a writer killed inside the block are
removed by the next write of the same target, and a live writer's are left alone."""

from __future__ import annotations

import os
import subprocess
import sys

from tslrec.core.artifacts import atomic_folder, write_json


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_temporaries_go_with_the_next_write_and_a_live_ones_stay(tmp_path):
    dead, live = dead_pid(), os.getppid()
    killed_file = tmp_path / f".metrics.json.{dead}.abc123.tmp"  # what SIGKILL inside `atomic_path` leaves
    killed_folder = tmp_path / f".export.{dead}.xyz789"  # ... and inside `atomic_folder`
    running = tmp_path / f".metrics.json.{live}.def456.tmp"
    other_target = tmp_path / f".other.json.{dead}.ghi012.tmp"
    killed_file.write_text("half")
    killed_folder.mkdir()
    (killed_folder / "table.safetensors").write_text("half")
    running.write_text("in progress")
    other_target.write_text("half")

    write_json(tmp_path / "metrics.json", {"a": 1})
    with atomic_folder(tmp_path / "export") as folder:
        (folder / "manifest.json").write_text("{}")

    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["metrics.json", "export", running.name, other_target.name])
