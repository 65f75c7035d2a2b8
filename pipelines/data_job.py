"""`tslrec data describe NAME_OR_PATH`: counts after preprocessing."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field

from tslrec.core.settings import add_arguments, from_namespace, setting
from tslrec.data import DATASET_HELP, DataConfig, describe


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    d = dsub.add_parser("describe", help="users, items, interactions and item text after preprocessing")
    add_arguments(d, DescribeJob())
    d.set_defaults(func=lambda args: describe_dataset(from_namespace(DescribeJob(), args)))


@dataclass
class DescribeJob:
    """`tslrec data describe`: a dataset's counts after preprocessing."""

    dataset: str = setting("", DATASET_HELP, required=True, positional=True)
    json: bool = setting(False, "print one JSON object")
    data: DataConfig = field(default_factory=DataConfig)


def describe_dataset(job: DescribeJob) -> None:
    """Print the dataset's counts (users, items, interactions, item text, hash)."""
    info = describe(job.dataset, job.data)
    if job.json:
        print(json.dumps(info))
        return
    print(f"dataset       {info['name']}")
    print(f"users         {info['users']:,} ({info['dropped_users_under_3_items']:,} dropped with < 3 items)")
    print(f"items         {info['items']:,}")
    print(f"interactions  {info['interactions']:,}")
    print(f"mean length   {info['mean_sequence_length']}")
    cut, users = info["users_with_test_input_over_max_len"], max(info["users"], 1)
    print(
        f"max_len       {info['max_len']}: {cut:,} users ({cut / users:.1%}) have a longer test input (its oldest "
        "items are cut)"
    )
    print(f"item text     {'yes' if info['has_item_text'] else 'no'}")
    print(f"hash          {info['hash'][:16]}")
