"""Ranking metrics against hand-computed answers."""

import math

import numpy as np
import pytest
import torch

from tslrec.core.errors import InputError
from tslrec.data.splits import EvalSplit, LeaveOneOutSplits
from tslrec.evaluation.ranking import EvalConfig, evaluate, metrics_from_ranks, ranks_full


def _split(hist: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> EvalSplit:
    """An evaluation split whose whole history is its input window."""
    return EvalSplit(hist, lengths, targets, seen=hist, prior_len=(hist > 0).sum(1))


def test_rank_counts_ties_against_the_model():
    # items 1..4; column 0 is padding and never a candidate even with the highest score
    scores = torch.tensor(
        [
            [9.0, 0.5, 0.9, 0.5, 0.1],  # target 1 (0.5): item 2 higher, item 3 tied -> rank 3
            [9.0, 0.2, 0.2, 0.2, 0.2],  # constant scores -> rank N = 4
            [9.0, 0.1, 0.2, 0.3, 0.4],
        ]
    )  # target 4 is the best -> rank 1
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
    split = _split(hist, torch.tensor([1, 2, 2]), torch.tensor([1, 4, 6]))
    res = evaluate(score_fn, split, EvalConfig(ks=(1, 5), batch_size=2))
    assert res.ranks.tolist() == [1, 4, 6]
    assert res.metrics["HR@5"] == pytest.approx(2 / 3)
    assert res.metrics["NDCG@5"] == pytest.approx((1 + 1 / math.log2(5)) / 3)
    assert res.protocol == "full-ranking, history not masked"
    masked = evaluate(score_fn, split, EvalConfig(ks=(5,), mask_history=True))
    assert masked.ranks.tolist() == [1, 2, 4]
    assert "history masked" in masked.protocol


def test_sampled_mode_is_labelled_and_never_samples_seen_items():
    n = 200
    pref = torch.arange(n + 1, dtype=torch.float).flip(0)  # item 1 best, item n worst
    score_fn = lambda seq, lens: pref.expand(len(seq), -1)
    hist = torch.tensor([[2, 3, 4]])
    # target = item 1 beats everything; target = item n loses to all 99 sampled negatives unless seen ones leaked in
    res = evaluate(
        score_fn, _split(hist, torch.tensor([3]), torch.tensor([n])), EvalConfig(sampled_negatives=99, ks=(10,))
    )
    assert res.ranks.tolist() == [100]
    assert set(res.metrics) == {"sampled_HR@10", "sampled_Recall@10", "sampled_NDCG@10", "sampled_MRR@10"}
    assert res.protocol == "sampled-99-negatives, none of them the user's items"  # no history clause: moot here
    with pytest.raises(InputError, match="mask_history"):  # it changed nothing, yet labelled the run "masked"
        EvalConfig(sampled_negatives=99, mask_history=True)
    best = evaluate(
        score_fn, _split(hist, torch.tensor([3]), torch.tensor([1])), EvalConfig(sampled_negatives=99, ks=(10,))
    )
    assert best.ranks.tolist() == [1]


def test_random_scorer_matches_the_floor():
    torch.manual_seed(0)
    n, users = 1000, 4000
    score_fn = lambda seq, lens: torch.rand(len(seq), n + 1)
    targets = torch.randint(1, n + 1, (users,))
    ones = torch.ones(users, 1, dtype=torch.long)
    res = evaluate(score_fn, _split(ones, torch.ones(users, dtype=torch.long), targets))
    assert res.metrics["HR@10"] == pytest.approx(10 / n, abs=0.004)


def test_masking_removes_history_outside_the_input_window():
    # 8 items; user history 1..6, max_len 2: the model sees [5, 6] only. Item 1, outside the
    # window, has the top score; the whole-history mask must still remove it.
    seq = np.array([1, 2, 3, 4, 5, 6, 7, 8])  # valid target 7, test target 8
    splits = LeaveOneOutSplits.from_sequences([seq], num_items=9, max_len=2)
    assert splits.test.history.tolist() == [[6, 7]]
    pref = torch.tensor([0.0, 9, 1, 1, 1, 1, 1, 1, 5, 2])  # item 1 best, then the test target 8, then item 9
    score_fn = lambda s, lens: pref.expand(len(s), -1)
    masked = evaluate(score_fn, splits.test, EvalConfig(ks=(1,), mask_history=True))
    assert masked.ranks.tolist() == [1]  # items 1..7 all removed, only 9 (never seen) stays below
    unmasked = evaluate(score_fn, splits.test, EvalConfig(ks=(1,)))
    assert unmasked.ranks.tolist() == [2]
    # validation (target 7) masks s[:-2] = 1..6, not the test item 8
    valid = evaluate(score_fn, splits.valid, EvalConfig(ks=(1,), mask_history=True))
    assert valid.ranks.tolist() == [3]  # 8 (5.0) and 9 (2.0) beat 7 (1.0)


def test_masking_keeps_a_target_repeated_outside_the_window():
    seq = np.array([3, 1, 2, 4, 5, 3])  # test target 3 also occurs first, outside a window of 2
    splits = LeaveOneOutSplits.from_sequences([seq], num_items=6, max_len=2)
    pref = torch.tensor([0.0, 9, 8, 7, 6, 5, 1])  # seen items 1, 2 beat the target, item 6 does not
    masked = evaluate(lambda s, lens: pref.expand(len(s), -1), splits.test, EvalConfig(ks=(1,), mask_history=True))
    assert masked.ranks.tolist() == [1]


def test_bf16_scores_are_refused():
    hist = torch.tensor([[1]])
    score_fn = lambda s, lens: torch.zeros(len(s), 5, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float32"):
        evaluate(score_fn, _split(hist, torch.tensor([1]), torch.tensor([2])))


def test_a_nan_score_anywhere_in_a_row_is_an_error_not_an_optimistic_rank():
    """NaN >= target is false, so a NaN on another item would rank the target above it: a diverged model must stop
    the evaluation instead of flattering itself."""
    from tslrec.core.errors import DivergedError

    hist = torch.tensor([[1, 2, 0], [2, 3, 0]])
    split = _split(hist, torch.tensor([2, 2]), torch.tensor([3, 4]))

    def score(seq, lengths):
        s = torch.zeros(len(seq), 5)
        s[:, 3:] = 1.0  # each target ties with the other item of score 1
        s[0, 1] = float("nan")  # one other item of the first user diverged
        return s

    with pytest.raises(DivergedError, match="NaN scores for 1 of 2 users"):
        evaluate(score, split)


def test_cut_offs_are_a_setting_of_flags_and_config_files():
    """`ks` was not a setting: NDCG@50 could not be asked for from the command line or a config file."""
    import argparse

    from tslrec.core.settings import add_arguments, from_mapping, from_namespace
    from tslrec.pipelines.train_job import TrainJob

    p = argparse.ArgumentParser()
    add_arguments(p, TrainJob())
    job = from_namespace(TrainJob(), p.parse_args(["--dataset", "x", "--ks", "5,10,50", "--select-metric", "NDCG@50"]))
    assert job.eval.ks == (5, 10, 50) and job.eval.metric_key(job.train.select_metric) == "NDCG@50"
    assert from_mapping(TrainJob(), {"ks": [10, 50]}, "c.yaml").eval.ks == (10, 50)
    with pytest.raises(InputError, match="^--ks 5,ten: give a comma-separated list of numbers"):
        from_namespace(TrainJob(), p.parse_args(["--dataset", "x", "--ks", "5,ten"]))
    with pytest.raises(InputError, match="EvalConfig.ks=10,10: give distinct cut-offs"):
        EvalConfig(ks=(10, 10))
    ranks = torch.tensor([1, 30, 60])
    assert metrics_from_ranks(ranks, (50,))["HR@50"].tolist() == [1.0, 1.0, 0.0]


def test_a_grid_keeps_the_cut_offs_its_report_reads():
    """A grid without K=10 trained every cell, then failed writing its report (HR@10, NDCG@10 missing)."""
    from tslrec.pipelines.ablate_job import AblateJob

    with pytest.raises(InputError, match="EvalConfig.ks=20,50: the grid's report reads K = 5, 10"):
        AblateJob(dataset="x", out="o", eval=EvalConfig(ks=(20, 50)))
    assert AblateJob(dataset="x", out="o", eval=EvalConfig(ks=(5, 10, 50))).eval.ks == (5, 10, 50)
