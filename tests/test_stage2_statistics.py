"""Seed statistics, paired t-tests, tables and the Fig. 4/5 analyses on hand-built numbers."""

from __future__ import annotations

import csv
import io
import math

import pytest
import torch
from scipy import stats

from tslrec.evaluation.significance import mean_std, paired_t_test, welch_seed_test
from tslrec.pipelines.ablation_grid import Cell, CellResult
from tslrec.pipelines.ablation_report import activity_table, markdown_table, summarize, summary_csv
from tslrec.stage2_augment.analysis import activity_groups, category_agreement, mean_by_group


def test_paired_t_test_matches_the_textbook_formula():
    a = torch.tensor([0.5, 0.2, 0.9, 0.4, 0.7, 0.1])
    b = torch.tensor([0.3, 0.2, 0.6, 0.5, 0.4, 0.0])
    d = (a - b).double()
    t = float(d.mean() / (d.std(unbiased=True) / math.sqrt(len(d))))
    p = float(2 * stats.t.sf(abs(t), df=len(d) - 1))
    res = paired_t_test(a, b)
    assert res.t == pytest.approx(t) and res.p == pytest.approx(p) and res.users == 6
    assert res.mean_diff == pytest.approx(float(d.mean()))


def test_paired_t_test_degenerate_cases():
    same = paired_t_test(torch.ones(5), torch.ones(5))
    assert same.t == 0.0 and same.p == 1.0 and not same.significant()
    shifted = paired_t_test(torch.ones(5), torch.zeros(5))  # a constant gain: certain
    assert shifted.p == 0.0 and shifted.t == math.inf and shifted.significant()
    assert math.isnan(paired_t_test(torch.ones(1), torch.zeros(1)).p)
    with pytest.raises(ValueError):
        paired_t_test(torch.ones(3), torch.ones(4))


def test_mean_std_uses_the_sample_std():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([0.25]) == (0.25, 0.0)


def _cell(backbone, fusion, seed, ndcg):
    ndcg = torch.tensor(ndcg, dtype=torch.float64)
    hr = (ndcg > 0).double()
    per_user = {"NDCG@10": ndcg, "HR@10": hr, "NDCG@5": ndcg, "HR@5": hr}
    record = {"metrics": {k: float(v.mean()) for k, v in per_user.items()}, "protocol": "full-ranking"}
    return CellResult(Cell(backbone, fusion, seed), record, per_user)


USERS = 8
BASE = {1: [0.1, 0.0, 0.3, 0.0, 0.2, 0.1, 0.0, 0.5], 2: [0.2, 0.0, 0.1, 0.1, 0.2, 0.0, 0.0, 0.3]}
GATE = {1: [0.4, 0.3, 0.6, 0.2, 0.5, 0.3, 0.2, 0.9], 2: [0.5, 0.2, 0.5, 0.4, 0.4, 0.3, 0.1, 0.6]}
CI = {1: [0.1, 0.1, 0.2, 0.0, 0.3, 0.1, 0.0, 0.4]}  # one seed only: tested on seed 1 alone


def grid():
    cells = [_cell("sasrec", "base", s, v) for s, v in BASE.items()]
    cells += [_cell("sasrec", "gate", s, v) for s, v in GATE.items()]
    cells += [_cell("sasrec", "ci", s, v) for s, v in CI.items()]
    return cells


def test_summary_tests_seed_averaged_users_against_base_of_the_same_seeds():
    rows = {r.fusion: r for r in summarize(grid())}
    gate, ci, base = rows["gate"], rows["ci"], rows["base"]
    assert base.tests == {} and base.user_tests == {} and gate.seeds == [1, 2] and ci.seeds == [1]
    gate_means = [sum(v) / USERS for v in GATE.values()]
    assert gate.mean["NDCG@10"] == pytest.approx(sum(gate_means) / 2)
    assert gate.std["NDCG@10"] == pytest.approx(abs(gate_means[0] - gate_means[1]) / math.sqrt(2))
    avg_gate = [(x + y) / 2 for x, y in zip(GATE[1], GATE[2])]
    avg_base = [(x + y) / 2 for x, y in zip(BASE[1], BASE[2])]
    assert gate.user_tests["NDCG@10"].p == pytest.approx(stats.ttest_rel(avg_gate, avg_base).pvalue)
    assert ci.user_tests["NDCG@10"].p == pytest.approx(
        stats.ttest_rel(CI[1], BASE[1]).pvalue
    )  # seed 2 of base left out
    assert gate.user_tests["NDCG@10"].significant() and not ci.user_tests["NDCG@10"].significant()


def test_two_seeds_give_a_difference_and_no_verdict():
    rows = {r.fusion: r for r in summarize(grid())}
    gate = rows["gate"].tests["NDCG@10"]  # the paired test over users calls it significant; two seeds cannot
    assert gate.mean_diff == pytest.approx(
        sum(sum(v) for v in GATE.values()) / 16 - sum(sum(v) for v in BASE.values()) / 16
    )
    assert gate.verdict() is None and not gate.significant()


def test_welch_over_seeds_matches_scipy_and_ignores_user_count():
    base, gate = [0.0798, 0.0770, 0.0826], [0.0771, 0.0751, 0.0791]  # a gap about the size of the seed spread
    test = welch_seed_test(gate, base)
    assert test.p == pytest.approx(stats.ttest_ind(gate, base, equal_var=False).pvalue)
    assert test.verdict() == "no significant difference"
    assert welch_seed_test([0.30, 0.31, 0.32], [0.10, 0.11, 0.12]).verdict() == "better"
    assert welch_seed_test([0.10, 0.11, 0.12], [0.30, 0.31, 0.32]).verdict() == "worse"
    assert welch_seed_test([0.2, 0.2, 0.2], [0.2, 0.2, 0.2]).verdict() == "no significant difference"


def _three_seed_grid():
    cells = []
    for seed in (1, 2, 3):
        cells.append(_cell("sasrec", "base", seed, [0.1 * seed, 0.0, 0.2, 0.1]))
        cells.append(_cell("sasrec", "gate", seed, [0.1 * seed + 0.5, 0.4, 0.7, 0.5]))
        cells.append(_cell("sasrec", "ci", seed, [0.1 * (4 - seed), 0.0, 0.2, 0.1]))
    return cells


def test_markdown_and_csv_name_the_tests_and_mark_significance():
    rows = summarize(_three_seed_grid())
    table = markdown_table(rows, "full-ranking")
    gate_line = next(line for line in table.splitlines() if "| gate |" in line)
    ci_line = next(line for line in table.splitlines() if "| ci |" in line)
    assert "**" in gate_line and "better" in gate_line and "±" in gate_line
    assert "no significant difference" in ci_line and "**" not in ci_line
    assert "+" in gate_line.split("|")[8]  # gain over base in percent
    assert "Welch t-test over per-seed means" in table and "paired t-test over users" in table
    parsed = list(csv.DictReader(io.StringIO(summary_csv(rows))))
    assert [r["fusion"] for r in parsed] == ["base", "gate", "ci"]
    assert (
        parsed[0]["NDCG@10_p_vs_base_welch_seeds"] == ""
        and parsed[1]["NDCG@10_verdict_vs_base_welch_seeds"] == "better"
    )
    two = markdown_table(summarize(grid()), "full-ranking")
    assert "no verdict" in next(line for line in two.splitlines() if "| gate |" in line)


def test_category_agreement_hand_computed():
    probs = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # padding, ignored
            [0.7, 0.1, 0.1, 0.1],  # top-1 = 0, group 0 -> C1
            [0.1, 0.6, 0.2, 0.1],  # ranking 1, 2, 0|3; group 2 -> C2
            [0.4, 0.3, 0.2, 0.1],  # ranking 0, 1, 2; group 3 -> C3
            [0.1, 0.2, 0.3, 0.4],  # top-1 = 3, group 3 -> C1
            [0.25, 0.35, 0.3, 0.1],  # ranking 1, 2, 0; group 0 -> C2
        ]
    )
    groups = torch.tensor([-1, 0, 2, 3, 3, 0])
    a = category_agreement(probs, groups)
    assert (a.c1, a.c2, a.c3) == pytest.approx((2 / 5, 2 / 5, 1 / 5))
    assert a.within_top == pytest.approx(4 / 5) and a.items == 5 and a.as_dict()["chance_top1"] == 0.25
    with pytest.raises(ValueError):
        category_agreement(probs, torch.tensor([-1, 0, 2, 3, 4, 0]))  # group 4 outside K = 4


def test_activity_groups_split_users_by_sequence_length():
    lengths = torch.tensor([5, 3, 9, 1, 7, 2])
    groups = activity_groups(lengths, 3)
    assert groups.group_of_user.tolist() == [1, 1, 2, 0, 2, 0]
    assert groups.labels == ["1-2", "3-5", "7-9"] and groups.users == [2, 2, 2]
    assert mean_by_group(torch.tensor([1.0, 0.0, 0.5, 0.2, 0.1, 0.4]), groups) == pytest.approx([0.3, 0.5, 0.3])


def test_activity_table_averages_seeds_before_grouping():
    groups = activity_groups(torch.arange(1, USERS + 1), 2)  # users 0-3 short, 4-7 long
    rows = activity_table(grid(), groups, fusions=("base", "gate"))
    assert {(r.fusion, r.metric) for r in rows} == {(f, m) for f in ("base", "gate") for m in ("HR@10", "NDCG@10")}
    gate = next(r for r in rows if r.fusion == "gate" and r.metric == "NDCG@10")
    avg = [(x + y) / 2 for x, y in zip(GATE[1], GATE[2])]
    assert gate.values == pytest.approx([sum(avg[:4]) / 4, sum(avg[4:]) / 4])
