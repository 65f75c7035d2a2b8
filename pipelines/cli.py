"""`tslrec` command line: one subcommand per job. Bad input -> one line on stderr, exit code 2."""
from __future__ import annotations

import argparse
import sys

from tslrec.backbones.errors import InputError

from . import data_job, stage1_job, train_job

# Each job module exposes add_parser(subparsers) and sets `func` on its parser.
JOBS = [data_job, train_job, stage1_job]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tslrec", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for job in JOBS:
        job.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
