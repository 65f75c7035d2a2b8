"""Generate docs/results.md (and the README's results block) from bench/results/*.json.

    python bench/report.py
Every number in the docs comes from a record here; each table names the command that made it.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PAPER_BASE_ML1M = {"sasrec": (0.3217, 0.1907), "gru4rec": (0.2912, None), "caser": (0.2700, None), "fmlprec": (0.3172, None)}
METRIC_ORDER = ["HR@5", "HR@10", "NDCG@5", "NDCG@10", "Recall@10", "Recall@20", "NDCG@20", "mse", "mse_global_mean",
                "mse_untuned_llm"]


def load(name: str) -> list[dict]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else []


def fmt(x, digits: int = 4) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.6f}" if 0 < abs(x) < 0.01 and digits == 4 else f"{x:.{digits}f}"
    return str(x)


def backbones_table(dataset: str = "ml-1m") -> str:
    runs = load(f"backbones-{dataset}")
    if not runs:
        return ""
    cpu = {r["model"]: r for r in load(f"backbones-{dataset}-cpu-timing")}
    lines = [
        f"**ID backbones on {dataset} (5-core), leave-one-out, full ranking over all items, test set, model chosen on validation NDCG@10.**",
        "",
        "| backbone | HR@5 | HR@10 | NDCG@5 | NDCG@10 | HR@10 / NDCG@10 with history masked | paper base HR@10 / NDCG@10 | best epoch / run | s/epoch (device) | s to best | CPU s/epoch (from 5 timed batches) | CPU peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        m, mm = r["metrics"], r.get("metrics_history_masked", {})
        paper = PAPER_BASE_ML1M.get(r["model"], (None, None))
        c = cpu.get(r["model"], {})
        lines.append(
            f"| {r['model']} | {fmt(m['HR@5'])} | {fmt(m['HR@10'])} | {fmt(m['NDCG@5'])} | {fmt(m['NDCG@10'])} | "
            f"{fmt(mm.get('HR@10'))} / {fmt(mm.get('NDCG@10'))} | {fmt(paper[0])} / {fmt(paper[1])} | "
            f"{r['best_epoch']} / {r['epochs']} | {r['seconds_per_epoch']} ({r['device']}) | {r['seconds_to_best']} | "
            f"{fmt(c.get('seconds_per_epoch'), 1)} | {fmt(c.get('peak_memory_mb'), 0)} |")
    cmds = sorted({r["command"] for r in runs} | {r["command"] for r in cpu.values()})
    lines += ["", "Commands (run from `bench/`):", ""] + [f"    {c}" for c in cmds]
    lines += ["", f"Commits: {', '.join(sorted({r['commit'] for r in runs}))}. Seeds: {sorted({r['seed'] for r in runs})}."]
    return "\n".join(lines)


def generic_table(name: str) -> str:
    runs = load(name)
    if not runs:
        return ""
    keys = [k for k in METRIC_ORDER if any(k in r.get("metrics", {}) for r in runs)]
    lines = [f"**{name}**", "", "| dataset | model | variant | seed | " + " | ".join(keys) + " |",
             "|---|---|---|---|" + "---|" * len(keys)]
    for r in runs:
        m = r.get("metrics", {})
        lines.append(f"| {r.get('dataset')} | {r.get('model')} | {r.get('variant')} | {r.get('seed')} | "
                     + " | ".join(fmt(m.get(k)) for k in keys) + " |")
    cmds = sorted({r.get("command", "?") for r in runs})
    lines += ["", "Commands:", ""] + [f"    {c}" for c in cmds]
    return "\n".join(lines)


def lite_tables() -> str:
    out = []
    lat = load("lite-latency")
    if lat:
        out += ["**Lite-LLM4Rec inference latency, batches of 32 users (paper Table 4 reports > 200x on a GPU).**", "",
                "| dataset | device | Lite ms/batch | generative beam-20 ms/batch | ratio | Lite positions/user | generative prompt tokens/user |",
                "|---|---|---|---|---|---|---|"]
        for r in lat:
            ms, inp = r["ms_per_batch"], r["input_length_per_user"]
            out.append(f"| {r['dataset']} | {r['device']} | {ms['lite-llm4rec']} | {ms['generative-beam20']} | "
                       f"{r['generative_over_lite']}x | {inp['lite_positions_mean']} | {inp['generative_prompt_tokens_mean']} |")
        out += ["", "Commands (from `bench/`):", ""] + [f"    {c}" for c in sorted({r["command"] for r in lat})] + [""]
    runs = load("lite-ml-1m")
    if runs:
        keys = ["Recall@10", "Recall@20", "NDCG@10", "NDCG@20"]
        out += ["**Lite-LLM4Rec on ML-1M (5-core), full ranking, test set. The runs are capped CPU runs, far from converged.**", "",
                "| model | variant | training budget | " + " | ".join(keys) + " |", "|---|---|---|" + "---|" * len(keys)]
        for r in runs:
            budget = f"{r.get('steps')} steps, {r.get('epochs_run')} epochs"
            out.append(f"| {r['model']} | {r['variant']} | {budget} | " + " | ".join(fmt(r['metrics'].get(k)) for k in keys) + " |")
        for r in load("backbones-ml-1m"):
            if r["model"] == "sasrec":
                out.append("| SASRec (this project, ID only) | base | converged | " + " | ".join(fmt(r['metrics'].get(k)) for k in keys) + " |")
        out.append("| Lite-LLM4Rec (paper Table 3) | sampling | paper | 0.2733 | 0.3770 | 0.1518 | 0.1780 |")
        out += ["", "Commands (from `bench/`):", ""] + [f"    {c}" for c in sorted({r["command"] for r in runs})]
    return "\n".join(out)


def sft_table() -> str:
    runs = load("sft-efficiency")
    if not runs:
        return ""
    out = ["**Stage 1 SFT cost: user-level (TSLRec) vs instance-level (E4SRec-style), same LLM, LoRA and batch.**", "",
           "| dataset | model | user-level s/epoch | instance-level s/epoch | ratio (s) | ratio (LLM passes) | ratio (tokens) |",
           "|---|---|---|---|---|---|---|"]
    for r in runs:
        u, i, q = r["user_level"], r["instance_level"], r["ratio_instance_over_user"]
        out.append(f"| {r['dataset']} | {r['model']} | {u['seconds_per_epoch_extrapolated']:.0f} | {i['seconds_per_epoch_extrapolated']:.0f} | "
                   f"{q['seconds_per_epoch']:.1f}x | {q['passes']:.1f}x | {q['tokens']:.1f}x |")
    out += ["", runs[0].get("note", ""), "", "Commands (from `bench/`):", ""] + [f"    {c}" for c in sorted({r['command'] for r in runs})]
    return "\n".join(out)


def main() -> None:
    sections = [backbones_table("ml-1m"), sft_table(), lite_tables()]
    special = ("backbones-", "lite-", "sft-efficiency")
    for path in sorted(RESULTS.glob("*.json")):
        if not path.stem.startswith(special):
            sections.append(generic_table(path.stem))
    body = "\n\n".join(s for s in sections if s)
    docs = ROOT / "docs" / "results.md"
    docs.parent.mkdir(exist_ok=True)
    docs.write_text("# Results\n\nGenerated by `python bench/report.py` from `bench/results/*.json`; do not edit by hand.\n\n"
                    + body + "\n")
    readme = ROOT / "README.md"
    if readme.is_file():
        text = readme.read_text()
        block = "<!-- results:start -->\n" + backbones_table("ml-1m") + "\n<!-- results:end -->"
        text = re.sub(r"<!-- results:start -->.*?<!-- results:end -->", lambda _: block, text, flags=re.S)
        readme.write_text(text)
    print(f"wrote {docs}")


if __name__ == "__main__":
    main()
