"""Stage 2 extraction on a tiny random Llama: one-item prompts, batching, and `tslrec stage2` end to end."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stage1_helpers import (  # noqa: F401
    clustered_items,
    make_tiny_llama,
    tiny_llama_dir,
    tiny_llm_cfg,
    user_sequences,
)

from tslrec.core.artifacts import load_tensors, read_json, save_tensors, write_json
from tslrec.core.errors import InputError
from tslrec.data import DataConfig, load_dataset
from tslrec.formats.item_table import load_item_embeddings
from tslrec.llm.loading import load_llm
from tslrec.pipelines.cli import main
from tslrec.stage1_reconstruct.config import Stage1Config
from tslrec.stage1_reconstruct.model_io import build_reconstruction_model
from tslrec.stage1_reconstruct.training import SUB_RUN, train_stage1
from tslrec.stage2_augment.extraction import ExtractionConfig, extract_item_representations

K = 4


@pytest.fixture(scope="module")
def tiny_model(tiny_llm_cfg):
    llm, tokenizer = load_llm(tiny_llm_cfg)
    torch.manual_seed(0)
    model = build_reconstruction_model(llm, tokenizer, item_dim=8, cfg=Stage1Config(k=K), llm_cfg=tiny_llm_cfg)
    return model


def test_every_item_is_embedded_alone_and_batching_does_not_matter(tiny_model):
    table = torch.from_numpy(clustered_items(n_items=9, dim=8, k=K, seed=1)[0])  # [10, 8], row 0 = padding
    f32 = {"progress": False, "precision": "float32"}  # compared with a float32 forward (`auto` may be bf16 here)
    reps = extract_item_representations(tiny_model, table, ExtractionConfig(batch_size=4, **f32))
    assert reps.embeddings.shape == (10, tiny_model.encoder.hidden) and reps.category_probs.shape == (10, K)
    assert torch.all(reps.embeddings[0] == 0) and torch.all(reps.category_probs[0] == 0)
    assert torch.allclose(reps.category_probs[1:].sum(1), torch.ones(9), atol=1e-5)
    assert reps.num_items == 9 and reps.seconds > 0 and reps.seconds_per_1000_items > 0
    one_by_one = extract_item_representations(tiny_model, table, ExtractionConfig(batch_size=1, **f32))
    assert torch.allclose(reps.embeddings, one_by_one.embeddings, atol=1e-5)
    with torch.no_grad():  # item 3 as a one-item virtual user through the stage-1 forward
        h, p = tiny_model.eval()(table[3].view(1, 1, 8), torch.ones(1, 1, dtype=torch.long))
    assert torch.allclose(reps.embeddings[3], h[0], atol=1e-5) and torch.allclose(
        reps.category_probs[3], p[0], atol=1e-5
    )
    assert not torch.allclose(reps.embeddings[3], reps.embeddings[4])


def test_bad_item_tables_are_input_errors(tiny_model):
    with pytest.raises(InputError, match="NaN"):
        extract_item_representations(tiny_model, torch.full((4, 8), float("nan")), ExtractionConfig(progress=False))
    with pytest.raises(InputError, match="ExtractionConfig.batch_size"):
        extract_item_representations(tiny_model, torch.zeros(4, 8), ExtractionConfig(batch_size=0))


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory, tiny_llm_cfg):
    """A dataset file, the folder `tslrec train --export-item-embeddings` writes, and a short real stage 1 run."""
    tmp = tmp_path_factory.mktemp("stage2")
    table, truth = clustered_items(n_items=30, dim=8, k=K, seed=3)
    seqs = user_sequences(truth, n_users=24, k=K, seed=3, length=(5, 10))
    data = tmp / "toy.txt"
    data.write_text("".join(f"u{u} " + " ".join(f"i{i}" for i in s) + "\n" for u, s in enumerate(seqs)))
    ds = load_dataset(str(data), DataConfig())
    emb = np.zeros((ds.num_items + 1, 8), dtype=np.float32)
    for internal, original in enumerate(ds.item_ids[1:], start=1):
        emb[internal] = table[int(original[1:])]
    train_dir = tmp / "train"
    save_tensors(train_dir / "item_embeddings.safetensors", {"embeddings": torch.from_numpy(emb)})
    write_json(
        train_dir / "metrics.json",
        {
            "dataset": ds.name,
            "model": "sasrec",
            "dataset_source": str(data),
            "dataset_info": {"name": ds.name, "hash": ds.hash, "items": ds.num_items},
            "config": {"data": {"kcore": 0, "min_rating": None, "max_len": 50}},
        },
    )
    stage1_dir = tmp / "stage1"
    # head+proj: the untuned-LLM baseline is a stage 1 run of its own (stage1/untuned_head_proj), the `untuned` source
    cfg = Stage1Config(
        k=K, epochs=1, max_steps=1, batch_size=8, precision="float32", untuned_baseline="head+proj", max_items=10
    )
    train_stage1(
        emb,
        ds.train_sequences(),
        stage1_dir,
        cfg,
        tiny_llm_cfg,
        device="cpu",
        progress=False,
        run_info={"dataset": ds.name, "dataset_hash": ds.hash, "train_dir": str(train_dir)},
    )
    return data, ds, stage1_dir


def test_stage2_cli_writes_an_export_that_loads_against_the_dataset(stage1_run, tmp_path, capsys):
    data, ds, stage1_dir = stage1_run
    out = tmp_path / "export"
    code = main(
        [
            "stage2",
            "--stage1-dir",
            str(stage1_dir),
            "--out",
            str(out),
            "--batch-size",
            "7",
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "per 1,000 items" in capsys.readouterr().out
    export = load_item_embeddings(out, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    assert export.embeddings.shape == (ds.num_items + 1, 32) and export.category_probs.shape == (ds.num_items + 1, K)
    groups = load_tensors(stage1_dir / "groups.safetensors")["item_group"]
    assert torch.equal(export.item_groups, groups)
    source = export.manifest["source"]
    assert source["k"] == K and source["pooling"] == "last" and source["adapter"].endswith("adapter")
    assert source["extraction"]["items"] == ds.num_items and source["extraction"]["seconds_per_1000_items"] > 0
    assert set(source["category_agreement"]) >= {"C1", "C2", "C3"}
    assert read_json(stage1_dir / "config.json")["llm"]["name_or_path"] == source["llm"]


def test_the_untuned_source_is_the_frozen_llm_through_its_own_projection_and_head(stage1_run, tmp_path, capsys):
    """stage 2 on stage 1's head+proj baseline run (no LoRA) exports the `untuned` item table of the grid."""
    _, ds, stage1_dir = stage1_run
    exports = {}
    for label, folder in (("tuned", stage1_dir), ("untuned", stage1_dir / SUB_RUN)):
        out = tmp_path / label
        args = ["stage2", "--stage1-dir", str(folder), "--out", str(out), "--device", "cpu", "--no-progress"]
        assert main(args) == 0, capsys.readouterr().err
        exports[label] = load_item_embeddings(out, num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids)
    assert exports["untuned"].manifest["source"]["adapter"] is None  # the LLM as loaded, no LoRA
    assert exports["tuned"].manifest["source"]["adapter"] is not None
    assert not torch.allclose(exports["untuned"].embeddings, exports["tuned"].embeddings)


def test_an_adapter_on_an_llm_of_another_width_is_one_line_and_exit_2(stage1_run, tmp_path, capsys):
    """stage 1's folder names an LLM whose hidden size is not the one its LoRA adapter was trained on."""
    import shutil

    _, _, stage1_dir = stage1_run
    moved = tmp_path / "stage1"
    shutil.copytree(stage1_dir, moved)
    config = read_json(moved / "config.json")
    config["llm"]["name_or_path"] = str(make_tiny_llama(tmp_path / "wider", hidden=48))
    write_json(moved / "config.json", config)
    capsys.readouterr()  # the tiny model's save messages
    code = main(
        ["stage2", "--stage1-dir", str(moved), "--out", str(tmp_path / "x"), "--device", "cpu", "--no-progress"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "adapter" in err and "does not fit" in err and "hidden size" in err, err


def test_stage2_cli_rejects_another_dataset_in_one_line(stage1_run, tmp_path, capsys):
    data, ds, stage1_dir = stage1_run
    other = tmp_path / "other.txt"
    other.write_text(data.read_text().replace("u0 ", "u0 i1 ", 1))
    code = main(
        [
            "stage2",
            "--stage1-dir",
            str(stage1_dir),
            "--out",
            str(tmp_path / "x"),
            "--dataset",
            str(other),
            "--device",
            "cpu",
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "hash" in err
    code = main(["stage2", "--stage1-dir", str(tmp_path / "missing"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "--stage1-dir" in err and not (tmp_path / "x").exists()
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.json").write_text((stage1_dir / "config.json").read_text())
    code = main(["stage2", "--stage1-dir", str(unfinished), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "has not finished" in err and not (tmp_path / "x").exists()
