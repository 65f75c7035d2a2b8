"""Ranking metrics against hand-computed answers."""
import math

import pytest
import torch

from tslrec.backbones.evaluation import EvalConfig, evaluate, metrics_from_ranks, ranks_full


def test_rank_counts_ties_against_the_model():
    # items 1..4; column 0 is padding and never a candidate even with the highest score
    scores = torch.tensor([[9.0, 0.5, 0.9, 0.5, 0.1],   # target 1 (0.5): item 2 higher, item 3 tied -> rank 3
                           [9.0, 0.2, 0.2, 0.2, 0.2],   # constant scores -> rank N = 4
                           [9.0, 0.1, 0.2, 0.3, 0.4]])  # target 4 is the best -> rank 1
    ranks = ranks_full(scores, torch.tensor([1, 1, 4]))
    assert ranks.tolist() == [3, 4, 1]


def test_history_masking_keeps_a_repeated_target():
    scores = torch.tensor([[0.0, 0.9, 0.8, 0.7, 0.1]])
    history = torch.tensor([[1, 3, 0]])  # item 1 (0.9) is in the history; target 3 was also seen before
    assert ranks_full(scores, torch.tensor([3])).tolist() == [3]
    assert ranks_full(scores, torch.tensor([3]), history).tolist() == [2]  # only item 2 remains above


def test_metric_values_by_hand():
    m = metrics_from_ranks(torch.tensor([1, 3, 7, 11]), ks=(5, 10))
    assert m["HR@5"].tolist() == [1, 1, 0, 0]
    assert m["HR@10"].tolist() == [1, 1, 1, 0]
    assert m["Recall@10"].tolist() == m["HR@10"].tolist()
    assert m["NDCG@10"].tolist() == pytest.approx([1.0, 0.5, 1 / math.log2(8), 0.0])
    assert m["MRR@10"].tolist() == pytest.approx([1.0, 1 / 3, 1 / 7, 0.0])
    assert m["NDCG@5"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_evaluate_batches_and_averages():
    # score = fixed preference over 6 items; each user's rank is hand-checked
    pref = torch.tensor([0.0, 6, 5, 4, 3, 2, 1])  # item 1 best
    score_fn = lambda seq, lens: pref.expand(len(seq), -1)
    hist = torch.tensor([[1, 0], [2, 3], [1, 2]])
    res = evaluate(score_fn, hist, torch.tensor([1, 2, 2]), torch.tensor([1, 4, 6]), EvalConfig(ks=(1, 5), batch_size=2))
    assert res.ranks.tolist() == [1, 4, 6]
    assert res.metrics["HR@5"] == pytest.approx(2 / 3)
    assert res.metrics["NDCG@5"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert res.protocol == "full-ranking, history not masked"
    masked = evaluate(score_fn, hist, torch.tensor([1, 2, 2]), torch.tensor([1, 4, 6]), EvalConfig(ks=(5,), mask_history=True))
    assert masked.ranks.tolist() == [1, 2, 4]
    assert "history masked" in masked.protocol


def test_sampled_mode_is_labelled_and_never_samples_seen_items():
    n = 200
    pref = torch.arange(n + 1, dtype=torch.float).flip(0)  # item 1 best, item n worst
    score_fn = lambda seq, lens: pref.expand(len(seq), -1)
    hist = torch.tensor([[2, 3, 4]])
    # target = item 1 beats everything; target = item n loses to all 99 sampled negatives unless seen ones leaked in
    res = evaluate(score_fn, hist, torch.tensor([3]), torch.tensor([n]), EvalConfig(sampled_negatives=99, ks=(10,)), seen=hist)
    assert res.ranks.tolist() == [100]
    assert set(res.metrics) == {"sampled_HR@10", "sampled_Recall@10", "sampled_NDCG@10", "sampled_MRR@10"}
    assert res.protocol.startswith("sampled-99")
    best = evaluate(score_fn, hist, torch.tensor([3]), torch.tensor([1]), EvalConfig(sampled_negatives=99, ks=(10,)))
    assert best.ranks.tolist() == [1]


def test_random_scorer_matches_the_floor():
    torch.manual_seed(0)
    n, users = 1000, 4000
    score_fn = lambda seq, lens: torch.rand(len(seq), n + 1)
    targets = torch.randint(1, n + 1, (users,))
    res = evaluate(score_fn, torch.ones(users, 1, dtype=torch.long), torch.ones(users, dtype=torch.long), targets)
    assert res.metrics["HR@10"] == pytest.approx(10 / n, abs=0.004)
