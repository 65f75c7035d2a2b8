"""Comma-separated tables with a header: user and item columns (`user_id`/`user`/`userId`, `item_id`/`item`/
`itemId`/`movieId`), optional `timestamp` and `rating`; quoted fields as the csv module reads them."""

from __future__ import annotations

import csv
from pathlib import Path

from tslrec.core.errors import InputError

from ..raw import Columns, RawInteractions, from_table, read_lines
from . import Reader, register_reader

CSV_COLUMNS = Columns(
    user=("user_id", "user", "userId"),
    item=("item_id", "item", "itemId", "movieId"),
    timestamp=("timestamp", "time", "ts"),
)


@register_reader
class CsvReader(Reader):
    what = "a .csv with a header"

    def matches(self, path: Path) -> bool:
        return path.suffix == ".csv"

    def read(self, path: Path) -> RawInteractions:
        header, *rows = list(csv.reader(read_lines(path)))
        header = [h.strip() for h in header]
        if not rows:
            raise InputError(f"{path}: file has a header but no rows")
        bad = next((i for i, r in enumerate(rows) if len(r) != len(header)), None)
        if bad is not None:
            raise InputError(
                f"{path}: line {bad + 2} has {len(rows[bad])} fields, the header has {len(header)}; fix the commas"
            )
        return from_table(path, header, rows, CSV_COLUMNS)
