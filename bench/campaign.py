"""A grid that takes longer than one sitting, run as a campaign: started, killed and continued at any time.

    # once per machine: a checkout of a committed version with its own virtualenv, so edits elsewhere never change
    # a running grid, and a run folder outside any checkout
    git clone . ~/tslrec-campaign/src && cd ~/tslrec-campaign/src && make setup
    # start or continue (both cores, one thread per process); returns at once, logs in <runs>/<name>/campaign.log
    .venv/bin/python -m bench.campaign start --config configs/beauty.yaml --runs ~/tslrec-campaign \\
        --set dataset=/abs/path/Beauty.txt
    # at any stop, from the checkout whose commit carries the records: the finished cells as records
    python -m bench.ablation --no-train --name ablation-beauty --dataset /abs/path/Beauty.txt \\
        --out ~/tslrec-campaign/runs/beauty ... (the config's ablation settings; `campaign.py flags` prints them)

`start` runs two one-thread processes: `tslrec run` (stage 0, stage 1, stage 2, then the grid with the config's
workers), and beside it the grid's ID-only cells (base, then ci once stage 1 has written its k-means groups), which
need no LLM table and so train while stage 1 does. Both resume where a kill left them; the grid's settings check
refuses to mix cells of other settings, and each cell's record names its commit, precision and CPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from tslrec.core.errors import InputError
from tslrec.core.settings import as_flags
from tslrec.pipelines.ablate_job import AblateJob, run_ablation
from tslrec.pipelines.run_job import STAGES, load_config, stage_job
from tslrec.stage1_reconstruct.training import GROUPS_FILE

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def campaign_config(args: argparse.Namespace) -> dict:
    """The run config with `out` under --runs (absolute: every process of the campaign agrees on it)."""
    cfg = load_config(args.config, args.set)
    cfg["out"] = str(Path(args.runs).expanduser().resolve() / cfg.get("out", f"runs/{Path(cfg['dataset']).stem}"))
    return cfg


def grid_job(cfg: dict) -> AblateJob:
    return stage_job(next(s for s in STAGES if s.name == "ablation"), cfg)


def id_cells(cfg: dict) -> None:
    """The grid's base cells, then its ci cells once stage 1 has written the k-means groups (one thread)."""
    job = grid_job(cfg)
    only = [f for f in ("base", "ci") if f in job.fusions]
    if "base" in only:
        run_ablation(
            replace(job, fusions=["base"], workers=1, side=replace(job.side, item_embeddings=[], clusters=None))
        )
    if "ci" in only:
        groups = Path(job.side.clusters) / GROUPS_FILE
        while not groups.is_file():
            time.sleep(60)
        run_ablation(replace(job, fusions=["ci"], workers=1, side=replace(job.side, item_embeddings=[])))


def start(args: argparse.Namespace) -> None:
    cfg = campaign_config(args)
    out = Path(cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **ONE_THREAD}
    sets = [x for s in args.set for x in ("--set", s)]
    with open(out / "campaign.log", "a") as log:
        run = [str(Path(sys.executable).parent / "tslrec"), "run", "--config", args.config, *sets]
        run += ["--set", f"out={out}"]
        ids = [sys.executable, __file__, "id-cells", "--config", args.config, "--runs", args.runs, *sets]
        for argv in (run, ids):
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            print(f"started {proc.pid}: {' '.join(argv)}")
    print(f"logs: {out / 'campaign.log'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=("start", "id-cells", "flags"), help="flags: the grid's `tslrec ablate` flags")
    p.add_argument("--config", required=True, help="a `tslrec run` config (configs/beauty.yaml)")
    p.add_argument("--runs", required=True, help="the folder long-lived runs live in, outside any checkout")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as `tslrec run --set`")
    args = p.parse_args()
    try:
        if args.action == "start":
            start(args)
        elif args.action == "id-cells":
            id_cells(campaign_config(args))
        else:
            job = grid_job(campaign_config(args))
            print(" ".join(["--dataset", job.dataset, *as_flags(job, AblateJob(dataset=job.dataset))]))
    except InputError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
