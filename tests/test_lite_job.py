"""`tslrec lite` end to end on a user's own files with tiny models, and its one-line errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from lite_helpers import (  # noqa: F401
    lite_llama_dir,
    one_torch_thread,
    tiny_bert_dir,
    tiny_t5_dir,
    write_text_dataset,
)

import tslrec
from tslrec import DataConfig, InputError, LiteJob, LiteTrainConfig, LLMConfig, load_dataset
from tslrec.core.artifacts import load_tensors, read_json
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.formats.item_table import load_item_embeddings
from tslrec.lite_llm4rec.item_llm import ItemLLMConfig
from tslrec.lite_llm4rec.model import LiteConfig
from tslrec.lite_llm4rec.model_io import load_lite_model
from tslrec.lite_llm4rec.training import evaluate_lite
from tslrec.pipelines.cli import main
from tslrec.pipelines.lite_job import print_outcome
from tslrec.pipelines.options import TrainingRuntime


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TSLREC_CACHE", str(tmp_path / "cache"))


def lite(*args: str) -> int:
    """`tslrec lite ARGS` without progress bars, in float32."""
    return main(["lite", *args, "--no-progress", "--precision", "float32"])


FLOAT32 = LiteTrainConfig(precision="float32", segment_len=7)  # 6 inputs: within every max_len here


def with_strategy(train: LiteTrainConfig, strategy: str) -> LiteTrainConfig:
    """`train` with `strategy`; "all" reads no segment_len, so it keeps the default."""
    segment_len = train.segment_len if strategy == "sampling" else LiteTrainConfig().segment_len
    return replace(train, strategy=strategy, segment_len=segment_len)


def lite_job(dataset, out, /, item_llm=None, llm=None, max_len: int | None = None, **overrides) -> LiteJob:
    """The job of `lite(--dataset DATASET --out OUT [--item-llm ITEM_LLM] [--llm LLM] [--max-len MAX_LEN])`, with
    `overrides` (a `train` override starts from FLOAT32)."""
    job = LiteJob(dataset=str(dataset), out=str(out), train=FLOAT32, runtime=TrainingRuntime(progress=False))
    if item_llm is not None:
        job = replace(job, item=ItemLLMConfig(name_or_path=str(item_llm)))
    if llm is not None:
        job = replace(job, llm=LLMConfig(name_or_path=str(llm)))
    if max_len is not None:
        job = replace(job, data=DataConfig(max_len=max_len))
    return replace(job, **overrides)


def test_lite_job_trains_evaluates_exports(tmp_path, tiny_bert_dir, lite_llama_dir, capsys):
    data = write_text_dataset(tmp_path / "data")
    out = tmp_path / "run"
    outcome = tslrec.lite(
        lite_job(data, out, tiny_bert_dir, lite_llama_dir, max_len=8, train=replace(FLOAT32, epochs=2, batch_size=8))
    )
    record = read_json(out / "metrics.json")
    assert outcome.out == out
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
    print_outcome(outcome)  # what `tslrec lite` shows
    assert "lite-llm4rec (sampling)" in capsys.readouterr().out
    # a second run with the "all" strategy reuses the cached item vectors
    every_prefix = with_strategy(replace(FLOAT32, epochs=1), "all")
    again = lite_job(data, tmp_path / "run2", tiny_bert_dir, max_len=8, train=every_prefix)
    tslrec.lite(replace(again, llm=LLMConfig(name_or_path=str(lite_llama_dir), num_layers=1)))
    record2 = read_json(tmp_path / "run2" / "metrics.json")
    assert record2["variant"] == "all" and not record2["item_vectors"]["computed"]
    assert record2["config"]["llm"]["num_layers"] == 1
    assert record2["train_targets_per_epoch"] == sum(len(s) - 3 for s in ds.sequences)
    # vectors read from a folder were made by its model: the run records that one, not flags it never used
    tiny = LLMConfig(name_or_path=str(lite_llama_dir), num_layers=1)
    other = replace(again, out=str(tmp_path / "run3"), item_vectors=str(out / "item_vectors"), llm=tiny)
    tslrec.lite(replace(other, item=ItemLLMConfig(name_or_path="minilm", max_tokens=5)))
    item = read_json(tmp_path / "run3" / "metrics.json")["config"]["item_llm"]
    assert (item["name_or_path"], item["max_tokens"]) == (str(tiny_bert_dir), 64)


def test_a_segment_longer_than_the_window_is_refused_before_any_work(tmp_path):
    """The check runs before the item vectors are computed and the LLM loads (no item_vectors folder is written)."""
    data = write_text_dataset(tmp_path / "data")
    job = lite_job(data, tmp_path / "run", max_len=8, train=replace(FLOAT32, segment_len=21))
    with pytest.raises(InputError, match="segment_len=21: its 20 inputs exceed DataConfig.max_len=8"):
        tslrec.lite(job)
    assert not (tmp_path / "run").exists()


def test_dataset_without_item_text_is_refused_in_one_line(tmp_path):
    data = write_text_dataset(tmp_path / "data", with_text=False)
    with pytest.raises(InputError, match="no item text") as e:
        tslrec.lite(lite_job(data, tmp_path / "run"))
    assert "\n" not in str(e.value)


def test_item_vectors_of_another_dataset_are_refused_in_one_line(tmp_path, tiny_bert_dir):
    other = write_text_dataset(tmp_path / "other", n_items=20, seed=3)
    ds_other = load_dataset(str(other), DataConfig())
    from tslrec.lite_llm4rec.item_llm import item_vectors_for_dataset

    item_vectors_for_dataset(
        ds_other, ItemLLMConfig(name_or_path=str(tiny_bert_dir)), folder=tmp_path / "vecs", progress=False
    )
    data = write_text_dataset(tmp_path / "data")
    with pytest.raises(InputError, match="num_items") as e:
        tslrec.lite(lite_job(data, tmp_path / "run", item_vectors=str(tmp_path / "vecs")))
    assert "\n" not in str(e.value)


def test_bad_option_exits_2_before_any_work(tmp_path, capsys):
    data = write_text_dataset(tmp_path / "data")
    assert lite("--dataset", str(data), "--segment-len", "1") == 2
    assert "--segment-len" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rec_llm", "strategy", "attention"), [("t5", "all", "auto"), ("llama", "sampling", "bidirectional")]
)
def test_lite_job_records_the_attention_of_its_recommendation_llm(
    rec_llm, strategy, attention, tmp_path, tiny_bert_dir, tiny_t5_dir, lite_llama_dir
):
    """A T5 encoder, or a decoder with --attention bidirectional, trains end to end; metrics.json says how it
    attended."""
    data = write_text_dataset(tmp_path / "data", n_users=16)
    folder = {"t5": tiny_t5_dir, "llama": lite_llama_dir}[rec_llm]
    out = tmp_path / "run"
    train = with_strategy(replace(FLOAT32, epochs=1, batch_size=16), strategy)
    tslrec.lite(
        lite_job(data, out, tiny_bert_dir, folder, max_len=6, train=train, lite=LiteConfig(attention=attention))
    )
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
    tslrec.lite(lite_job(data, out, tiny_bert_dir, lite_llama_dir, max_len=8, train=replace(FLOAT32, epochs=1)))
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
