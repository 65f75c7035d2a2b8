"""The stage-2 export: round trip, and every corrupt or mismatched file is a one-line InputError."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from stage2_helpers import gate_train_argv, write_export, write_toy_dataset

from tslrec.core.errors import InputError
from tslrec.formats.item_table import TENSORS, load_item_embeddings, save_item_embeddings
from tslrec.pipelines.cli import main


@pytest.fixture
def toy(tmp_path):
    path, ds = write_toy_dataset(tmp_path / "data")
    return path, ds, write_export(tmp_path / "export", ds)


def test_round_trip_keeps_every_tensor_and_id(toy):
    _, ds, folder = toy
    written = load_file(str(folder / TENSORS))
    export = load_item_embeddings(folder, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    assert export.embeddings.shape == (ds.num_items + 1, 12) and torch.equal(export.embeddings, written["embeddings"])
    assert torch.all(export.embeddings[0] == 0) and torch.all(export.category_probs[0] == 0)
    assert torch.allclose(export.category_probs[1:].sum(1), torch.ones(ds.num_items))
    assert export.item_groups[0] == -1 and torch.equal(export.item_groups[1:], written["item_groups"][1:])
    assert export.item_ids == ds.item_ids
    assert np.array_equal(np.load(folder / "item_embeddings.npy"), export.embeddings.numpy())
    recbole = (folder / f"{ds.name}.itememb").read_text().splitlines()
    assert recbole[0] == "iid:token\titem_emb:float_seq" and len(recbole) == ds.num_items + 1
    assert recbole[1].split("\t")[0] == ds.item_ids[1]
    manifest = export.manifest
    assert manifest["dataset"] == {"name": ds.name, "hash": ds.hash, "num_items": ds.num_items}
    assert manifest["num_categories"] == 4 and manifest["has_item_groups"] and manifest["source"] == {"llm": "random"}
    assert not list(folder.parent.glob(".export*"))  # no temporary folder left behind


def test_rewrite_replaces_the_folder_atomically(toy):
    _, ds, folder = toy
    save_item_embeddings(folder, torch.ones(ds.num_items + 1, 3), ds.item_ids, ds.name, ds.hash)
    export = load_item_embeddings(folder)
    assert export.embeddings.shape[1] == 3 and export.category_probs is None and export.item_groups is None
    assert not (folder / "category_probs.npy").exists()


def _rewrite_tensor(folder, name, value):
    tensors = load_file(str(folder / TENSORS))
    tensors[name] = value(tensors[name])
    save_file(tensors, str(folder / TENSORS))


def _edit_manifest(folder, edit):
    m = json.loads((folder / "manifest.json").read_text())
    edit(m)
    (folder / "manifest.json").write_text(json.dumps(m))


CORRUPTIONS = {
    # case: (what to break, words the one-line message must contain, check against the dataset?)
    "dimension": (lambda f: _rewrite_tensor(f, "embeddings", lambda t: t[:, :5].contiguous()), "shape", False),
    "rows_vs_dataset": (lambda f: _edit_manifest(f, lambda m: m["dataset"].update(num_items=7)), "shape", True),
    "num_items": (None, "items", True),
    "item_id": (
        lambda f: (f / "item_ids.tsv").write_text((f / "item_ids.tsv").read_text().replace("\ti", "\tx", 1)),
        "row 1",
        True,
    ),
    "hash": (lambda f: _edit_manifest(f, lambda m: m["dataset"].update(hash="0" * 64)), "dataset.hash", True),
    "nan": (
        lambda f: _rewrite_tensor(f, "embeddings", lambda t: t.index_fill(0, torch.tensor([3]), float("nan"))),
        "NaN",
        False,
    ),
    "nan_probs": (
        lambda f: _rewrite_tensor(f, "category_probs", lambda t: t.index_fill(0, torch.tensor([2]), float("inf"))),
        "category_probs",
        False,
    ),
    "truncated": (lambda f: (f / TENSORS).write_bytes((f / TENSORS).read_bytes()[:-40]), "truncated", False),
    "not_safetensors": (lambda f: (f / TENSORS).write_bytes(b"\x00garbage"), "corrupt", False),
    "missing_tensors": (lambda f: (f / TENSORS).unlink(), "not found", False),
    "missing_manifest": (lambda f: (f / "manifest.json").unlink(), "tslrec stage2", False),
    "bad_manifest_json": (lambda f: (f / "manifest.json").write_text("{oops"), "not valid JSON", False),
    "other_format": (lambda f: _edit_manifest(f, lambda m: m.update(format="other/9")), "format", False),
    "missing_ids": (lambda f: (f / "item_ids.tsv").unlink(), "item_ids.tsv", False),
    "bad_groups": (lambda f: _rewrite_tensor(f, "item_groups", lambda t: t.float()), "item_groups", False),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_every_bad_export_is_a_one_line_input_error(toy, case):
    _, ds, folder = toy
    breaker, words, against_dataset = CORRUPTIONS[case]
    if breaker is not None:
        breaker(folder)
    facts = dict(num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    if case == "num_items":
        facts["num_items"] = ds.num_items + 1
    with pytest.raises(InputError) as err:
        load_item_embeddings(folder, **(facts if against_dataset or case == "num_items" else {}))
    message = str(err.value)
    assert "\n" not in message and words in message, message


def test_train_with_an_export_of_another_dataset_exits_2(tmp_path, capsys):
    data, ds = write_toy_dataset(tmp_path / "a", seed=0)
    _, other = write_toy_dataset(tmp_path / "b", seed=1)
    export = write_export(tmp_path / "export", other)
    code = main(
        [
            *gate_train_argv(data, export, tmp_path / "run"),
            "--epochs",
            "1",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # rejected before any training or output


def test_the_documented_snippet_loads_a_stage0_table_and_checks_the_dataset(tmp_path):
    """A `tslrec train --export-item-embeddings` folder is an export too: manifest, id map, the same loader, which
    checks the item count, the dataset hash and the ids it is given."""
    import pytest
    from stage2_helpers import write_toy_dataset

    from tslrec.core.errors import InputError
    from tslrec.data import DataConfig, load_dataset
    from tslrec.formats.item_table import load_item_embeddings
    from tslrec.pipelines.cli import main

    data, _ = write_toy_dataset(tmp_path / "data")
    out = tmp_path / "stage0"
    argv = ["train", "--dataset", str(data), "--out", str(out), "--epochs", "1", "--hidden", "8"]
    assert main([*argv, "--device", "cpu", "--no-progress", "--export-item-embeddings"]) == 0
    ds = load_dataset(str(data), DataConfig())
    emb = load_item_embeddings(out, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids).embeddings
    assert emb.shape == (ds.num_items + 1, 8) and float(emb[0].abs().sum()) == 0.0
    with pytest.raises(InputError, match="dataset.hash"):
        load_item_embeddings(out, num_items=ds.num_items, dataset_hash="0" * 64)
