"""A grid that takes longer than one sitting, run as a campaign: started, killed and continued at any time.

    # once per machine: a checkout of a committed version with its own virtualenv, so edits elsewhere never change
    # a running grid, and a run folder outside any checkout
    git clone . ~/tslrec-campaign/src && cd ~/tslrec-campaign/src && make setup
    # start or continue (both cores, one thread per process); returns at once, logs in <runs>/<name>/campaign.log
    .venv/bin/python -m bench.campaign start --config configs/beauty.yaml --runs ~/tslrec-campaign \\
        --set dataset=/abs/path/Beauty.txt --records ablation-beauty
    # at any stop, from the checkout whose commit carries the records: the finished cells as records
    python -m bench.ablation --no-train --name ablation-beauty --dataset /abs/path/Beauty.txt \\
        --out ~/tslrec-campaign/runs/beauty ... (the config's ablation settings; `campaign.py flags` prints them)

`start` runs two one-thread processes: `tslrec run` up to the grid (stage 0, stage 1, stage 2), then the grid with
the config's workers; and beside it the grid's ID-only cells (base, then ci once stage 1 has finished, its k-means
groups final), which need no LLM table and so train while stage 1 or stage 2 does. Both resume where a kill left
them; the grid's settings check refuses to mix cells of other settings, and each cell's record names its commit,
precision and CPU.

With --records NAME, a cell that bench/results/NAME.json already holds, trained under every setting of today's cell
(the content of its item table and groups included), is not trained again: a run folder lost with a machine is
rebuilt, and only the missing cells train. A cell whose rebuilt table came out otherwise trains again, and
bench/ablation.py records it apart.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from bench.records import load
from tslrec.core.errors import InputError
from tslrec.core.precision import resolved
from tslrec.core.settings import as_flags
from tslrec.data import load_dataset
from tslrec.pipelines.ablate_job import AblateJob, grid_cells, run_ablation
from tslrec.pipelines.ablation_grid import cell_job
from tslrec.pipelines.run_job import MANIFEST, STAGES, active_stages, load_config, stage_job
from tslrec.pipelines.train_job import tied_settings

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def campaign_config(args: argparse.Namespace) -> dict:
    """The run config with `out` under --runs (absolute: every process of the campaign agrees on it)."""
    cfg = load_config(args.config, args.set)
    cfg["out"] = str(Path(args.runs).expanduser().resolve() / cfg.get("out", f"runs/{Path(cfg['dataset']).stem}"))
    return cfg


def grid_job(cfg: dict) -> AblateJob:
    return stage_job(next(s for s in STAGES if s.name == "ablation"), cfg)


def recorded_cells(job: AblateJob, records: str | None) -> list[str]:
    """The cells of `job`'s grid that bench/results/<records>.json holds, trained under every setting today's cell
    would be (item table and groups by content included): cells not to train again."""
    saved = {(r["model"], r["variant"], r["seed"]): r["settings"] for r in load(records or "") if r.get("settings")}
    if not saved:
        return []
    job = resolved(job, job.runtime.start())
    ds = load_dataset(job.dataset, job.data)
    done = []
    for cell in grid_cells(job):
        old = saved.get((cell.backbone, cell.variant, cell.seed))
        if old is not None and not tied_settings(cell_job(job, cell, Path(job.out)), ds).changes(old):
            done.append(cell.name)
    if done:
        print(
            f"{records}: {len(done)} cell(s) recorded with today's settings and tables, not trained again", flush=True
        )
    return done


def grid_without_recorded(job: AblateJob, records: str | None) -> None:
    run_ablation(replace(job, skip=recorded_cells(job, records)))


def pipeline(cfg: dict, records: str | None, sets: list[str], config: str) -> None:
    """`tslrec run` up to the grid, then the grid less its recorded cells."""
    stages = [s.name for s in active_stages(cfg)]
    before = stages[stages.index("ablation") - 1]
    run = [str(Path(sys.executable).parent / "tslrec"), "run", "--config", config, *sets, "--until", before]
    subprocess.run([*run, "--set", f"out={cfg['out']}"], check=True)
    grid_without_recorded(grid_job(cfg), records)


def id_cells(cfg: dict, records: str | None) -> None:
    """The grid's base cells, then its ci cells once stage 1 has finished (its k-means groups final; one thread)."""
    job = grid_job(cfg)
    only = [f for f in ("base", "ci") if f in job.fusions]
    if "base" in only:
        side = replace(job.side, item_embeddings=[], clusters=None)
        grid_without_recorded(replace(job, fusions=["base"], workers=1, side=side), records)
    if "ci" in only:  # stage 1 writes its groups as it starts, and again if it starts over: wait for it to finish
        while not (Path(job.side.clusters) / MANIFEST).is_file():
            time.sleep(60)
        grid_without_recorded(
            replace(job, fusions=["ci"], workers=1, side=replace(job.side, item_embeddings=[])), records
        )


def start(args: argparse.Namespace) -> None:
    cfg = campaign_config(args)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ONE_THREAD}
    sets = [x for s in args.set for x in ("--set", s)]
    common = [
        "--config",
        args.config,
        "--runs",
        args.runs,
        *sets,
        *(["--records", args.records] if args.records else []),
    ]
    with open(out / "campaign.log", "a") as log:
        for action in ("pipeline", "id-cells"):
            argv = [sys.executable, "-m", "bench.campaign", action, *common]
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            print(f"started {proc.pid}: {' '.join(argv)}")
    print(f"logs: {out / 'campaign.log'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "action", choices=("start", "pipeline", "id-cells", "flags"), help="flags: the grid's `tslrec ablate` flags"
    )
    p.add_argument("--config", required=True, help="a `tslrec run` config (configs/beauty.yaml)")
    p.add_argument("--runs", required=True, help="the folder long-lived runs live in, outside any checkout")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as `tslrec run --set`")
    p.add_argument("--records", default=None, help="bench/results/<NAME>.json: its cells are not trained again")
    args = p.parse_args()
    try:
        cfg = campaign_config(args)
        if args.action == "start":
            start(args)
        elif args.action == "pipeline":
            pipeline(cfg, args.records, [x for s in args.set for x in ("--set", s)], args.config)
        elif args.action == "id-cells":
            id_cells(cfg, args.records)
        else:
            job = grid_job(cfg)
            print(" ".join(["--dataset", job.dataset, *as_flags(job, AblateJob(dataset=job.dataset))]))
    except InputError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
