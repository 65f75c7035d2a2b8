"""RecBole 1.2.1 in a virtual environment of its own, for bench/time_to_quality.py.

    python -m bench.recbole_env                       # create bench/.recbole-venv (if absent) and print versions
    python -m bench.recbole_env --venv /tmp/rb-venv
RecBole 1.2.1 needs numpy < 1.24 (it still uses `np.float`), which our own environment cannot have, so it
lives apart. The venv is created only if absent; packages are installed only until a marker file says the
install finished (so an interrupted install is completed on the next run, a finished one reused as is).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
DEFAULT_VENV = BENCH / ".recbole-venv"
MARKER = "bench-recbole-installed.json"
# RecBole itself goes in without its dependency list, which pins colorlog==4.7.2 / colorama==0.4.4 and asks for
# ray, thop, plotly, psutil, tabulate, ... that `import recbole.{config,data,trainer,utils,model}` never touches.
# DEPENDENCIES are what those imports need, found by importing until nothing was missing, pinned to what pip
# chose next to numpy 1.23.5 (pandas 2.3 works with it; pandas < 2 is not needed).
RECBOLE = "recbole==1.2.1"
DEPENDENCIES = [
    "torch==2.13.0",  # the CPU build on local disk
    "numpy==1.23.5",  # the last numpy with `np.float`, which RecBole 1.2.1 still uses
    "pandas==2.3.3",
    "scipy==1.15.3",
    "scikit-learn==1.7.2",
    "pyyaml==6.0.4",
    "tqdm==4.70.1",
    "colorlog==6.12.0",
    "colorama==0.4.6",
    "tensorboard==2.21.0",  # recbole.utils imports torch.utils.tensorboard
    "texttable==1.7.2",
]
VERSIONS_OF = ["recbole", "torch", "numpy", "pandas", "scipy", "scikit-learn"]


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def pip_commands(python: Path) -> list[list[str]]:
    """The two pip installs: the dependencies, then RecBole without its own (over-pinned) dependency list."""
    pip = [str(python), "-m", "pip", "install", "--quiet"]
    return [pip + DEPENDENCIES, pip + ["--no-deps", RECBOLE]]


def pip_env() -> dict[str, str]:
    """The environment for pip: no PIP_CONSTRAINT override unless the global constraints pin numpy."""
    env = dict(os.environ)
    constraints = Path("/etc/xdg/pip/constraints.txt")
    if constraints.is_file() and "numpy" in constraints.read_text():
        env["PIP_CONSTRAINT"] = ""  # the global constraints would refuse numpy 1.23.5
    return env


def ensure_recbole_venv(venv: Path = DEFAULT_VENV) -> Path:
    """The python of `venv`, creating the venv if absent and installing RecBole into it if not yet done."""
    python = venv_python(venv)
    if not python.is_file():
        print(f"creating {venv}", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if (venv / MARKER).is_file():
        return python
    for cmd in pip_commands(python):
        print("+ " + " ".join(cmd[1:]), flush=True)
        subprocess.run(cmd, check=True, env=pip_env())
    versions = installed_versions(python)
    (venv / MARKER).write_text(json.dumps(versions, indent=1) + "\n")
    return python


def installed_versions(python: Path) -> dict[str, str]:
    """Package versions inside the venv of `python` (and its Python version)."""
    code = (
        "import json, sys\n"
        "from importlib.metadata import version, PackageNotFoundError\n"
        "out = {'python': sys.version.split()[0]}\n"
        f"for name in {VERSIONS_OF!r}:\n"
        "    try:\n"
        "        out[name] = version(name)\n"
        "    except PackageNotFoundError:\n"
        "        out[name] = None\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV)
    args = p.parse_args()
    python = ensure_recbole_venv(args.venv)
    print(json.dumps(installed_versions(python), indent=1))


if __name__ == "__main__":
    main()
