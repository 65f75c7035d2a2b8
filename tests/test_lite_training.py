"""Lite-LLM4Rec training: the two strategies' rows, and that training learns and selects on validation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lite_helpers import cyclic_train_sequences, lite_llama_dir, one_torch_thread  # noqa: F401

from tslrec.core.errors import InputError
from tslrec.data.splits import LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig
from tslrec.lite_llm4rec.model import LiteConfig, build_lite_model
from tslrec.lite_llm4rec.segments import all_prefix_rows, collate, sampling_rows
from tslrec.lite_llm4rec.training import LiteTrainConfig, evaluate_lite, train_lite
from tslrec.llm.loading import LLMConfig


def is_contiguous_in(part: np.ndarray, seq: np.ndarray) -> bool:
    return any(np.array_equal(seq[s : s + len(part)], part) for s in range(len(seq) - len(part) + 1))


def test_sampling_segments_hold_at_most_21_items():
    seqs = [np.arange(1, n + 1) for n in (1, 2, 5, 21, 22, 60, 200)]
    lengths = set()
    for epoch in range(30):
        rows = sampling_rows(seqs, 21, np.random.default_rng([0, epoch]))
        assert len(rows) == 6  # the 1-item user has no training target
        for inp, tgt in zip(rows.inputs, rows.targets):
            segment = np.append(inp, tgt[-1])
            assert 2 <= len(segment) <= 21 and (tgt[:-1] == 0).all()
            assert any(is_contiguous_in(segment, s) for s in seqs)  # inputs then the item that followed them
            lengths.add(len(segment))
    assert max(lengths) == 21 and min(lengths) == 2  # short prefixes are drawn too


@pytest.mark.parametrize("share", [True, False])
def test_all_strategy_has_one_row_target_per_training_prefix(share):
    seqs = [np.arange(100 * u + 1, 100 * u + n + 1) for u, n in enumerate((1, 2, 5, 21, 48))]  # ids unique per user
    rows = all_prefix_rows(seqs, max_len=20, share_prefixes=share)
    assert rows.num_targets == sum(len(s) - 1 for s in seqs) == 0 + 1 + 4 + 20 + 47
    pairs = set()
    for inp, tgt in zip(rows.inputs, rows.targets):
        assert len(inp) <= 20
        for t in np.flatnonzero(tgt):
            assert tgt[t] == inp[t] + 1  # the target is the item right after the prefix ending at t
            pairs.add((int(inp[t]), int(tgt[t])))  # identifies user and position
    assert len(pairs) == rows.num_targets  # each prefix once
    if not share:
        assert len(rows) == rows.num_targets  # one row per prefix for encoder LLMs


def test_collate_left_pads_and_keeps_the_newest():
    rows = all_prefix_rows([np.arange(1, 8)], max_len=3, share_prefixes=True)
    ids, targets = collate(rows, [0, 1], max_len=3)
    assert ids.tolist() == [[4, 5, 6], [1, 2, 3]] and targets.tolist() == [[5, 6, 7], [2, 3, 4]]
    rows = all_prefix_rows([np.arange(1, 6)], max_len=3, share_prefixes=True)
    ids, targets = collate(rows, [0, 1], max_len=3)
    assert ids.tolist() == [[2, 3, 4], [0, 0, 1]] and targets.tolist() == [[3, 4, 5], [0, 0, 2]]


@pytest.mark.parametrize("strategy", ["sampling", "all"])
def test_training_reduces_loss_and_selects_on_validation(strategy, lite_llama_dir, tmp_path):
    seqs = cyclic_train_sequences(n_items=12, n_users=24)
    splits = LeaveOneOutSplits.from_sequences(seqs, 12, max_len=8)
    vecs = torch.randn(13, 8, generator=torch.Generator().manual_seed(0))
    vecs[0] = 0
    model = build_lite_model(vecs, LiteConfig(), LLMConfig(name_or_path=str(lite_llama_dir)), seed=0)
    sampling = strategy == "sampling"
    cfg = LiteTrainConfig(
        strategy=strategy,
        **({"segment_len": 9} if sampling else {}),  # 8 inputs: max_len ("all" reads none)
        epochs=30 if sampling else 6,
        batch_size=24 if sampling else 8,
        lr=3e-3,
        head_lr=1e-2,
        precision="float32",
        eval_every=10 if sampling else 6,
        patience=100,
        seed=0,
    )
    result = train_lite(
        model,
        [s[:-2] for s in seqs],
        splits,
        cfg,
        max_len=8,
        device=torch.device("cpu"),
        checkpoint=tmp_path / "ckpt.pt",
        progress=False,
    )
    losses = [h["loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]  # from about ln(12) = 2.5
    best = max(result.history, key=lambda h: h["valid_NDCG@10"])
    assert result.best_step == best["step"]  # selected on validation
    assert result.valid.metrics["NDCG@10"] == pytest.approx(best["valid_NDCG@10"], abs=1e-6)
    assert result.test.metrics["HR@5"] > 0.75 and result.test.per_user["NDCG@10"].shape == (24,)  # random: 5/12
    assert set(result.test.metrics) >= {"Recall@10", "Recall@20", "NDCG@10", "NDCG@20"}


def test_resume_continues_from_the_checkpoint(lite_llama_dir, tmp_path):
    seqs = cyclic_train_sequences(n_items=12, n_users=8)
    splits = LeaveOneOutSplits.from_sequences(seqs, 12, max_len=8)
    vecs = torch.randn(13, 8, generator=torch.Generator().manual_seed(0))

    def run(max_steps: int, ckpt):
        model = build_lite_model(
            vecs, LiteConfig(lora_dropout=0.0), LLMConfig(name_or_path=str(lite_llama_dir)), seed=0
        )
        cfg = LiteTrainConfig(
            epochs=3, max_steps=max_steps, batch_size=2, precision="float32", eval_every=2, seed=0, segment_len=9
        )
        res = train_lite(
            model, [s[:-2] for s in seqs], splits, cfg, 8, torch.device("cpu"), checkpoint=ckpt, progress=False
        )
        return model, res

    _, first = run(4, tmp_path / "ckpt.pt")  # "killed" after 4 steps (its checkpoint stays)
    killed_seconds = torch.load(tmp_path / "ckpt.pt", weights_only=True)["state"]["elapsed"]
    resumed, res = run(6, tmp_path / "ckpt.pt")
    straight, res2 = run(6, tmp_path / "other.pt")
    assert first.steps == 4 and res.steps == res2.steps == 6
    assert res.earlier_seconds == killed_seconds > 0 and res2.earlier_seconds == 0  # the wall time counts both
    assert [h["step"] for h in res.history] == [h["step"] for h in res2.history]
    torch.testing.assert_close(resumed.head.weight, straight.head.weight)


def test_bad_training_settings_are_input_errors():
    with pytest.raises(InputError, match="LiteTrainConfig.strategy"):
        LiteTrainConfig(strategy="every")
    with pytest.raises(InputError, match="LiteTrainConfig.segment_len"):
        LiteTrainConfig(segment_len=1)


def test_a_sampled_segment_longer_than_max_len_is_refused(lite_llama_dir):
    """collate keeps a row's last max_len inputs, so --segment-len 51 trained on 20 inputs without a word."""
    seqs = cyclic_train_sequences(n_items=12, n_users=4)
    splits = LeaveOneOutSplits.from_sequences(seqs, 12, max_len=8)
    model = build_lite_model(torch.randn(13, 8), LiteConfig(), LLMConfig(name_or_path=str(lite_llama_dir)), seed=0)
    with pytest.raises(InputError, match="segment_len=10: its 9 inputs exceed DataConfig.max_len=8"):
        train_lite(model, seqs, splits, LiteTrainConfig(segment_len=10), max_len=8, device=torch.device("cpu"))


def test_evaluation_scores_in_float32_under_bf16(lite_llama_dir):
    # Logits 1e-4 apart in relative terms tie in bf16 (8 mantissa bits); the target has the top
    # float32 logit, so it must rank 1 even when the LLM runs under bf16 autocast.
    n = 12
    vecs = torch.randn(n + 1, 8, generator=torch.Generator().manual_seed(0))
    model = build_lite_model(vecs, LiteConfig(), LLMConfig(name_or_path=str(lite_llama_dir)), seed=0).eval()
    splits = LeaveOneOutSplits.from_sequences([np.array([1, 2, 3, n])], n, max_len=8)
    with torch.no_grad():
        h = model(splits.test.history, splits.test.lengths)[0].float()  # [H]
        model.head.weight.copy_((1 + 1e-4 * torch.arange(n)).unsqueeze(1) * h / h.norm())  # logit_i grows with i
    res = evaluate_lite(model, splits.test, EvalConfig(ks=(1,), precision="bf16"), torch.device("cpu"))
    assert res.ranks.tolist() == [1]
