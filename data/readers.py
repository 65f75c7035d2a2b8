"""Readers for interaction files. Each returns `RawInteractions`; errors are one-line InputErrors."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tslrec.core.errors import InputError


@dataclass
class RawInteractions:
    """Interactions as read from disk, before any filtering."""

    source: str  # file the rows came from, for error messages
    users: np.ndarray  # [R] original user ids (str)
    items: np.ndarray  # [R] original item ids (str)
    timestamps: np.ndarray | None  # [R] float, or None when the file has no time (order = row order)
    ratings: np.ndarray | None  # [R] float, or None
    item_text: dict[str, str] | None  # original item id -> text, or None


def _read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path")
    lines = path.read_text(encoding=encoding, errors="replace").splitlines()
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise InputError(f"{path}: file is empty; it needs one interaction per line")
    return lines


def _floats(values: list[str], source: str, field: str, first_line: int) -> np.ndarray:
    """The column as float64; a non-numeric, NaN or infinite value -> InputError naming the file, line and field.
    `first_line` is the line number of values[0] in the file."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except ValueError:
        i = next(i for i, v in enumerate(values) if not _is_number(v))
        raise InputError(
            f"{source}: line {i + first_line}, field '{field}' has a non-numeric value {values[i]!r}; "
            "it must be a number"
        ) from None
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"{source}: line {i + first_line}, field '{field}' is {values[i]!r}; it must be a finite "
            "number (fix or drop that row)"
        )
    return out


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


# ---------------------------------------------------------------- RecBole atomic files
def _atomic_table(path: Path, text: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header names (without ':type') and rows of a tab-separated atomic file."""
    lines = _read_lines(path) if text is None else [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise InputError(f"{path}: file is empty; it needs a header line and rows")
    header = [h.split(":")[0].strip() for h in lines[0].split("\t")]
    rows = [ln.split("\t") for ln in lines[1:]]
    if not rows:
        raise InputError(f"{path}: file has a header but no rows")
    for i, r in enumerate(rows):
        if len(r) != len(header):
            raise InputError(
                f"{path}: line {i + 2} has {len(r)} fields, the header has {len(header)}; fix the tab separation"
            )
    return header, rows


def _column(
    header: list[str], rows: list[list[str]], names: tuple[str, ...], path: Path, required: bool
) -> list[str] | None:
    for n in names:
        if n in header:
            j = header.index(n)
            return [r[j] for r in rows]
    if required:
        raise InputError(
            f"{path}: missing column '{names[0]}' (header has {', '.join(header)}); "
            f"add it to the header as '{names[0]}:token'"
        )
    return None


def read_atomic(
    inter: Path, item: Path | None = None, inter_text: str | None = None, item_text: str | None = None
) -> RawInteractions:
    """RecBole atomic files: `.inter` (user_id, item_id[, timestamp][, rating]) and an optional `.item`."""
    header, rows = _atomic_table(inter, inter_text)
    users = _column(header, rows, ("user_id",), inter, required=True)
    items = _column(header, rows, ("item_id",), inter, required=True)
    ts = _column(header, rows, ("timestamp",), inter, required=False)
    rt = _column(header, rows, ("rating",), inter, required=False)
    texts = None
    if item_text is not None or (item is not None and item.is_file()):
        texts = _atomic_item_text(item, item_text)
    return RawInteractions(
        source=str(inter),
        users=np.asarray(users, dtype=object),
        items=np.asarray(items, dtype=object),
        timestamps=None if ts is None else _floats(ts, str(inter), "timestamp", first_line=2),
        ratings=None if rt is None else _floats(rt, str(inter), "rating", first_line=2),
        item_text=texts,
    )


_TITLE_COLUMNS = ("title", "movie_title", "name", "item_name")
_YEAR_COLUMNS = ("release_year", "year")
_GENRE_COLUMNS = ("genre", "genres", "class", "categories", "category")


def item_text_from_fields(fields: dict[str, str]) -> str:
    """'Title (Year); genres: A B' from whatever of title, year and genres a source has."""
    title = next((fields[c] for c in _TITLE_COLUMNS if fields.get(c)), "")
    year = next((fields[c] for c in _YEAR_COLUMNS if fields.get(c)), "")
    if year.endswith(".0"):
        year = year[:-2]
    genres = next((fields[c] for c in _GENRE_COLUMNS if fields.get(c)), "")
    text = title
    if year and f"({year})" not in title:
        text = f"{title} ({year})" if title else year
    if genres:
        text = f"{text}; genres: {genres}" if text else f"genres: {genres}"
    return text.strip()


def item_title(text: str) -> str:
    """The title part of an `item_text_from_fields` text: 'Title (Year)' without '; genres: ...' ('' for none)."""
    if text.startswith("genres: "):
        return ""
    return text.partition("; genres: ")[0].strip()


def _atomic_item_text(path: Path | None, text: str | None) -> dict[str, str]:
    header, rows = _atomic_table(path, text)
    if "item_id" not in header:
        raise InputError(f"{path}: missing column 'item_id'; the .item file must have an 'item_id:token' column")
    j = header.index("item_id")
    known = set(_TITLE_COLUMNS + _YEAR_COLUMNS + _GENRE_COLUMNS)
    if not known & set(header):
        raise InputError(
            f"{path}: no text column (expected one of {', '.join(_TITLE_COLUMNS)}); add a 'title:token_seq' column"
        )
    return {r[j]: item_text_from_fields(dict(zip(header, r))) for r in rows}


# ---------------------------------------------------------------- S3-Rec sequence files
def read_s3rec(path: Path) -> RawInteractions:
    """`user item item ...`, one line per user, items in time order."""
    users: list[str] = []
    items: list[str] = []
    for i, ln in enumerate(_read_lines(path)):
        parts = ln.split()
        if len(parts) < 2:
            raise InputError(f"{path}: line {i + 1} has a user but no items; each line is 'user item item ...'")
        users.extend([parts[0]] * (len(parts) - 1))
        items.extend(parts[1:])
    return RawInteractions(
        str(path), np.asarray(users, dtype=object), np.asarray(items, dtype=object), None, None, None
    )


# ---------------------------------------------------------------- raw MovieLens
ML100K_GENRES = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
]


def _split_rows(path: Path, sep: str, ncols: int, names: tuple[str, ...], encoding: str = "utf-8") -> list[list[str]]:
    rows = []
    for i, ln in enumerate(_read_lines(path, encoding)):
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
        timestamps=_floats([r[3] for r in rows], str(src), names[3], first_line=1),
        ratings=_floats([r[2] for r in rows], str(src), names[2], first_line=1),
        item_text=text,
    )
