"""Kill-anywhere benchmark: `tslrec run` killed with SIGKILL at random moments resumes to the same results, bit for bit.

    python -m bench.chaos --seed 0 --kills 24 --out /tmp/chaos-ml-100k

A small `tslrec run` (configs/ml-100k.yaml with the tiny budgets of TINY: every stage, and a grid of 2 backbones x
2 fusions x 1 seed on 2 workers) runs three times, each as its own process group, one torch thread per process,
float32, under `nice`:

1. reference: uninterrupted; it also measures how long each stage works (from its `[stage]` line to its
   stage_manifest.json), which spreads the kills;
2. chaos: started, SIGKILLed (the whole process group, grid workers included) at a random moment, started again with
   the same command, and so on until --kills kills are done, then left to finish. The kills are shared out over the
   stages (--kills / stages each; a stage that finishes before its share passes the rest to the next). Each delay is
   drawn (random.Random(--seed)) uniformly from the start of the current stage's work in that process (its
   `[stage]` line) to the stage's reference duration, every other one from its second half only: a process killed
   early resumes a stage that later ones carry further, so the kills land over the whole of each stage, its
   start-up included, and past the first checkpoint of a stage whose start-up is most of it (stage 1). The last
   stage can pass no kills on: its delays are drawn up to its reference duration over its kills still to come,
   plus one;
3. control (unless --no-control): uninterrupted again, into another folder, to tell a resume bug from a run that
   does not repeat itself at all.

Then every file of the chaos run folder is compared with the reference's: JSON values leaf by leaf, CSV cells, the
tensors of every safetensors file (torch.equal, with dtype, shape and metadata), .npy arrays, text and figures byte
for byte, after replacing each run's own folder path with <out>. The keys of EXCLUDED_KEYS (wall-clock times, load
averages, memory peaks and the digest of a manifest that holds them) and the files of EXCLUDED_FILES are left out.
A file only the chaos run has (a temporary file a kill left behind) is listed under `leftovers`, not counted as a
mismatch; a file only the reference has is one. Writes bench/results/chaos-ml-100k.json (records.add), with `kills`,
`kills_per_stage`, `mismatches` (their number, each listed in `mismatch_details`) and the kills one by one.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from bench.records import add
from tslrec.core.precision import cpu_capability
from tslrec.core.settings import add_arguments, from_namespace, setting
from tslrec.pipelines.ablation_grid import LOCK_FILE, SETTINGS_LOCK
from tslrec.pipelines.run_job import RUN_LOCK, active_stages, load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/ml-100k.yaml"
PRECISION = "float32"
# The main job's config with tiny budgets: an uninterrupted run takes about 5 minutes on one busy core.
TINY = [
    "data.max_len=20",
    "stages.stage0.epochs=4",
    "stages.stage0.hidden=32",
    f"stages.stage0.precision={PRECISION}",
    f"stages.stage0.eval_precision={PRECISION}",
    "stages.stage1.k=8",
    "stages.stage1.max_items=10",
    "stages.stage1.max_users=64",
    "stages.stage1.batch_size=8",
    "stages.stage1.epochs=2",
    "stages.stage1.max_steps=10",  # 7 steps an epoch: a validation after step 7, the last after step 10
    "stages.stage1.checkpoint_every=3",  # checkpoints at 3, 6, 7 (epoch end), 9, 10: kills between them lose steps
    "stages.stage1.llm_layers=4",  # SmolLM2's first 4 of 30 blocks: the same code, 7x less compute
    f"stages.stage1.precision={PRECISION}",
    f"stages.stage2.precision={PRECISION}",
    "stages.ablation.backbones=[sasrec, gru4rec]",
    "stages.ablation.fusions=[base, 'gate:tuned']",
    "stages.ablation.seeds=1",
    "stages.ablation.workers=2",
    "stages.ablation.epochs=3",
    "stages.ablation.hidden=32",
    f"stages.ablation.precision={PRECISION}",
    f"stages.ablation.eval_precision={PRECISION}",
]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# Keys (at any depth of a JSON file, or CSV columns) whose values differ between any two runs, killed or not.
EXCLUDED_KEYS = {
    "seconds": "wall-clock seconds (a stage's, in stage_manifest.json; stage 2's extraction's, in manifest.json)",
    "wall_seconds": "wall-clock seconds of a run (every process of a resumed one)",
    "train_seconds": "wall-clock seconds of training",
    "elapsed_seconds": "wall-clock seconds since the start of training",
    "seconds_per_epoch": "wall-clock seconds per epoch",
    "seconds_to_best": "wall-clock seconds to the best epoch",
    "earlier_processes_seconds": "wall-clock seconds of the processes before a resume",
    "seconds_per_1000_items": "wall-clock seconds of stage 2 per 1,000 items",
    "untuned_llm_seconds": "wall-clock seconds of stage 1's untuned-LLM baseline",
    "tokens_per_second": "stage 1's tokens over its wall-clock training seconds",
    "load_average_1min": "the machine's load average",
    "peak_memory_mb": "peak resident memory of the process (a resumed one did less)",
    "upstream": (
        "stage_manifest.json's sha256 of the stage before's manifest, whose `seconds` differ between any two runs"
    ),
}
EXCLUDED_FILES = {  # lock files: the host name and pid of the last process that held them
    LOCK_FILE: "the process that last trained the grid cell",
    SETTINGS_LOCK: "the process that last read and rewrote the grid's settings",
    RUN_LOCK: "the `tslrec run` that last worked in the run folder",
}


@dataclass
class ChaosSettings:
    """What the benchmark does; the config itself is CONFIG with TINY."""

    seed: int = setting(0, "seeds the kill delays (random.Random(seed))")
    kills: int = setting(20, "SIGKILLs in all, shared out over the stages")
    out: str = setting(
        "/tmp/chaos-ml-100k", "work folder (outside the checkout): the run folders and their logs; emptied first"
    )
    nice: int = setting(5, "niceness of every `tslrec run` (the machine is shared)")
    control: bool = setting(True, "skip the second uninterrupted run (run-to-run repeatability)", flag="--no-control")
    reuse_reference: bool = setting(
        False, "keep a finished reference run found in --out (its stage durations included)"
    )
    name: str = setting("chaos-ml-100k", "bench/results/<name>.json")


@dataclass
class Kill:
    """One SIGKILL: when, in which stage, and what the run had printed last."""

    attempt: int  # the process it killed, counting from 1
    stage: str  # the stage at work: the first one without a stage_manifest.json
    seconds_into_stage: float  # since this process printed the stage's `[stage]` line
    delay_drawn: float  # the same, as drawn
    last_line: str  # the last line of the process's output before the kill
    saved: str  # what the run folder held of the stage at the kill (its checkpoint, its finished cells)


# ---------------------------------------------------------------- running and killing


def command(cfg_out: Path, nice: int) -> list[str]:
    sets = [x for s in [*TINY, f"out={cfg_out}"] for x in ("--set", s)]
    tslrec = str(Path(sys.executable).parent / "tslrec")
    return ["nice", "-n", str(nice), tslrec, "run", "--config", CONFIG, "--no-progress", *sets]


def stage_names() -> list[str]:
    return [s.name for s in active_stages(load_config(ROOT / CONFIG, TINY))]


def current_stage(run: Path, stages: list[str]) -> str | None:
    """The stage at work (or about to be): the first without its stage_manifest.json; None when all have one."""
    return next((s for s in stages if not (run / s / "stage_manifest.json").is_file()), None)


def saved_progress(run: Path, stage: str) -> str:
    """What the run folder holds of `stage`'s work: stage 1's checkpoint files, the grid's finished cells and
    checkpoints, stage 0's checkpoint (its epoch is in the log) or finished metrics."""
    folder = run / stage
    if stage == "stage1":
        saved = sorted(p.name for p in folder.glob("checkpoint*.pt"))
        cached = (folder / "baseline_untuned_head.json").is_file()
        return f"checkpoints {saved}" if saved else f"no checkpoint (baseline cached: {cached})"
    if stage == "ablation":
        cells = sorted((folder / "cells").glob("*"))
        done = [c.name for c in cells if (c / "metrics.json").is_file()]
        ckpt = [c.name for c in cells if (c / "checkpoint.pt").is_file() and c.name not in done]
        return f"finished cells {done}, checkpoints {ckpt}"
    names = ("checkpoint.pt", "metrics.json", "item_embeddings.safetensors", "manifest.json")
    return f"files {[n for n in names if (folder / n).is_file()]}"


def start(argv: list[str], log: Path) -> subprocess.Popen:
    """`argv` in a process group of its own (so one killpg reaches the grid's workers too), output appended to log."""
    with open(log, "a") as f:
        env = {**os.environ, **ONE_THREAD}
        return subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the whole process group and wait until none of it is left."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for _ in range(200):
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise RuntimeError(f"process group {proc.pid} survived SIGKILL")


def read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", errors="replace")


def stops_on(rc: int | None, log: Path) -> None:
    if rc not in (None, 0):
        raise SystemExit(f"tslrec run exited with {rc}; see {log}")


def reference_run(run: Path, log: Path, stages: list[str], nice: int) -> dict[str, float]:
    """Run uninterrupted; seconds each stage worked: from its `[stage]` line to its stage_manifest.json."""
    began: dict[str, float] = {}
    ended: dict[str, float] = {}
    offset = log.stat().st_size if log.exists() else 0
    proc = start(command(run, nice), log)
    while True:
        rc = proc.poll()
        now = time.monotonic()
        text = read_from(log, offset)
        for s in stages:
            if s not in began and f"[{s}] tslrec " in text:
                began[s] = now
            if s in began and s not in ended and (run / s / "stage_manifest.json").is_file():
                ended[s] = now
        if rc is not None:
            stops_on(rc, log)
            return {s: round(ended[s] - began[s], 1) for s in stages}
        time.sleep(0.1)


def share_kills(total: int, stages: list[str]) -> dict[str, int]:
    """total // stages each, the remainder to the last stages (the grid is the longest)."""
    base, extra = divmod(total, len(stages))
    return {s: base + (1 if i >= len(stages) - extra else 0) for i, s in enumerate(stages)}


def chaos_run(
    run: Path, log: Path, stages: list[str], durations: dict[str, float], settings: ChaosSettings
) -> tuple[list[Kill], int]:
    """Start, kill, start again until settings.kills kills are done, then let it finish; (kills, processes)."""
    rng = random.Random(settings.seed)
    quota = share_kills(settings.kills, stages)
    kills: list[Kill] = []
    passed: set[str] = set()  # stages whose unused kills went to the next
    attempt = 0
    while True:
        attempt += 1
        with open(log, "a") as f:
            f.write(f"=== chaos: process {attempt} ===\n")
        offset = log.stat().st_size
        proc = start(command(run, settings.nice), log)
        began: dict[str, float] = {}
        target: str | None = None
        kill_at: float | None = None
        delay = 0.0
        while True:
            rc = proc.poll()
            if rc is not None:
                stops_on(rc, log)
                return kills, attempt
            now = time.monotonic()
            text = read_from(log, offset)
            for s in stages:
                if s not in began and f"[{s}] tslrec " in text:
                    began[s] = now
            stage = current_stage(run, stages)
            for i, s in enumerate(stages[:-1]):  # a finished stage passes its unused kills on
                if stage is not None and stages.index(stage) > i and s not in passed:
                    passed.add(s)
                    quota[stages[i + 1]] += max(0, quota[s] - sum(k.stage == s for k in kills))
                    quota[s] = sum(k.stage == s for k in kills)
            if stage is not None and stage in began and stage != target:
                target = stage
                left = quota[stage] - sum(k.stage == stage for k in kills)
                kill_at = None
                if left > 0:
                    window = durations[stage] / (left + 1 if stage == stages[-1] else 1)
                    # every other kill in the second half: a restarted stage redoes its start-up (stage 1 loads its
                    # LLM), so kills drawn over the whole window land mostly before its first checkpoint
                    delay = rng.uniform(window / 2 if len(kills) % 2 else 0.0, window)
                    kill_at = began[stage] + delay
            if kill_at is not None and stage == target and now >= kill_at:
                kill_group(proc)
                saved = saved_progress(run, stage)
                lines = [line for line in read_from(log, offset).splitlines() if line.strip()]
                into = time.monotonic() - began[stage]
                last = lines[-1][:200] if lines else ""
                kills.append(Kill(attempt, stage, round(into, 2), round(delay, 2), last, saved))
                with open(log, "a") as f:
                    f.write(f"\n=== chaos: SIGKILL {len(kills)} in {stage}, {into:.1f} s into it ===\n")
                print(f"kill {len(kills)}: {stage}, {into:.1f} s in; {saved}; {last[:80]}", flush=True)
                break
            time.sleep(0.05)


# ---------------------------------------------------------------- comparing two run folders


@dataclass
class Comparison:
    """What two run folders agree on, and where they differ."""

    compared: dict[str, int] = field(default_factory=lambda: {"files": 0, "values": 0})
    mismatches: list[dict] = field(default_factory=list)
    leftovers: list[str] = field(default_factory=list)  # files only the second run has

    def differ(self, rel: str, item: str, reference: Any, other: Any, diff: float | None = None) -> None:
        entry = {"stage": rel.split("/")[0], "file": rel, "item": item, "reference": reference, "other": other}
        if diff is not None:
            entry["max_abs_diff"] = diff
        self.mismatches.append(entry)


def _normal(value: Any, roots: tuple[str, str]) -> Any:
    """Strings with the run's folder written as <out>; JSON-able values otherwise unchanged."""
    if isinstance(value, str):
        return value.replace(roots[1], "<out>").replace(roots[0], "<out>")
    if isinstance(value, list):
        return [_normal(v, roots) for v in value]
    if isinstance(value, dict):
        return {k: _normal(v, roots) for k, v in value.items()}
    return value


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """{path: leaf} of a JSON value, without the EXCLUDED_KEYS."""
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            if k not in EXCLUDED_KEYS:
                out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            out.update(flatten(v, f"{prefix}[{i}]"))
        return out or {prefix: []}
    return {prefix: obj}


def same_value(a: Any, b: Any) -> bool:
    """Equal, bit for bit for floats (NaN equals NaN)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def numeric_diff(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return abs(float(a) - float(b))
    return None


def compare_values(c: Comparison, rel: str, ref: dict[str, Any], other: dict[str, Any]) -> None:
    for key in sorted(set(ref) | set(other)):
        c.compared["values"] += 1
        a, b = ref.get(key, "<missing>"), other.get(key, "<missing>")
        if not same_value(a, b):
            c.differ(rel, key, a, b, numeric_diff(a, b))


def read_csv(path: Path, roots: tuple[str, str]) -> dict[str, Any]:
    rows = list(csv.DictReader(io.StringIO(_normal(path.read_text(), roots))))
    return {f"row {i}.{k}": v for i, row in enumerate(rows) for k, v in row.items() if k not in EXCLUDED_KEYS}


def compare_tensors(c: Comparison, rel: str, a_path: Path, b_path: Path) -> None:
    a, b = load_file(a_path), load_file(b_path)
    with safe_open(a_path, "pt") as fa, safe_open(b_path, "pt") as fb:
        compare_values(c, rel, {"<metadata>": fa.metadata()}, {"<metadata>": fb.metadata()})
    for name in sorted(set(a) | set(b)):
        c.compared["values"] += 1
        if name not in a or name not in b:
            c.differ(rel, name, name in a, name in b)
        elif a[name].dtype != b[name].dtype or a[name].shape != b[name].shape:
            c.differ(rel, name, f"{a[name].dtype} {list(a[name].shape)}", f"{b[name].dtype} {list(b[name].shape)}")
        elif not torch.equal(a[name], b[name]):
            diff = (a[name].double() - b[name].double()).abs().max().item()
            c.differ(rel, name, "tensor", "tensor", diff)


def compare_files(c: Comparison, rel: str, a: Path, b: Path, roots: tuple[str, str]) -> None:
    suffix = a.suffix
    if suffix == ".json":
        ref = flatten(_normal(json.loads(a.read_text()), roots))
        compare_values(c, rel, ref, flatten(_normal(json.loads(b.read_text()), roots)))
    elif suffix == ".csv":
        compare_values(c, rel, read_csv(a, roots), read_csv(b, roots))
    elif suffix == ".safetensors":
        compare_tensors(c, rel, a, b)
    elif suffix == ".npy":
        x, y = np.load(a, allow_pickle=False), np.load(b, allow_pickle=False)
        c.compared["values"] += 1
        if x.dtype != y.dtype or x.shape != y.shape or not np.array_equal(x, y, equal_nan=True):
            diff = float(np.abs(x.astype(np.float64) - y.astype(np.float64)).max()) if x.shape == y.shape else None
            c.differ(rel, "array", f"{x.dtype} {list(x.shape)}", f"{y.dtype} {list(y.shape)}", diff)
    elif suffix in (".png",):
        c.compared["values"] += 1
        if a.read_bytes() != b.read_bytes():
            c.differ(rel, "bytes", a.stat().st_size, b.stat().st_size)
    else:  # text: .md, .tsv, .itememb, ...
        x, y = (_normal(p.read_text(errors="replace"), roots).splitlines() for p in (a, b))
        c.compared["values"] += 1
        if x != y:
            line = next((i for i, (u, v) in enumerate(zip(x, y)) if u != v), min(len(x), len(y)))
            c.differ(rel, f"line {line + 1}", x[line] if line < len(x) else None, y[line] if line < len(y) else None)


def compare_runs(reference: Path, other: Path) -> Comparison:
    """Every result file of `reference` against the same file of `other` (see the module docstring)."""
    roots = (str(reference), str(other))
    c = Comparison()

    def files(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name not in EXCLUDED_FILES}

    ref_files, other_files = files(reference), files(other)
    c.leftovers = sorted(other_files - ref_files)
    for rel in sorted(ref_files):
        c.compared["files"] += 1
        if rel not in other_files:
            c.differ(rel, "file", "present", "missing")
            continue
        compare_files(c, rel, reference / rel, other / rel, roots)
    return c


# ---------------------------------------------------------------- the record


def final_metrics(run: Path) -> dict[str, float]:
    """The results a reader looks at: stage 0's and every grid cell's test NDCG@10 and HR@10, stage 1's MSE."""
    out: dict[str, float] = {}
    for folder in [run / "stage0", *sorted((run / "ablation" / "cells").glob("*"))]:
        m = json.loads((folder / "metrics.json").read_text())["metrics"]
        name = "stage0" if folder.name == "stage0" else f"grid {folder.name}"
        out.update({f"{name} {k}": m[k] for k in ("NDCG@10", "HR@10")})
    out["stage1 held-out MSE"] = json.loads((run / "stage1" / "metrics.json").read_text())["metrics"]["mse"]
    agreement = json.loads((run / "stage2" / "manifest.json").read_text())["source"]["category_agreement"]
    out["stage2 C1"] = agreement["C1"]
    return out


def summary(c: Comparison, limit: int = 100) -> dict:
    return {
        "mismatches": len(c.mismatches),
        "compared": c.compared,
        "mismatch_details": c.mismatches[:limit],
        "mismatch_details_left_out": max(0, len(c.mismatches) - limit),
        "leftovers": c.leftovers,
    }


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p, ChaosSettings())
    settings: ChaosSettings = from_namespace(ChaosSettings(), p.parse_args())
    out = Path(settings.out).resolve()
    if ROOT in out.parents or out == ROOT:
        raise SystemExit(f"--out {out}: use a folder outside the checkout")
    stages = stage_names()
    reference, chaos, control, logs = out / "reference", out / "chaos", out / "control", out / "logs"
    durations_file = out / "reference-durations.json"
    keep = settings.reuse_reference and durations_file.is_file() and current_stage(reference, stages) is None
    for folder in (chaos, control) if keep else (reference, chaos, control, logs, durations_file):
        shutil.rmtree(folder, ignore_errors=True) if folder.is_dir() else folder.unlink(missing_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if keep:
        durations = json.loads(durations_file.read_text())
        print(f"reference: kept ({durations_file})", flush=True)
    else:
        print(f"reference: uninterrupted run into {reference}", flush=True)
        durations = reference_run(reference, logs / "reference.log", stages, settings.nice)
        durations_file.write_text(json.dumps(durations, indent=2) + "\n")
    reference_seconds = time.perf_counter() - started
    print(f"reference stage seconds: {durations}", flush=True)

    t0 = time.perf_counter()
    kills, processes = chaos_run(chaos, logs / "chaos.log", stages, durations, settings)
    chaos_seconds = time.perf_counter() - t0
    result = summary(compare_runs(reference, chaos))
    print(f"chaos: {len(kills)} kills, {result['mismatches']} mismatches in {result['compared']}", flush=True)

    control_result = None
    if settings.control:
        t0 = time.perf_counter()
        reference_run(control, logs / "control.log", stages, settings.nice)
        control_result = {**summary(compare_runs(reference, control)), "seconds": round(time.perf_counter() - t0)}
        print(f"control: {control_result['mismatches']} mismatches", flush=True)

    per_stage = {s: sum(k.stage == s for k in kills) for s in stages}
    add(
        settings.name,
        {
            "dataset": "ml-100k",
            "model": "tslrec run: sasrec; smollm2 (4 layers) stages 1 and 2; grid sasrec,gru4rec x base,gate:tuned",
            "variant": f"kill-anywhere: {settings.kills} SIGKILLs, compared with an uninterrupted run",
            "seed": settings.seed,
            "device": f"cpu, {cpu_capability()}, {PRECISION}, 1 torch thread per process (the grid: 2 processes)",
            "kills": len(kills),
            "kills_per_stage": per_stage,
            **result,
            "metrics": final_metrics(chaos),
            "bit_identical": result["mismatches"] == 0,
            "tolerances": {},  # every stage was compared bit for bit; a stage that cannot be would say why here
            "control": control_result,
            "timings": {
                "reference_stage_seconds": durations,
                "reference_seconds": round(reference_seconds),
                "chaos_seconds": round(chaos_seconds),
                "chaos_processes": processes,
                "precision": PRECISION,
                "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "load_average_1min_at_end": round(os.getloadavg()[0], 2),
            },
            "kill_log": [asdict(k) for k in kills],
            "excluded": {"keys": EXCLUDED_KEYS, "files": EXCLUDED_FILES},
            "config": {"file": CONFIG, "set": TINY, "env": ONE_THREAD, "nice": settings.nice},
        },
    )
    print(
        f"wrote bench/results/{settings.name}.json: {len(kills)} kills {per_stage}, {result['mismatches']} mismatches"
    )


if __name__ == "__main__":
    main()
