"""S3-Rec sequence files: `user item item ...`, one line per user, items in time order (a `.txt`); item text from an
optional RecBole `.item` file beside it (`x.item`: `item_id:token`, `title:token_seq`, ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tslrec.core.errors import InputError

from ..raw import RawInteractions, read_lines
from . import Reader, register_reader
from .atomic import read_item_text


@register_reader
class S3RecReader(Reader):
    what = "an S3-Rec .txt"

    def matches(self, path: Path) -> bool:
        return path.suffix == ".txt"

    def read(self, path: Path) -> RawInteractions:
        raw = read_s3rec(path)
        if path.with_suffix(".item").is_file():
            raw.item_text = read_item_text(path.with_suffix(".item"))
        return raw


def read_s3rec(path: Path) -> RawInteractions:
    """`user item item ...`, one line per user, items in time order."""
    users: list[str] = []
    items: list[str] = []
    for i, ln in enumerate(read_lines(path)):
        parts = ln.split()
        if len(parts) < 2:
            raise InputError(f"{path}: line {i + 1} has a user but no items; each line is 'user item item ...'")
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
    return RawInteractions(
        str(path), np.asarray(users, dtype=object), np.asarray(items, dtype=object), None, None, None
    )
