"""Imports point one way (docs/architecture.md): each package imports only the packages below it, lazily or not."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> the tslrec packages it may import (the table in docs/architecture.md)
ALLOWED: dict[str, set[str]] = {
    "core": set(),
    "data": {"core"},
    "formats": {"core"},
    "evaluation": {"data", "core"},
    "llm": {"core"},
    "backbones": {"evaluation", "data", "core"},
    "stage1_reconstruct": {"llm", "data", "core"},
    "stage2_augment": {"stage1_reconstruct", "llm", "formats", "evaluation", "data", "core"},
    "lite_llm4rec": {"llm", "evaluation", "formats", "data", "core"},
}


def tslrec_imports(path: Path) -> set[str]:
    """The tslrec packages a module imports anywhere in its body (`tslrec.x...` -> x)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("tslrec.") and n.count(".") >= 1}
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    wrong = {
        f"{path.relative_to(ROOT)} imports tslrec.{dep}"
        for path in (ROOT / package).rglob("*.py")
        for dep in tslrec_imports(path) - ALLOWED[package] - {package}
    }
    assert not wrong, sorted(wrong)


def test_the_check_sees_a_lazy_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from tslrec.backbones.training import train\n    import tslrec.pipelines.cli\n")
    assert tslrec_imports(module) == {"backbones", "pipelines"}


def test_every_package_folder_is_installed():
    """pyproject.toml lists the packages by hand, and `tslrec.data.readers` was missing: a wheel had no dataset
    format at all (an editable install hid it). Every folder with an __init__.py under a mapped root is listed."""
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs tomllib (Python 3.11 or later)")
    setup = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setup["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT / folder).parts
            found.add(".".join((package, *parts)))
    assert found == set(setup["packages"])
