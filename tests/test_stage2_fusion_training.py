"""Exported files load, through the project's loader, into a backbone trained from scratch, from the files alone."""

from __future__ import annotations

import shutil

import pytest
import torch
from stage2_helpers import gate_train_argv, write_export, write_toy_dataset

from tslrec.core.artifacts import load_tensors, read_json
from tslrec.formats.item_table import load_item_embeddings
from tslrec.pipelines.cli import main

TINY = ["--backbone", "sasrec", "--hidden", "8", "--layers", "1", "--epochs", "2", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fusion")
    data, ds = write_toy_dataset(tmp / "data")
    written = write_export(tmp / "written", ds)
    alone = tmp / "copied-export"
    shutil.copytree(written, alone)  # only the files travel: no stage-1 model, no LLM
    shutil.rmtree(written)
    return data, ds, alone


def test_gate_backbone_trains_from_the_export_folder_alone(toy, tmp_path, capsys):
    data, ds, export = toy
    out = tmp_path / "gate"
    code = main(
        [
            *gate_train_argv(data, export, out),
            *TINY,
        ]
    )
    assert code == 0, capsys.readouterr().err
    record = read_json(out / "metrics.json")
    assert record["variant"] == "gate" and record["model"] == "sasrec"
    assert record["side_information"]["fusion"] == {"kind": "gate", "finetune_llm_table": False}
    assert record["side_information"]["item_embeddings"]["embedding_dim"] == 12
    assert 0.0 <= record["metrics"]["NDCG@10"] <= 1.0
    weights = load_tensors(out / "model.safetensors")
    table = load_item_embeddings(export).embeddings
    assert torch.equal(weights["item_embedding.llm_table"], table)  # the frozen table is the export, row for row
    assert "item_embedding.gate.weight" in weights and "item_embedding.proj.weight" in weights


def test_ci_takes_the_kmeans_groups_carried_by_the_export(toy, tmp_path, capsys):
    data, ds, export = toy
    out = tmp_path / "ci"
    code = main(
        [
            "train",
            "--dataset",
            str(data),
            "--fusion",
            "ci",
            "--item-embeddings",
            str(export),
            "--out",
            str(out),
            *TINY,
            "--epochs",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert read_json(out / "metrics.json")["variant"] == "ci"
    clusters = load_tensors(out / "model.safetensors")["item_embedding.clusters"]
    assert torch.equal(clusters[1:], load_item_embeddings(export).item_groups[1:])


def test_finetuned_table_is_a_separate_variant(toy, tmp_path, capsys):
    data, ds, export = toy
    out = tmp_path / "ft"
    code = main(
        [
            "train",
            "--dataset",
            str(data),
            "--fusion",
            "add",
            "--item-embeddings",
            str(export),
            "--finetune-llm-table",
            "--out",
            str(out),
            *TINY,
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert read_json(out / "metrics.json")["variant"] == "add+finetune"
    trained = load_tensors(out / "model.safetensors")["item_embedding.llm_table"]
    assert not torch.equal(trained, load_item_embeddings(export).embeddings)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--fusion", "gate"], "--item-embeddings"),
        (["--fusion", "ci"], "--clusters"),
        (["--fusion", "base", "--finetune-llm-table"], "no LLM table"),
        (["--fusion", "ci", "--clusters", "nowhere.safetensors"], "not found"),
    ],
)
def test_missing_side_information_exits_2(toy, tmp_path, capsys, extra, words):
    data, _, _ = toy
    code = main(["train", "--dataset", str(data), *extra, "--out", str(tmp_path / "x"), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and words in err, err


def test_ci_keeps_padding_at_zero():
    from tslrec.backbones.item_embedding import FusionConfig, build_item_embedding

    emb = build_item_embedding(5, 4, FusionConfig(kind="ci"), clusters=torch.tensor([-1, 0, 1, 0, 1, 1]))
    out = emb(torch.tensor([[0, 0, 3]]))  # [1, 3, H]: Caser's windows and right padding feed id 0
    assert torch.all(out[0, :2] == 0) and not torch.all(out[0, 2] == 0)
