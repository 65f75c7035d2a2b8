"""Original GroupLens MovieLens folders: `ratings.dat` + `movies.dat` (ML-1M) or `u.data` + `u.item` (ML-100K)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tslrec.core.errors import InputError

from ..raw import RawInteractions, floats, item_text_from_fields, read_lines
from . import Reader, register_reader


@register_reader
class MovieLensReader(Reader):
    what = "a MovieLens folder"
    in_folder = "ratings.dat or u.data"

    def matches(self, path: Path) -> bool:
        return path.is_dir() and any((path / f.ratings.name).is_file() for f in _MOVIELENS_FORMATS)

    def read(self, path: Path) -> RawInteractions:
        return read_movielens_raw(path)


ML100K_GENRES = (
    "unknown|Action|Adventure|Animation|Children's|Comedy|Crime|Documentary|Drama|Fantasy|Film-Noir|Horror|Musical|"
    "Mystery|Romance|Sci-Fi|Thriller|War|Western"
).split("|")


def _split_rows(path: Path, sep: str, ncols: int, names: tuple[str, ...], encoding: str = "utf-8") -> list[list[str]]:
    rows = []
    for i, ln in enumerate(read_lines(path, encoding)):
        r = ln.split(sep)
        if len(r) < ncols:
            raise InputError(
                f"{path}: line {i + 1} has {len(r)} fields, expected {ncols} ({', '.join(names)}) separated by {sep!r}"
            )
        rows.append(r)
    return rows


@dataclass(frozen=True)
class _SplitFile:
    """A file of `sep`-separated lines with at least `fields` fields; `names` describe them in error messages."""

    name: str
    sep: str
    fields: int
    names: tuple[str, ...]

    def read(self, folder: Path, encoding: str = "utf-8") -> list[list[str]]:
        return _split_rows(folder / self.name, self.sep, self.fields, self.names, encoding)


@dataclass(frozen=True)
class _MovieLensFormat:
    """One GroupLens release: its ratings file (user, item, rating, timestamp), its optional latin-1 item file and
    how an item row lists genres."""

    ratings: _SplitFile
    items: _SplitFile
    genre: Callable[[list[str]], str]  # item row -> space-separated genres


_MOVIELENS_FORMATS = (
    _MovieLensFormat(  # ML-1M
        _SplitFile("ratings.dat", "::", 4, ("UserID", "MovieID", "Rating", "Timestamp")),
        _SplitFile("movies.dat", "::", 3, ("MovieID", "Title", "Genres")),
        genre=lambda r: r[2].replace("|", " "),
    ),
    _MovieLensFormat(  # ML-100K
        _SplitFile("u.data", "\t", 4, ("user id", "item id", "rating", "timestamp")),
        _SplitFile("u.item", "|", 24, ("movie id", "title", "release date", "...", "19 genre flags")),
        genre=lambda r: " ".join(g for g, f in zip(ML100K_GENRES, r[5:24]) if f == "1"),
    ),
)


def read_movielens_raw(folder: Path) -> RawInteractions:
    """Original GroupLens files: `ratings.dat` + `movies.dat` (ML-1M) or `u.data` + `u.item` (ML-100K)."""
    fmt = next((f for f in _MOVIELENS_FORMATS if (folder / f.ratings.name).is_file()), None)
    if fmt is None:
        wanted = " or ".join(f.ratings.name for f in _MOVIELENS_FORMATS)
        raise InputError(f"{folder}: no {wanted} in this folder; point to a raw MovieLens folder")
    src = folder / fmt.ratings.name
    names = fmt.ratings.names
    rows = fmt.ratings.read(folder)
    text = None
    if (folder / fmt.items.name).is_file():
        text = {
            r[0]: item_text_from_fields({"title": r[1], "genre": fmt.genre(r)})
            for r in fmt.items.read(folder, encoding="latin-1")
        }
    return RawInteractions(
        source=str(src),
        users=np.asarray([r[0] for r in rows], dtype=object),
        items=np.asarray([r[1] for r in rows], dtype=object),
        timestamps=floats([r[3] for r in rows], str(src), names[3], first_line=1),
        ratings=floats([r[2] for r in rows], str(src), names[2], first_line=1),
        item_text=text,
    )
