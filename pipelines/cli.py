"""`tslrec` command line: one subcommand per job. Bad input -> one line on stderr, exit code 2.

The flags of `run`, `train`, `stage1`, `stage2`, `ablate`, `lite` and `recommend` are generated from their job configs
(core/settings.py); each parsed command line becomes a typed job config and calls the job's entry point.
Library errors name a setting as `Class.field`; this is the one place that turns it into the flag.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from tslrec import __version__
from tslrec.core.errors import InputError
from tslrec.core.settings import add_arguments, from_namespace, in_flags

if TYPE_CHECKING:
    from .options import Command


def commands() -> list[Command]:
    """Every job subcommand. Imported here, not at the top, so that `tslrec --version` loads no model library."""
    from . import ablate_job, lite_job, recommend_job, run_job, stage1_job, stage2_job, train_job

    return [
        run_job.COMMAND,
        train_job.COMMAND,
        stage1_job.COMMAND,
        stage2_job.COMMAND,
        ablate_job.COMMAND,
        lite_job.COMMAND,
        recommend_job.COMMAND,
    ]


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (what is wrong and where to look) and exit code 2."""

    def error(self, message: str):
        print(f"error: {self.prog}: {message}; see '{self.prog} --help'", file=sys.stderr)
        raise SystemExit(InputError.exit_code)


def build_parser() -> argparse.ArgumentParser:
    from . import data_job

    parser = OneLineParser(prog="tslrec", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"tslrec {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    data_job.add_parser(sub)
    for command in commands():
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        add_arguments(p, command.defaults)
        p.set_defaults(job_command=command)
    return parser


def main(argv: list[str] | None = None) -> int:
    if list(sys.argv[1:] if argv is None else argv) == ["--version"]:  # answered before any job module loads
        print(f"tslrec {__version__}")
        return 0
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2), already printed
        return int(e.code or 0)
    command: Command | None = getattr(args, "job_command", None)
    try:
        if command is None:
            args.func(args)
        else:
            job = from_namespace(command.defaults, args)
            command.report(command.run(job))
    except InputError as e:
        shown = [command.defaults] if command else [c.defaults for c in commands()]
        print(f"error: {in_flags(str(e), *shown)}", file=sys.stderr)
        return InputError.exit_code
    except KeyboardInterrupt:
        print("interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
