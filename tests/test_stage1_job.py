"""`tslrec stage1` end to end on a user's own file, a fake `tslrec train` folder and the tiny LLM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage1_helpers import clustered_items, tiny_llama_dir, user_sequences  # noqa: F401

from tslrec.core.artifacts import load_tensors, read_json, save_tensors, write_json
from tslrec.data import DataConfig, load_dataset
from tslrec.pipelines.cli import main


def write_train_dir(tmp_path, table: np.ndarray, seqs: list[np.ndarray]):
    """A dataset file in S3-Rec format plus the folder `tslrec train --export-item-embeddings` would write."""
    data_file = tmp_path / "toy.txt"
    data_file.write_text("".join(f"u{u} " + " ".join(f"i{i}" for i in s) + "\n" for u, s in enumerate(seqs)))
    ds = load_dataset(str(data_file), DataConfig())
    # the item table in the dataset's internal id order (ids are remapped when read)
    emb = np.zeros((ds.num_items + 1, table.shape[1]), dtype=np.float32)
    for internal, original in enumerate(ds.item_ids[1:], start=1):
        emb[internal] = table[int(original[1:])]
    out = tmp_path / "train"
    save_tensors(out / "item_embeddings.safetensors", {"embeddings": torch.from_numpy(emb)})
    write_json(
        out / "metrics.json",
        {
            "dataset": ds.name,
            "model": "sasrec",
            "dataset_info": {"name": ds.name, "hash": ds.hash, "items": ds.num_items},
            "config": {"data": {"kcore": 0, "min_rating": None, "max_len": 50}},
        },
    )
    return out, data_file, ds


@pytest.fixture
def train_dir(tmp_path):
    table, truth = clustered_items(n_items=50, dim=8, k=4, seed=2)
    return write_train_dir(tmp_path, table, user_sequences(truth, n_users=40, k=4, seed=2, length=(5, 12)))


def run_cli(*args: str) -> int:
    return main(["stage1", *args])


def stage1_args(folder, data_file, out, llm, *extra: str) -> list[str]:
    """`tslrec stage1` arguments for the toy data: K = 4, CPU, no progress bars, then `extra`."""
    paths = ["--train-dir", str(folder), "--dataset", str(data_file), "--out", str(out), "--llm", str(llm)]
    return [*paths, "--k", "4", "--device", "cpu", "--no-progress", *extra]


def test_stage1_job_trains_and_targets_use_training_items_only(train_dir, tiny_llama_dir, tmp_path, capsys):
    folder, data_file, ds = train_dir
    out = tmp_path / "s1"
    extra = "--epochs 2 --batch-size 8 --precision float32 --lr 5e-3 --head-lr 1e-2 --untuned-baseline none".split()
    code = run_cli(*stage1_args(folder, data_file, out, tiny_llama_dir, *extra))
    assert code == 0, capsys.readouterr().err
    metrics = read_json(out / "metrics.json")
    assert metrics["metrics"]["mse"] < metrics["metrics"]["mse_global_mean"]
    assert read_json(out / "config.json")["run"]["dataset_hash"] == ds.hash
    assert "valid_mse" in (out / "history.csv").read_text().splitlines()[0] and (out / "learning_curve.png").is_file()
    groups = load_tensors(out / "groups.safetensors")
    item_group = groups["item_group"].numpy()
    for u, seq in enumerate(ds.sequences):  # targets = histogram of seq[:-2], never of the last two items
        counts = np.bincount(item_group[seq[:-2]], minlength=4)
        assert np.allclose(groups["user_targets"][u].numpy(), counts / counts.sum(), atol=1e-6)
    assert "held-out-user MSE" in capsys.readouterr().out


def test_stage1_targets_never_count_validation_or_test_items(tiny_llama_dir, tmp_path):
    # Training items come from clusters 0-2 only; every user's validation and test items from cluster 3.
    # k-means puts cluster 3 in a group of its own, so the job's targets must give that group no mass.
    table, truth = clustered_items(n_items=60, dim=8, k=4, seed=3)
    rng = np.random.default_rng(3)
    held_out = np.flatnonzero(truth == 3)
    train_seqs = user_sequences(np.where(truth == 3, -1, truth), n_users=30, k=3, seed=3, length=(4, 9))
    seqs = [np.concatenate([s, rng.choice(held_out, size=2)]) for s in train_seqs]
    folder, data_file, ds = write_train_dir(tmp_path, table, seqs)
    out = tmp_path / "s1"
    extra = "--max-steps 1 --batch-size 8 --precision float32 --untuned-baseline none".split()
    code = run_cli(*stage1_args(folder, data_file, out, tiny_llama_dir, *extra))
    assert code == 0
    groups = load_tensors(out / "groups.safetensors")
    held_internal = [i for i, orig in enumerate(ds.item_ids) if i > 0 and truth[int(orig[1:])] == 3]
    held_groups = set(groups["item_group"][held_internal].tolist())
    assert len(held_groups) == 1  # cluster 3 is one k-means group ...
    train_internal = {int(i) for s in ds.sequences for i in s[:-2]}
    assert held_groups.isdisjoint(
        groups["item_group"][sorted(train_internal)].tolist()
    )  # ... that no training item is in
    assert float(groups["user_targets"][:, held_groups.pop()].abs().max()) == 0.0
    assert torch.allclose(groups["user_targets"].sum(1), torch.ones(len(ds.sequences)))


@pytest.mark.parametrize("case", ["rows", "nan", "hash", "no_embeddings", "unknown_llm"])
def test_stage1_job_bad_inputs_exit_2(train_dir, tiny_llama_dir, tmp_path, capsys, case):
    folder, data_file, ds = train_dir
    llm = str(tiny_llama_dir)
    if case == "rows":
        emb = load_tensors(folder / "item_embeddings.safetensors")["embeddings"]
        save_tensors(folder / "item_embeddings.safetensors", {"embeddings": emb[:-3]})
    elif case == "nan":
        emb = load_tensors(folder / "item_embeddings.safetensors")["embeddings"]
        emb[5, 0] = float("nan")
        save_tensors(folder / "item_embeddings.safetensors", {"embeddings": emb})
    elif case == "hash":
        data_file.write_text(data_file.read_text().replace("u0 ", "u0 i1 ", 1))
    elif case == "no_embeddings":
        (folder / "item_embeddings.safetensors").unlink()
    elif case == "unknown_llm":
        llm = "not-a-model"
    code = run_cli(*stage1_args(folder, data_file, tmp_path / "x", llm))
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert {
        "rows": "has shape (48, 8), expected [51, H]",
        "nan": "NaN",
        "hash": "hash",
        "no_embeddings": "--export-item-embeddings",
        "unknown_llm": "not a built-in model",
    }[case] in err
