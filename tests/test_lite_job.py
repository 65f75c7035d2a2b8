"""`tslrec lite` end to end on a user's own files with tiny models, and its one-line errors."""

from __future__ import annotations

import pytest
import torch
from lite_helpers import (  # noqa: F401
    lite_llama_dir,
    one_torch_thread,
    tiny_bert_dir,
    tiny_t5_dir,
    write_text_dataset,
)

from tslrec.core.artifacts import load_tensors, read_json
from tslrec.core.errors import InputError
from tslrec.data import DataConfig, load_dataset
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.formats.item_table import load_item_embeddings
from tslrec.lite_llm4rec.model_io import load_lite_model
from tslrec.lite_llm4rec.training import evaluate_lite
from tslrec.pipelines.cli import main


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TSLREC_CACHE", str(tmp_path / "cache"))


def lite(*args: str) -> int:
    return main(["lite", *args, "--no-progress", "--precision", "float32"])


def test_lite_job_trains_evaluates_exports(tmp_path, tiny_bert_dir, lite_llama_dir, capsys):
    data = write_text_dataset(tmp_path / "data")
    out = tmp_path / "run"
    code = lite(
        "--dataset",
        str(data),
        "--out",
        str(out),
        "--item-llm",
        str(tiny_bert_dir),
        "--llm",
        str(lite_llama_dir),
        "--epochs",
        "2",
        "--batch-size",
        "8",
        "--max-len",
        "8",
    )
    assert code == 0
    record = read_json(out / "metrics.json")
    assert record["model"] == "lite-llm4rec" and record["variant"] == "sampling"
    assert record["protocol"] == "full-ranking, history not masked"
    assert {"Recall@10", "Recall@20", "NDCG@10", "NDCG@20"} <= set(record["metrics"])
    assert record["item_vectors"]["computed"] and record["steps"] == 10  # 40 users -> 5 steps per epoch
    assert (out / "history.csv").is_file() and (out / "learning_curve.png").is_file()
    assert record["negatives"] == "all" and record["best_at_cap"] == (record["best_step"] == record["steps"])
    ds = load_dataset(str(data), DataConfig(max_len=8))
    export = load_item_embeddings(
        out / "item_vectors", num_items=ds.num_items, dataset_hash=ds.hash, item_ids=ds.item_ids
    )
    assert export.embeddings.shape == (ds.num_items + 1, 24)
    assert load_tensors(out / "per_user_test.safetensors")["NDCG@10"].shape == (ds.num_users,)
    assert not list(out.glob("checkpoint-*.pt"))  # removed once the run is complete
    model, _ = load_lite_model(out / "model")  # the exported model reproduces the reported test metrics
    splits = LeaveOneOutSplits.from_sequences(ds.sequences, ds.num_items, 8)
    again = evaluate_lite(model, splits.test, EvalConfig(), torch.device("cpu"))
    assert again.metrics["NDCG@10"] == pytest.approx(record["metrics"]["NDCG@10"], abs=1e-5)
    # the paper's protocol beside it: the same model with the user's whole history removed from the candidates
    masked = evaluate_lite(model, splits.test, EvalConfig(mask_history=True), torch.device("cpu"))
    assert record["protocol_history_masked"] == "full-ranking, history masked"
    assert record["metrics_history_masked"]["NDCG@10"] == pytest.approx(masked.metrics["NDCG@10"], abs=1e-5)
    assert all(record["metrics_history_masked"][k] >= record["metrics"][k] for k in ("Recall@10", "Recall@20"))
    assert "lite-llm4rec (sampling)" in capsys.readouterr().out
    # a second run with the "all" strategy reuses the cached item vectors
    assert (
        lite(
            "--dataset",
            str(data),
            "--out",
            str(tmp_path / "run2"),
            "--item-llm",
            str(tiny_bert_dir),
            "--llm",
            str(lite_llama_dir),
            "--strategy",
            "all",
            "--epochs",
            "1",
            "--max-len",
            "8",
            "--llm-layers",
            "1",
        )
        == 0
    )
    record2 = read_json(tmp_path / "run2" / "metrics.json")
    assert record2["variant"] == "all" and not record2["item_vectors"]["computed"]
    assert record2["config"]["llm"]["num_layers"] == 1
    assert record2["train_targets_per_epoch"] == sum(len(s) - 3 for s in ds.sequences)


def test_dataset_without_item_text_exits_2(tmp_path, capsys):
    data = write_text_dataset(tmp_path / "data", with_text=False)
    assert lite("--dataset", str(data), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no item text" in err and err.count("\n") == 1


def test_item_vectors_of_another_dataset_exit_2(tmp_path, tiny_bert_dir, capsys):
    other = write_text_dataset(tmp_path / "other", n_items=20, seed=3)
    ds_other = load_dataset(str(other), DataConfig())
    from tslrec.lite_llm4rec.item_llm import ItemLLMConfig, item_vectors_for_dataset

    item_vectors_for_dataset(
        ds_other, ItemLLMConfig(name_or_path=str(tiny_bert_dir)), folder=tmp_path / "vecs", progress=False
    )
    data = write_text_dataset(tmp_path / "data")
    capsys.readouterr()
    assert lite("--dataset", str(data), "--item-vectors", str(tmp_path / "vecs"), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "num_items" in err and err.count("\n") == 1


def test_bad_option_exits_2_before_any_work(tmp_path, capsys):
    data = write_text_dataset(tmp_path / "data")
    assert lite("--dataset", str(data), "--segment-len", "1") == 2
    assert "--segment-len" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rec_llm", "extra"), [("t5", ["--strategy", "all"]), ("llama", ["--attention", "bidirectional"])]
)
def test_lite_job_records_the_attention_of_its_recommendation_llm(
    rec_llm, extra, tmp_path, tiny_bert_dir, tiny_t5_dir, lite_llama_dir
):
    """A T5 encoder, or a decoder with --attention bidirectional, trains end to end; metrics.json says how it
    attended."""
    data = write_text_dataset(tmp_path / "data", n_users=16)
    folder = {"t5": tiny_t5_dir, "llama": lite_llama_dir}[rec_llm]
    out = tmp_path / "run"
    common = ["--item-llm", str(tiny_bert_dir), "--epochs", "1", "--batch-size", "16", "--max-len", "6"]
    assert lite("--dataset", str(data), "--out", str(out), "--llm", str(folder), *common, *extra) == 0
    record = read_json(out / "metrics.json")
    assert record["attention"] == "bidirectional"
    assert record["config"]["lite"]["attention"] == ("bidirectional" if rec_llm == "llama" else "auto")
    model, config = load_lite_model(out / "model")
    assert model.rec.attention == config["attention"] == "bidirectional"


def test_a_recommendation_llm_folder_that_is_no_language_model_exits_2(tmp_path, capsys):
    from transformers import ViTConfig

    vit = tmp_path / "vit"
    ViTConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32).save_pretrained(vit)
    data = write_text_dataset(tmp_path / "data")
    assert lite("--dataset", str(data), "--llm", str(vit), "--out", str(tmp_path / "run")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --llm {vit}: model_type 'vit' is neither") and err.count("\n") == 1
    assert not (tmp_path / "run").exists()  # refused before any work


def test_lite_help_lists_the_attention_choice(capsys):
    assert main(["lite", "--help"]) == 0
    assert "--attention {auto,bidirectional}" in capsys.readouterr().out


def test_recommend_reads_a_lite_model_shows_titles_and_skips_unknown_users(
    tmp_path, tiny_bert_dir, lite_llama_dir, capsys
):
    """`tslrec recommend` on a `tslrec lite` folder: the same lists as any model, with the dataset's titles, and a
    user the dataset does not have named and skipped, not fatal."""
    import json

    data = write_text_dataset(tmp_path / "data")
    out = tmp_path / "run"
    models = ["--item-llm", str(tiny_bert_dir), "--llm", str(lite_llama_dir)]
    assert lite("--dataset", str(data), "--out", str(out), *models, "--epochs", "1", "--max-len", "8") == 0
    ds = load_dataset(str(data), DataConfig(max_len=8))
    first, second = ds.user_ids[:2]
    capsys.readouterr()
    argv = ["recommend", "--model", str(out), "--users", f"{first},nobody,{second}", "--top-k", "3"]
    assert main([*argv, "--format", "jsonl", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["user"] for r in rows] == [first, second]
    assert "1 user(s) not in the dataset, skipped: nobody" in captured.err
    titles = ds.item_titles()
    for r in rows:
        assert len(r["items"]) == 3 and r["scores"] == sorted(r["scores"], reverse=True)
        assert r["titles"] == [titles[ds.item_ids.index(i)] for i in r["items"]]
    assert main(["recommend", "--model", str(out), "--users", first, "--top-k", "2", "--device", "cpu"]) == 0
    header, *lines = capsys.readouterr().out.splitlines()
    assert header == "user\trank\titem\tscore\ttitle" and len(lines) == 2


def test_a_lite_checkpoint_of_an_older_tslrec_is_refused_and_force_discards_it(tmp_path):
    """A checkpoint-<hash>.pt an older version left records no settings: a one-line InputError, not a resume."""
    from tslrec.pipelines.lite_job import older_checkpoints

    old = tmp_path / "checkpoint-0123456789ab.pt"
    old.write_bytes(b"")
    with pytest.raises(InputError, match=r"checkpoint-0123456789ab\.pt: .*older tslrec.*--force") as e:
        older_checkpoints(tmp_path, force=False)
    assert "\n" not in str(e.value) and old.is_file()
    older_checkpoints(tmp_path, force=True)
    assert not old.exists()
