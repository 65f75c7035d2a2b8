"""`tslrec` command line: one subcommand per job. Bad input -> one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from tslrec.core.errors import InputError

from . import ablate_job, data_job, lite_job, run_job, stage1_job, stage2_job, train_job

# Each job module exposes add_parser(subparsers) and sets `func` on its parser.
JOBS = [data_job, train_job, stage1_job, stage2_job, ablate_job, lite_job, run_job]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what is wrong and where to look) and exit code 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}; see '{self.prog} --help'", file=sys.stderr)
        raise SystemExit(InputError.exit_code)


def package_version() -> str:
    """The installed tslrec version ('unknown' when run from a tree that was never installed)."""
    try:
        return version("tslrec")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="tslrec", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tslrec {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for job in JOBS:
        job.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    try:
        args.func(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
