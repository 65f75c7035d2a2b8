"""Stage 1 under `accelerate launch` with 2 CPU processes, against one process on the same data and settings.

The 2-process run is `tslrec stage1` started by `accelerate launch` in a subprocess, with this file as its script
(see the bottom: it records every write each process makes under --out, then runs the CLI). The one-process run is
the same command in this process. Both write StepTraces ($TSLREC_STAGE1_TRACE): per process and optimizer step, the
users it trained on and a hash of its trainable weights after the step.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from stage1_helpers import clustered_items, tiny_llama_dir, user_sequences  # noqa: F401
from test_stage1_job import stage1_args, write_train_dir

from tslrec.core.artifacts import load_tensors, read_json
from tslrec.pipelines.cli import main
from tslrec.stage1_reconstruct.training import TRACE_ENV, StepTrace, read_step_traces

PROCESSES = 2
BATCH = 2  # users per micro-batch in each process; the one-process run takes PROCESSES * BATCH (see `runs`)
GRAD_ACCUM = 2  # micro-batches per optimizer step, so the no_sync path of gradient accumulation runs too
# 32 users: 8 validation, 8 test, 16 training = 2 optimizer steps of PROCESSES * BATCH * GRAD_ACCUM users per epoch,
# so no process gets a short or padded last batch. LoRA dropout is off: its masks are drawn per process, for a
# [BATCH, ...] input, and would differ from the one-process run's masks for its [PROCESSES * BATCH, ...] input.
SETTINGS = (
    "--epochs 2 --lr 5e-3 --head-lr 1e-2 --precision float32 --untuned-baseline none --lora-dropout 0 --max-items 10 "
    f"--val-fraction 0.25 --test-fraction 0.25 --grad-accum {GRAD_ACCUM}"
).split()
LAUNCH_TIMEOUT_S = 240  # the launch takes ~15 s on one thread per process; a hang must not stall the suite
WRITE_LOG_ENV = "TSLREC_TEST_WRITE_LOG"  # a folder: each launched process writes process<RANK>.json there at exit
WRITE_EVENTS = {  # audit events that change the file system -> how many of their first arguments are paths
    "open": 1,
    "os.rename": 2,  # os.rename and os.replace
    "os.link": 2,
    "os.symlink": 2,
    "os.mkdir": 1,
    "os.remove": 1,
    "os.rmdir": 1,
    "os.truncate": 1,
    "os.chmod": 1,
    "os.utime": 1,
    "shutil.rmtree": 1,
}
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


@dataclass
class Runs:
    """The two runs of the same stage 1: output folders, StepTraces and the 2-process run's writes."""

    one: Path  # output folder of the one-process run
    two: Path  # output folder of the 2-process run
    one_steps: list[StepTrace]
    two_steps: dict[int, list[StepTrace]]  # by process index
    writes: dict[int, list[list[str]]]  # by process index: [audit event, path] of each write under `two`


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_llama_dir: Path) -> Runs:  # noqa: F811
    """Stage 1 twice: one process with micro-batches of PROCESSES * BATCH users, and PROCESSES processes with BATCH
    each. accelerate gives every process its own BATCH users (not a split of one batch), and DDP averages the
    processes' gradients, each a mean over its users, so both runs take the same optimizer steps over the same users."""
    root = tmp_path_factory.mktemp("stage1-accelerate").resolve()
    table, truth = clustered_items(n_items=50, dim=8, k=4, seed=2)
    folder, data_file, _ = write_train_dir(root, table, user_sequences(truth, n_users=32, k=4, seed=2, length=(5, 12)))

    def args(out: Path, batch: int) -> list[str]:
        return stage1_args(folder, data_file, out, tiny_llama_dir, *SETTINGS, "--batch-size", str(batch))

    with pytest.MonkeyPatch.context() as env:
        env.setenv(TRACE_ENV, str(root / "trace-one"))
        assert main(["stage1", *args(root / "one", PROCESSES * BATCH)]) == 0
    launch(args(root / "two", BATCH), root)
    writes = {int(p.stem.removeprefix("process")): json.loads(p.read_text()) for p in (root / "writes").iterdir()}
    return Runs(
        root / "one",
        root / "two",
        read_step_traces(root / "trace-one")[0],
        read_step_traces(root / "trace-two"),
        writes,
    )


def launch(stage1: list[str], root: Path) -> None:
    """Run `tslrec stage1 <stage1>` (through this file) on PROCESSES CPU processes with `accelerate launch`.

    `--cpu --num_processes 2` would start ONE process (accelerate's simple launcher forks one unless given an MPI
    hostfile); `--multi_gpu` starts PROCESSES through torchrun, and `--device cpu` (in `stage1`) makes each one
    join a gloo group on the CPU. HF_HOME points at an empty folder so no accelerate config file of this machine
    applies."""
    (root / "writes").mkdir()
    command = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(PROCESSES)),
        *("--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"),
        *("--num_cpu_threads_per_process", "1", "--main_process_port", str(free_port())),
        *(__file__, "stage1", *stage1),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HOME": str(root / "hf-home"),
        TRACE_ENV: str(root / "trace-two"),
        WRITE_LOG_ENV: str(root / "writes"),
    }
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the processes it started (their own session)
        output, _ = proc.communicate()
        pytest.fail(f"accelerate launch hung for {LAUNCH_TIMEOUT_S} s:\n{output.decode()[-3000:]}")
    assert proc.returncode == 0, output.decode()[-3000:]


def free_port() -> int:
    """A TCP port no one listens on now (for the process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_each_process_trains_on_its_own_shard_of_the_users(runs: Runs) -> None:
    assert sorted(runs.two_steps) == list(range(PROCESSES))  # the launch did start PROCESSES processes
    first, second = runs.two_steps.values()
    assert len(first) == len(second) == len(runs.one_steps) == 4  # 2 epochs of 2 steps
    by_epoch: dict[int, list[int]] = {}
    for one, a, b in zip(runs.one_steps, first, second):
        assert a.epoch == b.epoch == one.epoch
        assert len(a.users) == len(b.users) == BATCH * GRAD_ACCUM
        assert not set(a.users) & set(b.users), f"step {one.step}: both processes trained on the same users"
        assert sorted(a.users + b.users) == sorted(one.users)  # together: the one-process run's step
        by_epoch.setdefault(one.epoch, []).extend(a.users + b.users)
    train_users = load_tensors(runs.two / "groups.safetensors")["train_users"].tolist()
    assert sorted(by_epoch) == [0, 1]
    for users in by_epoch.values():  # each epoch: every training user exactly once
        assert sorted(users) == sorted(train_users)


def test_processes_hold_identical_weights_after_every_step(runs: Runs) -> None:
    first, second = runs.two_steps.values()
    assert [t.weights_sha256 for t in first] == [t.weights_sha256 for t in second]
    assert len({t.weights_sha256 for t in first}) == len(first)  # every step changed them: the hash sees training


def test_validation_mse_matches_one_process_run(runs: Runs) -> None:
    one, two = read_json(runs.one / "metrics.json"), read_json(runs.two / "metrics.json")
    assert (one["timing"]["processes"], two["timing"]["processes"]) == (1, PROCESSES)
    assert one["steps"] == two["steps"] == 4
    # The runs take the same steps in exact arithmetic; in float32 only the order of sums differs (a mean over 4
    # users against the gloo average of two means over 2; other padding lengths per micro-batch), measured at
    # <= 1e-8 on these MSEs (~0.1) and losses (~0.6). 1e-6 is 100x that, and far below what any real difference
    # moved the validation MSE in this setting: other LoRA-dropout masks (dropout 0.05) 3e-5, one step fewer 7e-4,
    # unsynchronised gradients 8e-3, per-process batches of 2 taken as the global batch (steps of 4 users, not 8)
    # 1.6e-2.
    tolerance = 1e-6
    assert two["metrics"]["mse_val"] == pytest.approx(one["metrics"]["mse_val"], abs=tolerance)
    assert two["metrics"]["mse"] == pytest.approx(one["metrics"]["mse"], abs=tolerance)
    one_log, two_log = read_json(runs.one / "log.json"), read_json(runs.two / "log.json")
    assert [sorted(e) for e in one_log] == [sorted(e) for e in two_log]  # the same steps and validations
    for a, b in zip(one_log, two_log):  # the loss of the whole step, not process 0's shard of it
        assert b.get("loss", 0.0) == pytest.approx(a.get("loss", 0.0), abs=tolerance)
        assert b.get("val_mse", 0.0) == pytest.approx(a.get("val_mse", 0.0), abs=tolerance)


def test_only_the_main_process_writes_files(runs: Runs) -> None:
    assert files_in(runs.two) == files_in(runs.one)  # what a one-process run writes, nothing more
    assert sorted(runs.writes) == list(range(PROCESSES))
    for process in range(1, PROCESSES):
        assert runs.writes[process] == [], f"process {process} wrote under --out: {runs.writes[process][:4]}"
    # the audit did see the main process write every entry (files go through a temporary name, then a rename; the
    # adapter folder's safetensors file is written by Rust, unaudited, inside a folder that is renamed), so the
    # empty lists above are not an audit that saw nothing
    renamed = {Path(path).relative_to(runs.two).as_posix() for event, path in runs.writes[0] if event == "os.rename"}
    assert {p.name for p in runs.two.iterdir()} <= renamed


def files_in(folder: Path) -> list[str]:
    """Every file and folder under `folder`, as sorted relative paths."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def written_paths(event: str, args: tuple) -> list[str]:
    """The absolute paths an audit event writes to; [] for a read or an event that changes no file."""
    if event not in WRITE_EVENTS or (event == "open" and not args[2] & WRITE_FLAGS):
        return []
    paths = [a for a in args[: WRITE_EVENTS[event]] if isinstance(a, str | bytes | os.PathLike)]
    return [os.path.abspath(os.fsdecode(p)) for p in paths]


def record_writes_under(root: Path, log: Path) -> None:
    """Record each file-system write this process makes under `root` (from Python's audit events, which every
    Python-level open, rename, mkdir and removal raises); write them to `log` as JSON [[event, path], ...] at exit."""
    seen: list[list[str]] = []

    def hook(event: str, args: tuple) -> None:
        for path in written_paths(event, args):
            if Path(path).is_relative_to(root):
                seen.append([event, path])

    sys.addaudithook(hook)
    atexit.register(lambda: log.write_text(json.dumps(seen)))


if __name__ == "__main__":  # the script each launched process runs: `tslrec`, with its writes under --out recorded
    argv = sys.argv[1:]
    out = Path(argv[argv.index("--out") + 1]).resolve()
    record_writes_under(out, Path(os.environ[WRITE_LOG_ENV]) / f"process{os.environ['RANK']}.json")
    sys.exit(main(argv))
