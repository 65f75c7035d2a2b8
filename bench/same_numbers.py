"""Did a change of code change any number? Two uninterrupted runs of bench.chaos's tiny `tslrec run`, one made with
the code before the change and one after, compared file by file as bench.chaos compares a killed run.

    python -m bench.same_numbers --before /tmp/chaos-before/reference --after /tmp/chaos-final/reference \\
        --before-commit a07d45e

Each difference falls in one of three kinds: the code's own identity (`versions.*`: the commit), a setting the code
gained (in a stage manifest's `job`, absent before, at a value that changes nothing), or a result. Only results
count as `mismatches`; the other two are listed with the record.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bench.chaos import CONFIG, PRECISION, TINY, compare_runs, final_metrics
from bench.records import add
from tslrec.core.precision import cpu_capability

MISSING = "<missing>"


def kind(mismatch: dict) -> str:
    """code (the version strings), setting (added to a stage manifest since) or result."""
    if mismatch["item"].startswith("versions."):
        return "code"
    if mismatch["file"].endswith("stage_manifest.json") and mismatch["reference"] == MISSING:
        return "setting"
    return "result"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", type=Path, required=True, help="run folder made by the code before the change")
    p.add_argument("--after", type=Path, required=True, help="run folder made by the code after it")
    p.add_argument("--before-commit", required=True, help="the commit of the code that made --before")
    p.add_argument("--name", default="chaos-ml-100k", help="bench/results/<name>.json")
    args = p.parse_args()
    c = compare_runs(args.before, args.after)
    by_kind = {k: [m for m in c.mismatches if kind(m) == k] for k in ("code", "setting", "result")}
    add(
        args.name,
        {
            "dataset": "ml-100k",
            "model": "tslrec run: sasrec; smollm2 (4 layers) stages 1 and 2; grid sasrec,gru4rec x base,gate:tuned",
            "variant": f"same numbers: uninterrupted runs before ({args.before_commit}) and after a change of code",
            "seed": 0,
            "device": f"cpu, {cpu_capability()}, {PRECISION}, 1 torch thread per process (the grid: 2 processes)",
            "metrics": final_metrics(args.after),
            "mismatches": len(by_kind["result"]),
            "mismatch_details": by_kind["result"],
            "compared": c.compared,
            "code_identity": sorted({m["file"] for m in by_kind["code"]}),
            "settings_added": sorted({m["item"] for m in by_kind["setting"]}),
            "before_commit": args.before_commit,
            "timings": {"precision": PRECISION, "cpu_capability": torch.backends.cpu.get_cpu_capability()},
            "config": {"file": CONFIG, "set": TINY},
        },
    )
    print(f"{len(by_kind['result'])} results differ; {c.compared['files']} files, {c.compared['values']} values")


if __name__ == "__main__":
    main()
