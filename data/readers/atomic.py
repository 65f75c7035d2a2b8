"""RecBole atomic files: a `.inter` (user_id, item_id[, timestamp][, rating]) and an optional `.item` beside it with
text columns (title, year, genres); or a folder holding a `.inter`."""

from __future__ import annotations

from pathlib import Path

from tslrec.core.errors import InputError

from ..raw import (
    GENRE_COLUMNS,
    TITLE_COLUMNS,
    YEAR_COLUMNS,
    Columns,
    RawInteractions,
    from_table,
    item_text_from_fields,
    read_lines,
)
from . import Reader, register_reader

ATOMIC_COLUMNS = Columns(type_suffix=":token")


@register_reader
class AtomicReader(Reader):
    what = "a RecBole .inter"
    in_folder = "a .inter file"

    def matches(self, path: Path) -> bool:
        return path.suffix == ".inter" or (path.is_dir() and any(path.glob("*.inter")))

    def read(self, path: Path) -> RawInteractions:
        inter = sorted(path.glob("*.inter"))[0] if path.is_dir() else path
        return read_atomic(inter, inter.with_suffix(".item"))


def _atomic_table(path: Path, text: str | None = None) -> tuple[list[str], list[list[str]]]:
    """Header names (without ':type') and rows of a tab-separated atomic file."""
    lines = read_lines(path) if text is None else [ln for ln in text.splitlines() if ln.strip()]
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


def read_atomic(
    inter: Path, item: Path | None = None, inter_text: str | None = None, item_text: str | None = None
) -> RawInteractions:
    """RecBole atomic files: `.inter` (user_id, item_id[, timestamp][, rating]) and an optional `.item`."""
    header, rows = _atomic_table(inter, inter_text)
    texts = None
    if item_text is not None or (item is not None and item.is_file()):
        texts = read_item_text(item, item_text)
    return from_table(inter, header, rows, ATOMIC_COLUMNS, texts)


def read_item_text(path: Path | None, text: str | None = None) -> dict[str, str]:
    """Original item id -> text from a RecBole `.item` file (item_id and a title, year or genre column)."""
    header, rows = _atomic_table(path, text)
    if "item_id" not in header:
        raise InputError(f"{path}: missing column 'item_id'; the .item file must have an 'item_id:token' column")
    j = header.index("item_id")
    known = set(TITLE_COLUMNS + YEAR_COLUMNS + GENRE_COLUMNS)
    if not known & set(header):
        raise InputError(
            f"{path}: no text column (expected one of {', '.join(TITLE_COLUMNS)}); add a 'title:token_seq' column"
        )
    return {r[j]: item_text_from_fields(dict(zip(header, r))) for r in rows}
