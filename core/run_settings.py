"""The settings a run is tied to: recorded with it, compared with a later run's, a changed one refused.

Every place that continues or reuses earlier work (a trainer's checkpoint, a finished `tslrec train` or stage 1
folder, a Lite-LLM4Rec checkpoint, the ablation grid, a `tslrec run` stage) compares the settings it recorded
with today's through `RunSettings.changes`, under one rule:

    a setting the record lacks (it was added to the code since) is read at the value runs behaved as before it
    existed: its `before` metadata, else its default (core.settings); a setting recorded under an older name is
    read under its new one (`replaces`, core.settings.upgrade_recorded). Every other difference is a change,
    a setting only the record has included.

A budget setting named in `growable` (e.g. TrainConfig.epochs) may grow: a longer run continues the same
trajectory. `refuse` raises one one-line InputError naming the first change and the way out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .settings import as_recorded_before, upgrade_recorded


class _Missing:
    """A setting absent on one side of a comparison."""

    def __repr__(self) -> str:
        return "<unset>"


MISSING = _Missing()


def plain(obj: Any) -> Any:
    """`obj` as JSON types only (dicts, lists, strings, numbers, None): safe for torch.load(weights_only=True)."""
    return json.loads(json.dumps(obj, default=str))


def digest(obj: Any) -> str:
    """Hex sha256 of a JSON-able value, keys sorted: equal values give equal digests."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def flatten(settings: Mapping, prefix: str = "") -> dict[str, Any]:
    """{"TrainConfig.lr": 0.001, ...}: nested dicts as dotted names (an empty dict is a value)."""
    out: dict[str, Any] = {}
    for k, v in settings.items():
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


Change = tuple[str, Any, Any]  # (dotted name, recorded value, this run's value)


@dataclass(frozen=True)
class RunSettings:
    """This run's settings (nested, JSON types) and how an older record of them is read.

    values: {group: {setting: value}} or plain values (a dataset hash, a file's digest).
    configs: {group: the default dataclass of that group}: the `before` and `replaces` metadata of its fields
        say how a record that predates a field reads (see the module docstring).
    before: further values that settings added later read as, nested like `values` (for groups that are no
        dataclass, e.g. the ablation grid's flag-keyed record).
    growable: dotted names of budget settings that may grow (see `changes`).
    read: applied to a record after its upgrade, e.g. to leave out the settings its model does not read.
    """

    values: dict[str, Any]
    configs: dict[str, Any] = field(default_factory=dict)
    before: dict[str, Any] = field(default_factory=dict)
    growable: tuple[str, ...] = ()
    read: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    @classmethod
    def of(cls, settings: Mapping[str, Any], growable: tuple[str, ...] = ()) -> RunSettings:
        """The settings `settings` names: each dataclass config is a group of settings (a record that predates one
        of its fields reads by that field's metadata), anything else a plain JSON-able value."""
        groups = {k: v for k, v in settings.items() if dataclasses.is_dataclass(v)}
        values = {k: dataclasses.asdict(v) if k in groups else v for k, v in settings.items()}
        return cls(plain(values), {k: type(v)() for k, v in groups.items()}, growable=growable)

    def recorded(self, saved: Mapping[str, Any]) -> dict[str, Any]:
        """A record of these settings, perhaps written by an older version, with today's names (`replaces`)."""
        out = dict(saved)
        for name, config in self.configs.items():
            if isinstance(out.get(name), Mapping):
                out[name] = upgrade_recorded(config, dict(out[name]))
        return plain(self.read(out) if self.read is not None else out)

    def changes(self, saved: Mapping[str, Any], done: Mapping[str, int] | None = None) -> list[Change]:
        """Every setting that differs between the record `saved` and this run, in the order of this run's settings
        (then those only the record has). A growable setting is no change when it grew (or became None, no cap) to
        at least `done[name]`, the count the recorded run reached."""
        old, new = flatten(self.recorded(saved)), flatten(self.values)
        before = flatten(plain({**{k: as_recorded_before(c) for k, c in self.configs.items()}, **self.before}))
        out = []
        for k in [*new, *(k for k in old if k not in new)]:
            a, b = old.get(k, MISSING), new.get(k, MISSING)
            if a == b or (k not in old and k in before and before[k] == b):
                continue
            if k in self.growable and done is not None and (b is None or (isinstance(b, int) and b >= done[k])):
                continue
            out.append((k, a, b))
        return out

    def refuse(
        self,
        source: str | Path,
        saved: Mapping[str, Any] | None,
        what: str = "checkpoint",
        done: Mapping[str, int] | None = None,
        fix: str = "to start over and discard it pass --force (force=True from Python), or write to another --out",
    ) -> None:
        """One-line InputError naming the first setting `saved` records otherwise (and how many more), or the
        absence of a record; nothing if the settings are the same."""
        if not isinstance(saved, Mapping):
            raise InputError(
                f"{source}: this {what} records no settings (written by an older tslrec), so continuing it could "
                f"mix two configurations; {fix}"
            )
        changes = self.changes(saved, done)
        if not changes:
            return
        key, old, new = changes[0]
        more = f" (and {len(changes) - 1} other setting{'s' if len(changes) > 2 else ''})" if len(changes) > 1 else ""
        raise InputError(f"{source}: this {what} was written with {key}={old!r}, now {new!r}{more}; {fix}")
