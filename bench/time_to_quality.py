"""Benchmark: time to a validation NDCG@10 target, RecBole 1.2.1's SASRec against ours, on ML-1M (5-core).

    python -m bench.time_to_quality                                        # all three systems, target 0.134
    python -m bench.time_to_quality --systems tslrec,recbole-anomaly-off --threads 2 --max-seconds 3600
    python -m bench.time_to_quality --ours-args "--batch-size 256" --name time-to-quality-ml-1m-b256
Writes bench/results/<name>.json (default time-to-quality-ml-1m.json), one record per system.

Every system trains the same SASRec (hidden 64, 2 layers, 2 heads, dropout 0.2, CE loss over all items, max
length 50) on the same data (our 5-core ML-1M, written as RecBole atomic files with each user's position as
its timestamp, so RecBole's leave-one-out split is ours), one after the other, on the same torch threads:
  tslrec               `tslrec train ... --epochs 200 --patience 10` [+ --ours-args]; trains to convergence,
                       seconds_to_target read from its metrics.json history
  recbole-anomaly-off  RecBole with torch.autograd.set_detect_anomaly(False) after the import
  recbole-as-shipped   RecBole as imported: recbole/model/sequential_recommender/sine.py switches autograd
                       anomaly detection on at import (the record says whether it was on)
A RecBole run stops at the first epoch whose validation NDCG@10 reaches --target and evaluates test once,
there (`stopped_at_target: true`). seconds_to_target is the training + validation wall time from the first
epoch to the end of that epoch (data loading excluded); a system that does not reach the target within
--max-seconds gets `seconds_to_target: null`. RecBole runs in its own venv (bench/.recbole-venv, created on
first use by bench/recbole_env.py), through bench/recbole_driver.py.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from bench.recbole_env import DEFAULT_VENV, ensure_recbole_venv, installed_versions
from bench.records import add, load
from tslrec.data import DataConfig, SequenceDataset, load_dataset

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SYSTEMS = ("tslrec", "recbole-anomaly-off", "recbole-as-shipped")
RECBOLE_VARIANTS = SYSTEMS[1:]
DATASET, MAX_LEN, KCORE, SEED = "ml-1m", 50, 5, 42
OURS_ARGS = (
    f"--dataset {DATASET} --kcore {KCORE} --max-len {MAX_LEN} --backbone sasrec --hidden 64 --layers 2 --heads 2 "
    f"--dropout 0.2 --loss ce --epochs 200 --patience 10 --seed {SEED} --device cpu --no-progress"
)
RECBOLE_CONFIG: dict[str, Any] = {  # over RecBole's defaults; the record keeps the full resolved config
    "USER_ID_FIELD": "user_id",
    "ITEM_ID_FIELD": "item_id",
    "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "MAX_ITEM_LIST_LENGTH": MAX_LEN,
    "filter_inter_by_user_or_item": False,
    "user_inter_num_interval": "[0,inf)",
    "item_inter_num_interval": "[0,inf)",
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "group_by": "user", "mode": "full"},
    "hidden_size": 64,
    "inner_size": 256,
    "n_layers": 2,
    "n_heads": 2,
    "hidden_dropout_prob": 0.2,
    "attn_dropout_prob": 0.2,
    "loss_type": "CE",
    "train_neg_sample_args": None,
    "learning_rate": 0.001,
    "metrics": ["Hit", "NDCG"],
    "topk": [10],
    "valid_metric": "NDCG@10",
    "metric_decimal_place": 6,  # RecBole rounds metrics to 4 places by default; the target is compared unrounded
    "eval_step": 1,
    "show_progress": False,
    "reproducibility": True,
    "seed": SEED,
    "use_gpu": False,
}
SETUP_ALLOWANCE_S = 600  # beyond --max-seconds: data loading and the epoch in progress, before a run is killed


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated, run in this order")
    p.add_argument("--target", type=float, default=0.134, help="validation NDCG@10 to reach")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads for every system")
    p.add_argument("--max-seconds", type=float, default=None, help="per-system cap on training + validation time")
    p.add_argument("--work", type=Path, default=BENCH / ".work" / "time-to-quality", help="work folder")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="RecBole's virtual environment")
    p.add_argument("--ours-args", default="", help='extra flags for `tslrec train`, e.g. "--batch-size 256"')
    p.add_argument("--name", default="time-to-quality-ml-1m", help="results file name under bench/results")
    p.add_argument(
        "--record-stopped",
        action="store_true",
        help="train nothing: record each RecBole system from the epochs its stopped run left in --work",
    )
    p.add_argument("--max-users", type=int, default=None, help=argparse.SUPPRESS)  # smoke tests: the first N users
    args = p.parse_args()
    unknown = [s for s in args.systems.split(",") if s not in SYSTEMS]
    if unknown:
        p.error(f"--systems: unknown {', '.join(unknown)}; use {', '.join(SYSTEMS)}")
    return args


# ---------------------------------------------------------------- data
def write_atomic(ds: SequenceDataset, folder: Path, max_users: int | None) -> Path:
    """`folder/ml-1m/ml-1m.inter`: one row per interaction, user = our user index, item = our item id,
    timestamp = the position in the user's sequence (so time order is our order). Returns the .inter path."""
    path = folder / DATASET / f"{DATASET}.inter"
    path.parent.mkdir(parents=True, exist_ok=True)
    sequences = ds.sequences[:max_users] if max_users else ds.sequences
    lines = ["user_id:token\titem_id:token\ttimestamp:float"]
    for u, seq in enumerate(sequences, start=1):
        lines.extend(f"{u}\t{item}\t{t}" for t, item in enumerate(seq.tolist()))
    path.write_text("\n".join(lines) + "\n")
    return path


# ---------------------------------------------------------------- timing helpers
def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown cpu"


def thread_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def first_reach(history: list[dict], target: float, elapsed_key: str) -> tuple[float | None, int | None]:
    """(elapsed seconds, epoch) at the end of the first epoch whose valid NDCG@10 >= target, else (None, None)."""
    for h in history:
        if h["valid_NDCG@10"] >= target:
            return h[elapsed_key], h["epoch"]
    return None, None


def with_elapsed(history: list[dict]) -> tuple[list[dict], str]:
    """History entries with `elapsed_seconds`: as written when present, else the running sum of train_seconds."""
    if history and all("elapsed_seconds" in h for h in history):
        return history, "elapsed_seconds from the history: training + validation wall time"
    total, out = 0.0, []
    for h in history:
        total += h["train_seconds"]
        out.append({**h, "elapsed_seconds": total})
    return out, "running sum of train_seconds: validation time NOT included (no elapsed_seconds in the history)"


def timings(history: list[dict], target: float, max_seconds: float | None, wall: float) -> dict[str, Any]:
    seconds, epoch = first_reach(history, target, "elapsed_seconds")
    capped = seconds is not None and max_seconds is not None and seconds > max_seconds
    train = [h["train_seconds"] for h in history]
    return {
        "seconds_to_target": None if capped or seconds is None else round(seconds, 1),
        "seconds_per_epoch": round(sum(train) / len(train), 2) if train else None,
        "epochs_to_target": None if capped else epoch,
        "wall_seconds": round(wall, 1),
    }


def reach_note(rec: dict[str, Any], history: list[dict], args: argparse.Namespace, why: str) -> None:
    """Say in `rec` why seconds_to_target is null, if it is."""
    if rec["timings"]["seconds_to_target"] is not None:
        return
    best = max((h["valid_NDCG@10"] for h in history), default=None)
    cap = f" within --max-seconds {args.max_seconds}" if args.max_seconds else ""
    rec["target_not_reached"] = f"valid NDCG@10 did not reach {args.target}{cap} (best {best}; stopped: {why})"


def base_record(variant: str, args: argparse.Namespace, threads: int) -> dict[str, Any]:
    return {
        "dataset": DATASET if not args.max_users else f"{DATASET}-first-{args.max_users}-users",
        "model": "sasrec",
        "variant": variant,
        "seed": SEED,
        "target": {"metric": "valid NDCG@10", "value": args.target},
        "device": f"cpu: {cpu_name()}, {threads} threads",
    }


class SystemFailed(RuntimeError):
    """A system's subprocess exited with an error; the benchmark goes on with the next system."""


def run_logged(cmd: list[str], env: dict[str, str], cwd: Path, timeout: float | None) -> tuple[float, bool]:
    """Run `cmd` (its output goes to ours); (wall seconds, whether it was killed at `timeout`)."""
    print("+ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=cwd, timeout=timeout)
    except subprocess.TimeoutExpired:
        return time.perf_counter() - start, True
    if proc.returncode != 0:
        raise SystemFailed(f"{Path(cmd[0]).name} {Path(cmd[1]).name} exited with {proc.returncode}")
    return time.perf_counter() - start, False


def hard_timeout(max_seconds: float | None) -> float | None:
    return None if max_seconds is None else max_seconds + SETUP_ALLOWANCE_S


# ---------------------------------------------------------------- ours
def ours_command(args: argparse.Namespace, out: Path, inter: Path) -> list[str]:
    base = shlex.split(OURS_ARGS)
    if args.max_users:  # the written subset instead of the built-in dataset (already 5-core, so no k-core again)
        base = [*base, "--dataset", str(inter), "--kcore", "0"]
    tslrec = Path(sys.executable).with_name("tslrec")
    return [str(tslrec), "train", *base, *shlex.split(args.ours_args), "--out", str(out), "--force"]


def ours_history(out: Path) -> tuple[dict | None, list[dict]]:
    """(metrics.json record or None, history): from metrics.json when the run finished, else its checkpoint."""
    metrics = out / "metrics.json"
    if metrics.is_file():
        record = json.loads(metrics.read_text())
        return record, record["history"]
    ckpt = out / "checkpoint.pt"
    if ckpt.is_file():
        return None, torch.load(ckpt, map_location="cpu", weights_only=True)["state"]["history"]
    return None, []


def run_ours(args: argparse.Namespace, work: Path, inter: Path) -> dict[str, Any]:
    out = work / "tslrec-run"
    (out / "metrics.json").unlink(missing_ok=True)
    cmd = ours_command(args, out, inter)
    wall, killed = run_logged(cmd, thread_env(args.threads), ROOT, hard_timeout(args.max_seconds))
    record, history = ours_history(out)
    history, source = with_elapsed(history)
    rec = base_record("tslrec", args, args.threads)
    rec.update(
        metrics={k: v for k, v in (record or {}).get("metrics", {}).items() if k in ("HR@10", "NDCG@10")},
        valid_metrics={k: v for k, v in (record or {}).get("valid_metrics", {}).items() if k in ("HR@10", "NDCG@10")},
        stopped_at_target=False,
        timings={**timings(history, args.target, args.max_seconds, wall), "elapsed_source": source},
        config={"command": " ".join(shlex.quote(c) for c in cmd[1:]), **(record or {}).get("config", {})},
        versions=(record or {}).get("versions", {}),
        best_epoch=(record or {}).get("best_epoch"),
        epochs=len(history),
        history=[_short(h) for h in history],
    )
    if killed or record is None:
        rec["note"] = f"killed after {wall:.0f} s (--max-seconds {args.max_seconds}); no test evaluation"
    why = "killed" if killed else f"tslrec train finished, best epoch {rec['best_epoch']} of {len(history)}"
    reach_note(rec, history, args, why)
    return rec


def _short(h: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in h.items()}


# ---------------------------------------------------------------- RecBole
def run_recbole(args: argparse.Namespace, variant: str, python: Path, work: Path) -> dict[str, Any]:
    folder = work / variant
    folder.mkdir(parents=True, exist_ok=True)
    config = {**RECBOLE_CONFIG, "data_path": str(work / "data"), "checkpoint_dir": str(folder / "saved")}
    spec = {
        "variant": variant,
        "dataset": DATASET,
        "config": config,
        "target": args.target,
        "max_seconds": args.max_seconds,
        "threads": args.threads,
    }
    (folder / "spec.json").write_text(json.dumps(spec, indent=1) + "\n")
    result_path = folder / "result.json"
    result_path.unlink(missing_ok=True)
    cmd = [str(python), str(BENCH / "recbole_driver.py"), str(folder / "spec.json"), str(result_path)]
    wall, killed = run_logged(cmd, thread_env(args.threads), folder, hard_timeout(args.max_seconds))
    result = json.loads(result_path.read_text()) if result_path.is_file() else {"history": []}
    result.setdefault("config", config)
    rec = recbole_record(args, variant, python, result, wall, killed)
    if killed:
        rec["note"] = f"killed after {wall:.0f} s (--max-seconds {args.max_seconds}); no test evaluation"
    return rec


def record_stopped_recbole(args: argparse.Namespace, variant: str, python: Path, work: Path) -> dict[str, Any]:
    """--record-stopped: the record of a RecBole run that was stopped before it finished (its driver writes
    result.json after every epoch), from those epochs; it can only say that the target was not reached by then."""
    path = work / variant / "result.json"
    if not path.is_file():
        raise SystemFailed(f"{path}: no result of an earlier {variant} run to record")
    result = json.loads(path.read_text())
    history = result.get("history", [])
    wall = result.get("setup_seconds", 0.0) + (history[-1]["elapsed_seconds"] if history else 0.0)
    rec = recbole_record(args, variant, python, result, wall, killed=False)
    rec["stop_reason"] = "stopped from outside" if result.get("status") == "running" else rec["stop_reason"]
    rec["note"] = (
        f"recorded with --record-stopped from the {len(history)} epoch(s) its driver finished before it was "
        "stopped; no test evaluation"
    )
    reach_note(rec, history, args, rec["stop_reason"])
    return rec


def recbole_record(
    args: argparse.Namespace, variant: str, python: Path, result: dict, wall: float, killed: bool
) -> dict[str, Any]:
    """A RecBole system's record from its driver's result.json."""
    config = result.get("config", {})
    rec = base_record(variant, args, result.get("threads", args.threads))
    rec.update(
        metrics=result.get("test_metrics", {}),
        valid_metrics=result.get("valid_metrics", {}),
        stopped_at_target=result.get("stopped_at_target", False),
        stop_reason=result.get("stop_reason", "killed" if killed else "unknown"),
        timings={
            **timings(result["history"], args.target, args.max_seconds, wall),
            "setup_seconds": round(result.get("setup_seconds", 0.0), 1),
            "test_seconds": round(result.get("test_seconds", 0.0), 1),
            "elapsed_source": "training + validation wall time per epoch, measured by bench/recbole_driver.py",
        },
        anomaly_detection={
            "after_import": result.get("anomaly_detection_after_import"),
            "in_training": result.get("anomaly_detection_in_training"),
        },
        dataset_info=result.get("dataset_info"),
        config=config,
        versions={**installed_versions(python), **result.get("versions", {})},
        epochs=len(result["history"]),
        history=[_short(h) for h in result["history"]],
    )
    reach_note(rec, result["history"], args, rec["stop_reason"])
    return rec


# ---------------------------------------------------------------- main
def print_ratios(name: str, records: dict[str, dict], device: str) -> None:
    """ours seconds_to_target / RecBole's, per RecBole variant (a system not run now: its stored record)."""
    stored = {r["variant"]: r for r in load(name) if r.get("device") == device}
    ours = records.get("tslrec") or stored.get("tslrec")
    for variant in RECBOLE_VARIANTS:
        other = records.get(variant) or stored.get(variant)
        a = (ours or {}).get("timings", {}).get("seconds_to_target")
        b = (other or {}).get("timings", {}).get("seconds_to_target")
        ratio = f"{a / b:.3f}" if a and b else "n/a (a side missing or did not reach the target)"
        print(f"tslrec / {variant} seconds_to_target: {a} / {b} = {ratio}")


def summary(rec: dict[str, Any]) -> str:
    t = rec["timings"]
    return (
        f"{rec['variant']}: seconds_to_target {t['seconds_to_target']} (epoch {t['epochs_to_target']}), "
        f"{t['seconds_per_epoch']} s/epoch training, test {rec['metrics']}"
    )


def main() -> None:
    args = parse_args()
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(DATASET, DataConfig(kcore=KCORE, max_len=MAX_LEN))
    inter = write_atomic(ds, work / "data", args.max_users)
    print(f"wrote {inter}", flush=True)
    records: dict[str, dict] = {}
    failed: list[str] = []
    for system in args.systems.split(","):
        try:
            rec = run_system(args, system, work, inter)
        except SystemFailed as e:
            print(f"{system}: FAILED ({e}); no record written", flush=True)
            failed.append(system)
            continue
        add(args.name, rec)
        records[system] = rec
        print(summary(rec), flush=True)
    print_ratios(args.name, records, f"cpu: {cpu_name()}, {args.threads} threads")
    print(f"wrote bench/results/{args.name}.json" if records else "no record written")
    if failed:
        raise SystemExit(f"failed: {', '.join(failed)}")


def run_system(args: argparse.Namespace, system: str, work: Path, inter: Path) -> dict[str, Any]:
    if system == "tslrec":
        return run_ours(args, work, inter)
    if args.record_stopped:
        return record_stopped_recbole(args, system, ensure_recbole_venv(args.venv), work)
    return run_recbole(args, system, ensure_recbole_venv(args.venv), work)


if __name__ == "__main__":
    main()
