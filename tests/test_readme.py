"""The README fits a newcomer's first five minutes: short, and a results block of one screen."""

from __future__ import annotations

import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_readme_is_short_and_its_results_fit_one_screen():
    assert len(README) <= 9000
    block = re.search(r"<!-- results:start -->\n(.*?)\n<!-- results:end -->", README, flags=re.S)
    assert block is not None and len(block.group(1).splitlines()) <= 15


def test_readme_commands_are_the_makefile_targets_ci_runs():
    root = Path(__file__).resolve().parent.parent
    assert "make test" in (root / ".ci" / "run").read_text()
    assert "make run" in README and "make test" in README
