"""Command-line options shared by every job that reads a dataset."""
from __future__ import annotations

import argparse

from .data import DataConfig


def add_data_options(p: argparse.ArgumentParser, max_len: int = 50) -> None:
    p.add_argument("--kcore", type=int, default=0, help="iterative k-core on users and items (0 = off)")
    p.add_argument("--min-rating", type=float, default=None, help="drop interactions rated below this")
    p.add_argument("--max-len", type=int, default=max_len, help="most recent items fed to a model")


def data_config(args: argparse.Namespace) -> DataConfig:
    return DataConfig(kcore=args.kcore, min_rating=args.min_rating, max_len=args.max_len)
