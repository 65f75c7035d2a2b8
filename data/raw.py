"""What every reader returns (`RawInteractions`) and the parsing it shares: lines, numbers, item text."""

from __future__ import annotations

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


@dataclass(frozen=True)
class Columns:
    """The header names a table format takes for each field; the first is the one its messages suggest."""

    user: tuple[str, ...] = ("user_id",)
    item: tuple[str, ...] = ("item_id",)
    timestamp: tuple[str, ...] = ("timestamp",)
    rating: tuple[str, ...] = ("rating",)
    type_suffix: str = ""  # after a suggested header name (RecBole's ':token')


def from_table(
    path: Path, header: list[str], rows: list[list[str]], columns: Columns, item_text: dict[str, str] | None = None
) -> RawInteractions:
    """The interactions of a table with a header (rows from its second line): user and item columns required,
    timestamp and rating optional; a missing column -> InputError naming it and the header."""

    def column(names: tuple[str, ...], required: bool) -> list[str] | None:
        j = next((header.index(n) for n in names if n in header), None)
        if j is None and required:
            raise InputError(
                f"{path}: missing column '{names[0]}' (header has {', '.join(header)}); "
                f"add it to the header as '{names[0]}{columns.type_suffix}'"
            )
        return None if j is None else [r[j] for r in rows]

    ts, rt = column(columns.timestamp, False), column(columns.rating, False)
    return RawInteractions(
        source=str(path),
        users=np.asarray(column(columns.user, True), dtype=object),
        items=np.asarray(column(columns.item, True), dtype=object),
        timestamps=None if ts is None else floats(ts, str(path), "timestamp", first_line=2),
        ratings=None if rt is None else floats(rt, str(path), "rating", first_line=2),
        item_text=item_text,
    )


def read_lines(path: Path, encoding: str = "utf-8") -> list[str]:
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path")
    lines = path.read_text(encoding=encoding, errors="replace").splitlines()
    lines = [ln for ln in lines if ln.strip()]
    if not lines:
        raise InputError(f"{path}: file is empty; it needs one interaction per line")
    return lines


def floats(values: list[str], source: str, field: str, first_line: int) -> np.ndarray:
    """The column as float64; a non-numeric, NaN or infinite value -> InputError naming the file, line and field.
    `first_line` is the line number of values[0] in the file."""
    try:
        out = np.asarray(values, dtype=np.float64)
    except ValueError:
        i = next(i for i, v in enumerate(values) if not is_number(v))
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


def is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


TITLE_COLUMNS = ("title", "movie_title", "name", "item_name")
YEAR_COLUMNS = ("release_year", "year")
GENRE_COLUMNS = ("genre", "genres", "class", "categories", "category")


def item_text_from_fields(fields: dict[str, str]) -> str:
    """'Title (Year); genres: A B' from whatever of title, year and genres a source has."""
    title = next((fields[c] for c in TITLE_COLUMNS if fields.get(c)), "")
    year = next((fields[c] for c in YEAR_COLUMNS if fields.get(c)), "")
    if year.endswith(".0"):
        year = year[:-2]
    genres = next((fields[c] for c in GENRE_COLUMNS if fields.get(c)), "")
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
