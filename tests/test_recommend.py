"""`tslrec recommend`: top-K lists under original ids, seen items left out unless asked."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

import tslrec
from tslrec import BackboneConfig, DataConfig, InputError, RecommendJob, TrainConfig, TrainJob
from tslrec.pipelines.options import TrainingRuntime
from tslrec.pipelines.recommend_job import recommend as write_lists


def _train(tmp_path, **model):
    """A SASRec (H = 16, no dropout, and the BackboneConfig settings `model`) trained on the cycle data."""
    # 30 users walking a cycle of 12 items from different starts: the next item is always the following one
    lines = []
    for u in range(30):
        items = [f"i{(u + t) % 12}" for t in range(8)]
        lines.append(f"u{u} " + " ".join(items))
    data = tmp_path / "cycle.txt"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    tslrec.train(
        TrainJob(
            dataset=str(data),
            out=str(out),
            data=DataConfig(max_len=10),
            model=BackboneConfig(hidden=16, dropout=0.0, **model),
            train=TrainConfig(epochs=30, lr=5e-3, patience=30),
            runtime=TrainingRuntime(progress=False),
        )
    )
    return data, out


def test_recommend_lists_unseen_items_under_original_ids(tmp_path):
    data, out = _train(tmp_path)
    users = tmp_path / "users.txt"
    users.write_text("u0\nu5\n")
    rows = tslrec.recommend(RecommendJob(model=str(out), users=str(users), k=3))
    assert [r["user"] for r in rows] == ["u0", "u5"]
    for r in rows:
        u = int(r["user"][1:])
        seen = {f"i{(u + t) % 12}" for t in range(8)}
        assert len(r["items"]) == 3 and not seen & set(r["items"])  # never an item the user already has
        assert r["items"][0] == f"i{(u + 8) % 12}"  # the next item of the cycle comes first
        assert r["scores"] == sorted(r["scores"], reverse=True)


def test_recommend_keep_seen_and_tsv_file(tmp_path):
    _, out = _train(tmp_path)
    target = tmp_path / "top.tsv"
    assert write_lists(RecommendJob(model=str(out), k=12, keep_seen=True, out=str(target))) == target
    header, *rows = [line.split("\t") for line in target.read_text().splitlines()]
    assert header == ["user", "rank", "item", "score"]  # no title column: the dataset has no item text
    assert len(rows) == 30 * 12 and {r[2] for r in rows if r[0] == "u0"} == {f"i{i}" for i in range(12)}
    with pytest.raises(InputError, match=r"RecommendJob\.users .*missing\.txt: file not found"):
        tslrec.recommend(RecommendJob(model=str(out), users=str(tmp_path / "missing.txt")))


def test_recommend_scores_with_the_learned_input_item_bias(tmp_path):
    """A model trained with --input-item-bias is rebuilt with it and scores with its input (scoring without the
    input raises): no user of the cycle returns to an item, so the bias learned is negative."""
    _, out = _train(tmp_path, input_item_bias=True)
    weights = load_file(out / "model.safetensors")
    assert float(weights["input_item_bias"]) < 0
    for r in tslrec.recommend(RecommendJob(model=str(out), k=12, keep_seen=True)):
        u = int(r["user"][1:])
        assert r["items"][0] == f"i{(u + 8) % 12}" and len(r["items"]) == 12
