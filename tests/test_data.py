"""Readers and the papers' preprocessing on hand-built files, real counts on the built-in datasets."""

import json

import numpy as np
import pytest
from conftest import write_atomic

from tslrec.core.errors import InputError
from tslrec.data import DataConfig, load_dataset
from tslrec.data.preprocess import kcore_mask
from tslrec.pipelines.cli import main


def test_chronological_order_with_stable_tie_break_and_remap(tmp_path):
    rows = [
        ("u1", "30", 5, 300),
        ("u1", "10", 5, 100),
        ("u1", "20", 5, 200),
        ("u2", "20", 4, 50),
        ("u2", "10", 4, 50),
        ("u2", "30", 4, 40),
    ]  # u2: 20 and 10 tie at 50, file order wins
    ds = load_dataset(str(write_atomic(tmp_path, rows)))
    assert ds.item_ids == ["[PAD]", "10", "20", "30"]  # numeric order, 0 = padding
    assert [s.tolist() for s in ds.sequences] == [[1, 2, 3], [3, 2, 1]]
    assert ds.user_ids == ["u1", "u2"]
    assert [s.tolist() for s in ds.train_sequences()] == [[1], [3]]


def test_kcore_repeats_until_nothing_changes():
    # a: 3 rows, b: 2, c: 1; item x has 3, y 2, z 1. 2-core removes z -> c has 0 ... then b still 2 rows
    users = np.array(["a", "a", "a", "b", "b", "c"])
    items = np.array(["x", "y", "z", "x", "y", "x"])
    keep = kcore_mask(users, items, 2)
    assert keep.tolist() == [True, True, False, True, True, False]
    # 3-core: every user needs 3 rows; after dropping b and c, x and y have 1 row -> everything goes
    assert not kcore_mask(users, items, 3).any()


def test_min_rating_and_dropping_short_users(tmp_path):
    rows = [("a", 1, 5, 1), ("a", 2, 5, 2), ("a", 3, 5, 3), ("a", 4, 1, 4), ("b", 1, 5, 1), ("b", 2, 5, 2)]
    ds = load_dataset(str(write_atomic(tmp_path, rows)), DataConfig(min_rating=4))
    assert ds.num_users == 1 and ds.dropped_users == 1
    assert ds.num_items == 3 and ds.num_interactions == 3


def test_s3rec_and_item_text(tmp_path):
    (tmp_path / "seq.txt").write_text("1 5 6 7\n2 6 7 8 9\n")
    ds = load_dataset(str(tmp_path / "seq.txt"))
    assert ds.num_users == 2 and ds.num_items == 5 and ds.item_text is None
    inter = write_atomic(tmp_path / "t", [("a", 1, 5, 1), ("a", 2, 5, 2), ("a", 3, 5, 3)])
    inter.with_suffix(".item").write_text(
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "1\tToy Story\t1995\tAnimation Comedy\n2\tHeat (1995)\t1995\tAction\n"
    )
    ds = load_dataset(str(inter))
    assert ds.item_text == ["", "Toy Story (1995); genres: Animation Comedy", "Heat (1995); genres: Action", ""]


def test_raw_movielens_folders(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::10::5::300\n1::20::3::100\n1::30::4::200\n")
    (tmp_path / "movies.dat").write_text("10::Heat (1995)::Action|Crime\n20::Up (2009)::Animation\n")
    ds = load_dataset(str(tmp_path))
    assert ds.sequences[0].tolist() == [2, 3, 1]  # 20 (t=100), 30, 10
    assert ds.item_text[1] == "Heat (1995); genres: Action Crime"
    old = tmp_path / "old"
    old.mkdir()
    (old / "u.data").write_text("1\t7\t5\t3\n1\t8\t5\t1\n1\t9\t5\t2\n")
    flags = ["0"] * 19
    flags[1] = "1"
    (old / "u.item").write_text("7|Heat (1995)|01-Jan-1995||http://x|" + "|".join(flags) + "\n")
    ds = load_dataset(str(old))
    assert ds.sequences[0].tolist() == [2, 3, 1]
    assert ds.item_text[1] == "Heat (1995); genres: Action"


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        ("", "file is empty"),
        ("user_id:token\ttimestamp:float\nu\t1\n", "missing column 'item_id'"),
        (
            "user_id:token\titem_id:token\ttimestamp:float\nu\t1\tyesterday\n",
            "field 'timestamp' has a non-numeric value 'yesterday'",
        ),
        ("user_id:token\titem_id:token\nu\t1\nu\t2\nv\t1\n", "no user has at least 3 items"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, content, message):
    path = tmp_path / "bad.inter"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError) as e:
        load_dataset(str(path))
    assert message in str(e.value) and "\n" not in str(e.value) and str(path) in str(e.value)


def test_describe_counts_the_test_inputs_max_len_cuts(tmp_path, capsys):
    """`data describe --max-len` was read and then only echoed back: it now counts the users whose test input (all
    but the last item) is longer than the window."""
    (tmp_path / "seq.txt").write_text("u1 5 6 7 8\nu2 6 7 8 9 5\nu3 5 6 7\n")  # test inputs: 3, 4, 2
    assert main(["data", "describe", str(tmp_path / "seq.txt"), "--max-len", "3", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["max_len"], info["users_with_test_input_over_max_len"]) == (3, 1)
    assert main(["data", "describe", str(tmp_path / "seq.txt"), "--max-len", "2"]) == 0
    assert "2 users (66.7%) have a longer test input" in capsys.readouterr().out


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["data", "describe", "no-such-dataset"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-dataset" in err and "ml-100k" in err


def test_builtin_ml100k_counts(capsys):
    assert main(["data", "describe", "ml-100k", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["users"], info["items"], info["interactions"]) == (943, 1682, 100000)
    assert info["has_item_text"]
    ds = load_dataset("ml-100k")
    assert ds.item_text[1] == "Toy Story (1995); genres: Animation Children's Comedy"


def test_builtin_ml1m_counts_match_the_paper():
    full = load_dataset("ml-1m")
    assert (full.num_users, full.num_items, full.num_interactions) == (6040, 3706, 1000209)
    core5 = load_dataset("ml-1m", DataConfig(kcore=5))
    assert (core5.num_users, core5.num_items, core5.num_interactions) == (6040, 3416, 999611)
