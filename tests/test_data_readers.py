"""Dataset formats are registered readers: a .csv reads like the same rows as RecBole atomic files, and a format
registered elsewhere is read by `load_dataset` without touching the loader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import write_atomic

from tslrec.core.errors import InputError
from tslrec.data import load_dataset
from tslrec.data.raw import RawInteractions
from tslrec.data.readers import READERS, Reader, register_reader

ROWS = [("u1", "a", 3), ("u1", "b", 1), ("u1", "c", 2), ("u2", "b", 5), ("u2", "a", 4), ("u2", "c", 6)]


def test_a_csv_reads_as_the_same_rows_in_atomic_files(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("userId,movieId,rating,timestamp\n" + "".join(f'{u},"{i}",4.0,{t}\n' for u, i, t in ROWS))
    inter = write_atomic(tmp_path / "atomic", [(u, i, 4.0, t) for u, i, t in ROWS], name="x")
    a, b = load_dataset(str(csv)), load_dataset(str(inter))
    assert a.num_users == b.num_users == 2 and a.item_ids == b.item_ids
    assert all(np.array_equal(x, y) for x, y in zip(a.sequences, b.sequences))


def test_a_csv_without_an_item_column_names_it(tmp_path: Path) -> None:
    csv = tmp_path / "x.csv"
    csv.write_text("user,timestamp\nu1,1\n")
    with pytest.raises(InputError, match=r"x.csv: missing column 'item_id' \(header has user, timestamp\)"):
        load_dataset(str(csv))


def test_a_new_format_is_one_registered_reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tslrec.data.readers.READERS", list(READERS))

    @register_reader
    class PipeReader(Reader):
        what = "a .pipe"

        def matches(self, path: Path) -> bool:
            return path.suffix == ".pipe"

        def read(self, path: Path) -> RawInteractions:
            users, items = zip(*(line.split("|") for line in path.read_text().split()))
            return RawInteractions(
                str(path), np.array(users, dtype=object), np.array(items, dtype=object), None, None, None
            )

    path = tmp_path / "x.pipe"
    path.write_text("".join(f"{u}|{i}\n" for u, i, _ in ROWS))
    assert load_dataset(str(path)).num_interactions == len(ROWS)
    (tmp_path / "x.dat").write_text("1")
    with pytest.raises(InputError, match=r"unknown file type '.dat'; use a RecBole .inter, .*, a .pipe"):
        load_dataset(str(tmp_path / "x.dat"))


def test_an_s3rec_file_takes_item_text_from_an_item_file_beside_it(tmp_path: Path) -> None:
    (tmp_path / "seq.txt").write_text("1 5 6 7\n2 6 7 5\n")
    assert load_dataset(str(tmp_path / "seq.txt")).item_text is None
    (tmp_path / "seq.item").write_text("item_id:token\ttitle:token_seq\n5\tRed lipstick\n7\tNight cream\n")
    ds = load_dataset(str(tmp_path / "seq.txt"))
    assert dict(zip(ds.item_ids[1:], ds.item_text[1:])) == {"5": "Red lipstick", "6": "", "7": "Night cream"}
