"""Dataset formats: each module here registers a `Reader` for the paths it recognises. A new format is one module in
this folder (imported below, so it registers itself) plus its test."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import ClassVar

from tslrec.core.errors import InputError

from ..raw import RawInteractions


class Reader:
    """One file format: `matches` says whether a path is in it (by suffix or by a look inside), `read` reads it."""

    what: ClassVar[str]  # the format in words, for messages: "a RecBole .inter"
    in_folder: ClassVar[str] = ""  # what a folder in this format holds ("" for a format of single files)

    def matches(self, path: Path) -> bool:
        raise NotImplementedError

    def read(self, path: Path) -> RawInteractions:
        raise NotImplementedError


READERS: list[Reader] = []  # asked in order: the first that matches reads the path


def register_reader(cls: type[Reader]) -> type[Reader]:
    READERS.append(cls())
    return cls


def read_path(path: Path) -> RawInteractions:
    """The interactions of a file or folder in any registered format; a one-line InputError if none reads it."""
    reader = next((r for r in READERS if r.matches(path)), None)
    if reader is not None:
        return reader.read(path)
    formats = ", ".join(r.what for r in READERS)
    if path.is_dir():
        held = " or ".join(r.in_folder for r in READERS if r.in_folder)
        raise InputError(f"{path}: no {held} in this folder; point to {formats}")
    raise InputError(f"{path}: unknown file type '{path.suffix}'; use {formats}")


for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
