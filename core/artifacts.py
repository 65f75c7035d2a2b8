"""Small I/O helpers shared by every layer: atomic writes, safe weight files, hashes, versions.

Nothing here unpickles: weights are safetensors, everything else is JSON.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import InputError

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None


def _usual_mode(folder: bool) -> int:
    """The mode a new file (0o666) or folder (0o777) gets under the process's umask: what `open` and `mkdir` give."""
    umask = os.umask(0)
    os.umask(umask)
    return (0o777 if folder else 0o666) & ~umask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _temporary_prefix(target: Path) -> str:
    """`.<name>.<pid>.`: the temporary files and folders of `target` carry their writer's pid. Those of a writer
    that is gone (killed inside the block) are removed here, before another is made; a live writer's are kept."""
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*"):
        pid = stale.name[len(target.name) + 2 :].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)
    return f".{target.name}.{os.getpid()}."


@contextlib.contextmanager
def atomic_folder(folder: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary folder next to `folder`; it replaces `folder` (and whatever an older, perhaps
    half-written run left there) only if the block succeeds, so a folder that exists is complete."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(folder), dir=folder.parent))
    try:
        yield tmp
        os.chmod(tmp, _usual_mode(folder=True))  # mkdtemp makes it private; the result is shared like any folder
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _usual_mode(folder=False))  # mkstemp makes it private; the result gets the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_json(path: str | Path, obj: Any) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | Path, what: str = "JSON file") -> Any:
    """Read a JSON file or raise a one-line InputError naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found; check the path or re-run the step that writes it")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputError(
            f"{path}: {what} is not valid JSON ({e.__class__.__name__} at {getattr(e, 'pos', '?')}); "
            "re-run the step that writes it"
        ) from None


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Save tensors as safetensors, atomically."""
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def load_tensors(path: str | Path, what: str = "weights file") -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing or corrupt file is a one-line InputError."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found; check the path or re-run the step that writes it")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise InputError(
            f"{path}: {what} is corrupt or truncated ({str(e).splitlines()[0][:80]}); re-run the step that writes it"
        ) from None


def check_finite(name: str, tensor: torch.Tensor, source: str | Path) -> None:
    """Raise a one-line InputError if `tensor` holds NaN or inf."""
    if not torch.isfinite(tensor).all():
        bad = int((~torch.isfinite(tensor)).sum())
        raise InputError(f"{source}: field '{name}' holds {bad} NaN/inf values; regenerate the file")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes results."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("tslrec", "torch", "numpy", "scikit-learn", "transformers", "peft", "accelerate"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    commit = source_commit()
    if commit:
        out["tslrec_commit"] = commit
    return out


@functools.cache
def source_commit() -> str | None:
    """The git commit of the tslrec checkout this code runs from (an editable install), -dirty when its tracked
    files other than bench/results have changed; None outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True)
        if head.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", ":(top,exclude)bench/results"],
            cwd=here,
            capture_output=True,
            text=True,
        )
    except OSError:
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; anything else is passed to torch.device."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"Runtime.device: unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None


CUBLAS_WORKSPACE = ":4096:8"  # cuBLAS needs a fixed workspace to give the same sums on every run


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block on `threads` torch CPU threads, then restore the count."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def use_deterministic_kernels(device: torch.device, warn_only: bool = False) -> None:
    """On CUDA, make the kernels reproducible: the same seed and inputs give the same numbers.

    Sets CUBLAS_WORKSPACE_CONFIG (unless the user set it) before the first cuBLAS call,
    turns on `torch.use_deterministic_algorithms` and turns off cuDNN autotuning. A no-op on
    other devices (CPU kernels are deterministic for a fixed thread count). Process-wide: call
    it once, right after `resolve_device`, before any model touches the GPU.

    warn_only: an op with no deterministic CUDA kernel warns instead of raising. The ops the
    backbones and stage 1 use all have one; Lite-LLM4Rec's running mean over item states
    (`torch.cumsum` on floats) does not, so the Lite job passes warn_only=True.
    """
    if device.type != "cuda":
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.benchmark = False


def lock_holder_alive(path: Path) -> bool:
    """Whether the process that last took the lock file `path` (see `file_lock`) runs on this host now; read-only,
    so asking never takes a lock another process is about to."""
    try:
        host, pid = path.read_text().split()
    except (OSError, ValueError):
        return False
    return host == socket.gethostname() and pid.isdigit() and _alive(int(pid))


@contextlib.contextmanager
def file_lock(path: Path, wait: bool = False) -> Iterator[bool]:
    """Hold an exclusive lock on the file `path`; yields False if another process holds it (wait: block until free).

    The lock is `flock` on an open file: the kernel drops it when its process ends, killed or not, so a
    stale lock cannot block anyone. The file stays (it only names the last owner). Without fcntl
    (Windows) every lock is yours: run one process per folder there.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        yield True
        return
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
        yield True
    finally:
        os.close(fd)  # releases the lock
