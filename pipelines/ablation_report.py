"""Tables of the ablation grid: per-cell CSV, seed summary with significance tests, markdown.

Numbers come from evaluation.significance: mean ± sample std over seeds; the verdict
against `base` of the same backbone is a Welch t-test over per-seed test means (at least 3
seeds a side, else the difference alone); a paired t-test across users on seed-averaged
per-user metrics is a secondary column, conditional on these training runs.

A row is a backbone and a variant: `base`, `ci`, or a table-reading fusion and its item-table source
(`gate:tuned`, `gate:stage0`). With labelled sources, `compare` adds the same Welch test of every
source's row against `base`, `ci` and the same fusion over `stage0` (the stage-0 model's own table).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from tslrec.evaluation.significance import (
    ALPHA,
    MIN_SEEDS,
    SEED_TEST,
    USER_TEST,
    PairedTest,
    SeedTest,
    format_p,
    mean_std,
    paired_t_test,
    seed_average,
    welch_seed_test,
)
from tslrec.stage2_augment.analysis import ActivityGroups, CategoryAgreement, mean_by_group

from .ablation_grid import CellResult
from .side_information import CONTROL

METRICS = ("HR@5", "HR@10", "NDCG@5", "NDCG@10")  # reported as mean ± std over seeds
REPORT_KS = tuple(sorted({int(m.split("@")[1]) for m in METRICS}))  # the cut-offs a grid's evaluation must keep
TESTED = ("HR@10", "NDCG@10")  # tested against base on these metrics
RUN_FIELDS = ("best_epoch", "epochs", "seconds_per_epoch", "wall_seconds")  # a cell's training, in cells.csv
BASELINE = "base"
ID_GROUPS = "ci"  # the other row every item-table source is compared with


@dataclass
class SummaryRow:
    """One backbone x variant over its seeds."""

    backbone: str  # backbone name
    fusion: str  # the variant: base, ci, gate:tuned (a fusion and its item-table source)
    seeds: list[int]  # seeds that finished
    mean: dict[str, float]  # metric -> mean over seeds
    std: dict[str, float]  # metric -> sample std over seeds
    # metric -> Welch test over seeds against base (the verdict)
    tests: dict[str, SeedTest] = field(default_factory=dict)
    user_tests: dict[str, PairedTest] = field(default_factory=dict)  # metric -> paired test over users (secondary)


def _by_key(results: list[CellResult]) -> dict[tuple[str, str], list[CellResult]]:
    """(backbone, variant) -> its cells, one per seed."""
    groups: dict[tuple[str, str], list[CellResult]] = {}
    for r in results:
        groups.setdefault((r.cell.backbone, r.cell.variant), []).append(r)
    return groups


def _values(cells: list[CellResult], metric: str) -> list[float]:
    """The cells' test `metric`, one per seed."""
    return [c.record["metrics"][metric] for c in cells]


# Markdown shared with bench/report.py (the docs' tables)


def table(header: str, rows: Iterable[str]) -> list[str]:
    """A markdown table's lines. `header` and each row are their cells joined by " | ", without the outer bars."""
    return [f"| {header} |", "|" + "---|" * (header.count(" | ") + 1), *(f"| {row} |" for row in rows)]


def seed_test_text(test: SeedTest | None) -> str:
    """A Welch test over seeds as a table cell: difference, p and verdict (– when there is no test)."""
    return "–" if test is None else test.text()


def p_text(p: float | None) -> str:
    """A p-value as a table cell (– when there is none)."""
    return "–" if p is None else format_p(p)


def seed_averaged(cells: list[CellResult], metric: str, seeds: set[int] | None = None) -> torch.Tensor:
    """[U] per-user `metric` averaged over the cells' seeds (only `seeds` if given)."""
    return seed_average([c.per_user[metric] for c in cells if seeds is None or c.cell.seed in seeds])


def summarize(results: list[CellResult]) -> list[SummaryRow]:
    """Mean ± std per backbone x fusion; Welch tests over seeds against base, and paired tests over users
    on the seeds both share."""
    groups = _by_key(results)
    rows = []
    for (backbone, fusion), cells in groups.items():
        values = {m: _values(cells, m) for m in METRICS}
        stats = {m: mean_std(v) for m, v in values.items()}
        row = SummaryRow(
            backbone,
            fusion,
            sorted(c.cell.seed for c in cells),
            {m: s[0] for m, s in stats.items()},
            {m: s[1] for m, s in stats.items()},
        )
        base = groups.get((backbone, BASELINE))
        if fusion != BASELINE and base:
            row.tests = {m: welch_seed_test(values[m], _values(base, m)) for m in TESTED}
            shared = {c.cell.seed for c in cells} & {c.cell.seed for c in base}
            if shared:
                row.user_tests = {
                    m: paired_t_test(seed_averaged(cells, m, shared), seed_averaged(base, m, shared)) for m in TESTED
                }
        rows.append(row)
    return rows


def _csv_text(header: list, rows) -> str:
    """A header row and the given rows written with csv.writer ("\n" line ends), as text."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def cells_csv(results: list[CellResult]) -> str:
    """One row per finished cell; its fusion column names the variant (gate:tuned)."""
    header = ["backbone", "fusion", "seed", *METRICS, "MRR@10", *RUN_FIELDS]
    return _csv_text(header, (_cell_row(r) for r in results))


def _cell_row(r: CellResult) -> list:
    cell, m, run = r.cell, r.record["metrics"], [r.record.get(k) for k in RUN_FIELDS]
    return [cell.backbone, cell.variant, cell.seed, *(m[k] for k in METRICS), m.get("MRR@10"), *run]


def summary_csv(rows: list[SummaryRow]) -> str:
    """One row per backbone x fusion: mean, std, the Welch test over seeds and the paired test over users."""
    stats = [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
    welch = [f"{m}_{s}_vs_base_welch_seeds" for m in TESTED for s in ("diff", "t", "p", "verdict")]
    paired = [f"{m}_{s}_vs_base_paired_users" for m in TESTED for s in ("diff", "t", "p")]
    return _csv_text(["backbone", "fusion", "seeds", *stats, *welch, *paired], (_summary_row(r) for r in rows))


def _seed_fields(test: SeedTest | None) -> tuple:
    """A Welch test's CSV fields: difference, t, p, verdict (empty without a test)."""
    return ("", "", "", "") if test is None else (test.mean_diff, test.t, test.p, test.verdict() or "")


def _paired_fields(test: PairedTest | None) -> tuple:
    """A paired test's CSV fields: difference, t, p (empty without a test)."""
    return ("", "", "") if test is None else (test.mean_diff, test.t, test.p)


def _summary_row(r: SummaryRow) -> list:
    stats = [x for m in METRICS for x in (round(r.mean[m], 6), round(r.std[m], 6))]
    welch = [x for m in TESTED for x in _seed_fields(r.tests.get(m))]
    paired = [x for m in TESTED for x in _paired_fields(r.user_tests.get(m))]
    return [r.backbone, r.fusion, " ".join(map(str, r.seeds)), *stats, *welch, *paired]


def _gain(row: SummaryRow, base: SummaryRow | None, metric: str) -> str:
    if base is None or row.fusion == BASELINE or not base.mean[metric]:
        return "–"
    return f"{100 * (row.mean[metric] / base.mean[metric] - 1):+.1f}%"


def _markdown_row(r: SummaryRow, base: SummaryRow | None) -> str:
    user = r.user_tests.get("NDCG@10")
    return (
        f"{r.backbone} | {r.fusion} | {len(r.seeds)} | "
        + " | ".join(f"{r.mean[m]:.4f} ± {r.std[m]:.4f}" for m in METRICS)
        + f" | {_gain(r, base, 'NDCG@10')} | {seed_test_text(r.tests.get('NDCG@10'))} "
        f"| {seed_test_text(r.tests.get('HR@10'))} | {p_text(None if user is None else user.p)}"
    )


def markdown_table(rows: list[SummaryRow], protocol: str) -> str:
    """The ablation table: mean ± std over seeds, gain over base, the Welch verdict, the paired p-values."""
    bases = {r.backbone: r for r in rows if r.fusion == BASELINE}
    header = (
        f"backbone | fusion | seeds | {' | '.join(METRICS)} | NDCG@10 vs base | NDCG@10 vs base, Welch over seeds "
        "| HR@10 vs base, Welch over seeds | p (NDCG@10), paired over users"
    )
    lines = [
        *table(header, (_markdown_row(r, bases.get(r.backbone)) for r in rows)),
        "",
        f"Test metrics, {protocol}; mean ± sample std over seeds. Verdict: {SEED_TEST} (scipy.stats.ttest_ind, "
        f"equal_var=False) against `{BASELINE}` of the same backbone, p ≤ {ALPHA}, given only with at least "
        f"{MIN_SEEDS} seeds a side; **bold** marks a significant difference. Last column, secondary: "
        f"{USER_TEST}; it is not a verdict.",
    ]
    return "\n".join(lines) + "\n"


@dataclass
class ActivityRow:
    """Seed-averaged per-user metrics of one backbone x fusion, averaged within each activity group."""

    backbone: str  # backbone name
    fusion: str  # fusion name
    metric: str  # e.g. NDCG@10
    values: list[float]  # one per activity group, least active first


def activity_table(
    results: list[CellResult], groups: ActivityGroups, fusions: tuple[str, ...], metrics: tuple[str, ...] = TESTED
) -> list[ActivityRow]:
    """Per backbone and variant of a fusion in `fusions` (others skipped): mean metric within each user-activity
    group."""
    rows = []
    for (backbone, fusion), cells in _by_key(results).items():
        if cells[0].cell.fusion in fusions:
            rows += [ActivityRow(backbone, fusion, m, mean_by_group(seed_averaged(cells, m), groups)) for m in metrics]
    return rows


def activity_csv(rows: list[ActivityRow], groups: ActivityGroups) -> str:
    by_group = [f"group{i + 1} ({lab} items, {n} users)" for i, (lab, n) in enumerate(zip(groups.labels, groups.users))]
    header = ["backbone", "fusion", "metric", *by_group]
    return _csv_text(header, ([r.backbone, r.fusion, r.metric, *(round(v, 6) for v in r.values)] for r in rows))


def activity_markdown(rows: list[ActivityRow], groups: ActivityGroups, metric: str = "NDCG@10") -> str:
    head = " | ".join(f"{lab} items ({n} users)" for lab, n in zip(groups.labels, groups.users))
    body = (
        f"{r.backbone} | {r.fusion} | " + " | ".join(f"{v:.4f}" for v in r.values) for r in rows if r.metric == metric
    )
    lines = table(f"backbone | fusion | {head}", body)
    return (
        f"Test {metric} by user activity: users sorted by sequence length into {len(groups.users)} equal-size "
        "groups (least active first), per-user values averaged over seeds.\n\n" + "\n".join(lines) + "\n"
    )


@dataclass
class Comparison:
    """One item-table source's row against another row of the same backbone: Welch over seeds."""

    backbone: str  # backbone name
    variant: str  # e.g. gate:tuned
    against: str  # base, ci or e.g. gate:stage0
    tests: dict[str, SeedTest]  # metric -> Welch test over seeds, variant minus against


def has_sources(results: list[CellResult]) -> bool:
    """Whether any cell names its item-table source (a grid made before sources names none)."""
    return any(r.cell.source is not None and not r.cell.unlabelled for r in results)


def compare(results: list[CellResult]) -> list[Comparison]:
    """Every row of a table-reading fusion against base, ci and the same fusion over the stage-0 table (when
    those rows exist), with the Welch test over seeds on the tested metrics."""
    groups = _by_key(results)
    by_source = {(b, cells[0].cell.fusion, cells[0].cell.source): v for (b, v), cells in groups.items()}
    out = []
    for (backbone, variant), cells in groups.items():
        cell = cells[0].cell
        if cell.source is None:
            continue
        control = by_source.get((backbone, cell.fusion, CONTROL)) if cell.source != CONTROL else None
        for against in (BASELINE, ID_GROUPS, control):
            other = groups.get((backbone, against)) if against else None
            if other:
                tests = {m: welch_seed_test(_values(cells, m), _values(other, m)) for m in TESTED}
                out.append(Comparison(backbone, variant, against, tests))
    return out


def comparisons_csv(rows: list[Comparison]) -> str:
    """One row per comparison: the Welch test over seeds on each tested metric."""
    welch = [f"{m}_{s}_welch_seeds" for m in TESTED for s in ("diff", "t", "p", "verdict", "seeds", "against_seeds")]
    header = ["backbone", "variant", "against", *welch]
    return _csv_text(header, (_comparison_row(c) for c in rows))


def _comparison_row(c: Comparison) -> list:
    tests = [c.tests[m] for m in TESTED]
    return [c.backbone, c.variant, c.against, *(x for t in tests for x in (*_seed_fields(t), t.seeds, t.base_seeds))]


def comparisons_markdown(rows: list[Comparison]) -> str:
    """The comparisons as a table, with how to read them."""
    body = (
        f"{c.backbone} | {c.variant} | {c.against} | {seed_test_text(c.tests.get('NDCG@10'))} "
        f"| {seed_test_text(c.tests.get('HR@10'))}"
        for c in rows
    )
    lines = [
        *table("backbone | variant | against | NDCG@10, Welch over seeds | HR@10, Welch over seeds", body),
        "",
        f"Each row of a fusion that reads an item table (fusion:source) against `{BASELINE}`, `{ID_GROUPS}` and the "
        f"same fusion over the `{CONTROL}` table (the stage-0 model's own item table, no LLM), same backbone: "
        f"difference of the mean test metric, {SEED_TEST}, p ≤ {ALPHA}, verdict only with at least {MIN_SEEDS} "
        "seeds a side.",
    ]
    return "\n".join(lines) + "\n"


def agreement_markdown(by_source: dict[str, CategoryAgreement]) -> str:
    """One row per item-table source: its LLM category (argmax of category_probs) against the k-means groups."""
    a = next(iter(by_source.values()))
    lines = [
        f"LLM-inferred category (argmax of stage-2 category_probs) against the k-means pre-grouping index, "
        f"{a.items} items, K = {a.k}, per item-table source:\n",
        *table(
            f"source | C1 (top-1) | C2 (in top-{a.top}, not top-1) | C3 (rest) | chance top-1",
            (f"{label} | {x.c1:.3f} | {x.c2:.3f} | {x.c3:.3f} | {1 / x.k:.3f}" for label, x in by_source.items()),
        ),
    ]
    return "\n".join(lines) + "\n"
