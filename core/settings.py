"""Settings declared once, as dataclass fields, and turned into command-line flags and config-file keys.

A setting is a dataclass field with a default and a one-line help, declared with `setting(default, "help", **metadata)`
(a `dataclasses.field`). Optional metadata:
    flag      the flag when it is not `--<field-name>` (e.g. "--layers"); "--no-x" on a bool that defaults to
              True gives a flag that switches it off
    aliases   further spellings of the flag (e.g. ("--stage1-dir",))
    choices   the allowed values, for a registry that plugins may add to (e.g. FUSIONS); fixed ones are the
              field's type instead: `batching: Literal["length", "random"]`
    prefix    on a nested dataclass field: put before each of its flags (e.g. "item-" gives --item-llm)
    cli       False: not a flag (set by the program, e.g. the item count)
    required  True: must be given
    positional True: given without its flag (`tslrec data describe ml-1m`); a single value, no aliases
    repeat    on a list: the flag once per value, so that values may hold commas
    metavar   the value's name in --help
    at_least, positive  a lower bound (`at_least=1`: "need at least 1"; `positive=True`: "must be positive"),
              checked by `check_allowed` with the allowed values (a None value is not bounded)
    before    for a setting added later: the value that runs recorded before it existed behaved as (when that
              differs from its default), so a finished run is compared with what it really did
    replaces  (old field name, {old value: new value}): the field an older version recorded instead of this one,
              so that run settings recorded then are read as this field (see `upgrade_recorded`)
    deprecated {old flag: (value when given or true, value when false)}: older spellings still accepted, as a
              flag or a config-file key (the flag without dashes), each with a one-line note on stderr
A config calls `check_allowed(self)` first in its __post_init__, so a value its fields do not allow is a one-line
InputError wherever the config is made; flags and config-file keys are checked against the same values.
A field whose type is a dataclass is a group of settings: its fields become flags of their own, with no
prefix unless one is given. Two settings with one flag are an error when the parser is built.

Library code names a setting by `Class.field` in its errors (e.g. `TrainConfig.lr`); `flag_names` maps
those names to the flags, so the command line can say `--lr` instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import functools
import re
import sys
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import InputError


@dataclass(frozen=True)
class Setting:
    """One flag: where its value goes in the nested config, and how it is parsed."""

    path: tuple[str, ...]  # field names from the top config down, e.g. ("train", "lr")
    owner: str  # the dataclass that declares it, e.g. "TrainConfig"
    field: str  # its field name there
    flag: str  # e.g. "--lr"
    aliases: tuple[str, ...]
    kind: str  # "bool", "no-bool", "list" (one comma list), "repeat" (the flag once per value), "value"
    parse: Any  # "value": str -> value; "list", "repeat": the strings -> the field's list or tuple of its item type
    help: str
    choices: tuple | None
    required: bool
    optional: bool  # None is a value of its own (e.g. max_steps: None = no cap)
    deprecated: tuple[tuple[str, Any, Any], ...] = ()  # (old flag, value when given/true, value when false)
    metavar: str | None = None  # the value's name in --help (default: the flag's, upper case)
    positional: bool = False  # given without its flag: `tslrec data describe ml-1m`

    @property
    def key(self) -> str:
        """The config-file key: the flag without its dashes, with underscores; for a `--no-x` switch, the field's
        own positive name (`prefix_cache: false`, not `no_prefix_cache: true`)."""
        return self.field if self.kind == "no-bool" else self.flag.lstrip("-").replace("-", "_")


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, allows None) of `X | None` / Optional[X]; (tp, False) otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


@functools.cache
def _choices(cls: type) -> dict[str, tuple[Any, bool]]:
    """{field: (allowed values, None allowed too)} of a dataclass: a `Literal[...]` field's values, or the registry
    its metadata names as `choices` (read when used, so that values registered later count)."""
    hints = typing.get_type_hints(cls)
    out: dict[str, tuple[Any, bool]] = {}
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[f.name])
        if typing.get_origin(tp) is typing.Literal:
            out[f.name] = typing.get_args(tp), optional
        elif "choices" in f.metadata:
            out[f.name] = f.metadata["choices"], optional
    return out


def check_allowed(config: Any) -> None:
    """InputError naming the first field of the dataclass `config` whose value its declaration does not allow, first
    in a config's __post_init__: 'Class.field=value: use one of a, b' for a value outside its `Literal` type or
    registry (see `_choices`), 'need at least N' or 'must be positive' below the bound its `at_least` or `positive`
    metadata sets."""
    for name, (allowed, optional) in _choices(type(config)).items():
        value = getattr(config, name)
        ok = value in allowed or (value is None and optional)
        require(ok, config, name, f"use one of {', '.join(map(str, allowed))}")
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if value is None:  # a setting that allows None (no cap) is not bounded then
            continue
        if "at_least" in f.metadata:
            require(value >= f.metadata["at_least"], config, f.name, f"need at least {f.metadata['at_least']}")
        if f.metadata.get("positive"):
            require(value > 0, config, f.name, "must be positive")


def setting(
    default: Any = dataclasses.MISSING, help: str = "", *, factory: Callable[[], Any] | None = None, **metadata: Any
) -> Any:
    """A config field: its default (`factory` for a mutable one), its flag's help, and whatever else `settings_of`
    reads from its metadata: `flag`, `aliases`, `required`, `positional`, `repeat`, `metavar`, `prefix`, `cli`,
    `choices`, `deprecated`, `replaces`, `at_least` and `positive` (bounds `check_allowed` checks), and `before`,
    what runs recorded before the setting existed did."""
    if not help:
        raise TypeError("setting(): give the flag's help text")
    if factory is not None and default is not dataclasses.MISSING:
        raise TypeError("setting(): give a default or a factory, not both")
    metadata = {"help": help, **metadata}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def settings_of(config: Any, path: tuple[str, ...] = (), prefix: str = "") -> list[Setting]:
    """Every flag of a dataclass instance (nested dataclasses included), in declaration order."""
    cls = type(config)
    hints = typing.get_type_hints(cls)
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if meta.get("cli") is False:
            continue
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out += settings_of(value, path + (f.name,), prefix + meta.get("prefix", ""))
            continue
        if "help" not in meta:
            raise TypeError(f"{cls.__name__}.{f.name} has no help text: declare it with setting(default, help)")
        tp, optional = _unwrap_optional(hints[f.name])
        flag = meta.get("flag", "--" + f.name.replace("_", "-"))
        flag = "--" + prefix + flag[2:]
        aliases = tuple("--" + prefix + a[2:] for a in meta.get("aliases", ()))
        parse = tp if tp in (int, float, str) else str
        if tp is bool:
            kind = "no-bool" if flag.startswith(f"--{prefix}no-") and value is True else "bool"
        elif typing.get_origin(tp) in (list, tuple):
            kind = "repeat" if meta.get("repeat") else "list"  # repeat: values that may hold commas (KEY=[a, b])
            parse = _list_of(typing.get_origin(tp), (typing.get_args(tp) or (str,))[0])
        else:
            kind = "value"
        if meta.get("positional") and (kind != "value" or aliases or "deprecated" in meta):
            raise TypeError(f"{cls.__name__}.{f.name}: a positional setting is one value, without other spellings")
        allowed = _choices(cls).get(f.name)
        out.append(
            Setting(
                path + (f.name,),
                cls.__name__,
                f.name,
                flag,
                aliases,
                kind,
                parse,
                meta["help"],
                tuple(allowed[0]) if allowed else None,
                bool(meta.get("required")),
                optional,
                tuple(("--" + prefix + old[2:], *values) for old, values in meta.get("deprecated", {}).items()),
                meta.get("metavar"),
                bool(meta.get("positional")),
            )
        )
    return out


def _yaml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _deprecation_note(old: str, s: Setting, value: Any) -> None:
    print(f"note: {old} is deprecated; write {s.flag} {value}", file=sys.stderr)


class _DeprecatedFlag(argparse.Action):
    """An older flag that sets a setting to one value, with a one-line note."""

    def __init__(self, option_strings, dest, setting: Setting, value: Any, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        self.setting, self.value = setting, value

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        _deprecation_note(option_string, self.setting, self.value)
        setattr(namespace, self.dest, self.value)


def add_arguments(parser: argparse.ArgumentParser, defaults: Any) -> list[Setting]:
    """Add a flag per setting of `defaults` (a dataclass instance: its values are the defaults): the required ones
    first, then the job's own, then those of the configs it nests."""
    settings = settings_of(defaults)
    seen: dict[str, Setting] = {}
    for s in sorted(settings, key=lambda s: (not s.required, len(s.path) > 1)):
        for name in (s.flag, *s.aliases):
            if name in seen:
                raise TypeError(
                    f"{name} is declared twice: {seen[name].owner}.{seen[name].field} and {s.owner}.{s.field}"
                )
            seen[name] = s
        default = _get(defaults, s.path)
        dest = ".".join(s.path)
        for old, value, _ in s.deprecated:
            if old in seen:
                raise TypeError(f"{old} is declared twice: {seen[old].owner}.{seen[old].field} and {s.owner}.{s.field}")
            seen[old] = s
            parser.add_argument(old, dest=dest, action=_DeprecatedFlag, setting=s, value=value)
        names = [s.flag, *s.aliases]
        shown_help = s.help.replace("%", "%%")  # argparse formats help with %: "35%" would break --help
        if s.kind == "bool":
            parser.add_argument(*names, dest=dest, action="store_true", help=shown_help)
        elif s.kind == "no-bool":
            parser.add_argument(*names, dest=dest, action="store_false", help=shown_help)
        elif s.kind == "repeat":
            shown_help += " (repeatable)"
            parser.add_argument(
                *names, dest=dest, action="append", default=argparse.SUPPRESS, help=shown_help, metavar=s.metavar
            )
        else:
            shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            extra = " (required)" if s.required else ("" if shown in (None, "") else f" (default: {shown})")
            if s.positional:  # named by its dest; optional unless required
                how = {"nargs": None if s.required else "?", "metavar": s.metavar}
            else:
                metavar = None if s.choices else s.metavar or s.flag.lstrip("-").upper().replace("-", "_")
                how = {"dest": dest, "required": s.required, "metavar": metavar}
            parser.add_argument(
                *([dest] if s.positional else names),
                **how,
                default=argparse.SUPPRESS,
                help=shown_help + ("" if s.positional else extra.replace("%", "%%")),
                type=s.parse if s.kind == "value" else str,
                choices=s.choices,
            )
    return settings


def from_namespace(defaults: Any, ns: argparse.Namespace) -> Any:
    """The config `defaults` with every flag given on the command line applied; missing required ones -> InputError."""
    given = vars(ns)
    values: dict[tuple[str, ...], Any] = {}
    for s in settings_of(defaults):
        dest = ".".join(s.path)
        if dest in given:
            raw = given[dest]
            if s.kind in ("bool", "no-bool"):
                if raw == _get(defaults, s.path):
                    continue
                values[s.path] = raw
            else:
                values[s.path] = _list_value(s, raw, s.flag) if s.kind in ("list", "repeat") else raw
        elif s.required and not _get(defaults, s.path):
            raise InputError(f"{s.flag} is required")
    return replace_nested(defaults, values)


def from_mapping(defaults: Any, mapping: dict[str, Any], where: str) -> Any:
    """The config `defaults` with a config file's `key: value` pairs applied (keys are flags without dashes).

    An unknown key -> InputError naming it, `where` (e.g. "configs/x.yaml: stages.stage1") and the near matches.
    """
    by_key = {}
    old_keys: dict[str, tuple[Setting, Any, Any]] = {}
    for s in settings_of(defaults):
        by_key[s.key] = s
        for name in s.aliases:
            by_key[name.lstrip("-").replace("-", "_")] = s
        for old, if_true, if_false in s.deprecated:
            old_keys[old.lstrip("-").replace("-", "_")] = (s, if_true, if_false)
        if s.kind == "no-bool":  # the double negative older configs wrote: `no_x: true` is `x: false`
            old_keys[s.flag.lstrip("-").replace("-", "_")] = (s, False, True)
    values: dict[tuple[str, ...], Any] = {}
    for key, value in mapping.items():
        if str(key).replace("-", "_") in old_keys:
            s, if_true, if_false = old_keys[str(key).replace("-", "_")]
            if not isinstance(value, bool):
                raise InputError(f"{where}: key '{key}' must be true or false, got {value!r}")
            new = if_true if value else if_false
            print(f"note: {where}: key '{key}' is deprecated; write '{s.key}: {_yaml(new)}'", file=sys.stderr)
            values[s.path] = if_true if value else if_false
            continue
        s = by_key.get(str(key).replace("-", "_"))
        if s is None:
            near = difflib.get_close_matches(str(key).replace("-", "_"), list(by_key), n=3)
            hint = f"; did you mean {' or '.join(near)}?" if near else f"; known keys: {', '.join(sorted(by_key))}"
            raise InputError(f"{where}: unknown key '{key}'{hint}")
        if value is None and not s.optional:
            continue  # an empty key keeps the default, as a flag left out would
        values[s.path] = _value_from_file(s, key, value, where)
    return replace_nested(defaults, values)


def _value_from_file(s: Setting, key: str, value: Any, where: str) -> Any:
    """A config file's value for setting `s`, checked as the command line would check it."""
    if s.kind in ("bool", "no-bool"):
        if not isinstance(value, bool):
            raise InputError(f"{where}: key '{key}' must be true or false, got {value!r}")
        return value
    if s.kind in ("list", "repeat"):
        return _list_value(s, value, f"{where}: key '{key}'")
    if value is not None and s.parse is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, float) and value.is_integer())):
            raise InputError(f"{where}: key '{key}' must be a whole number, got {value!r}")
        value = int(value)
    elif value is not None and s.parse is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{where}: key '{key}' must be a number, got {value!r}")
        value = float(value)
    elif value is not None and s.parse is str:
        value = str(value)
    if s.choices is not None and value is not None and value not in s.choices:
        raise InputError(f"{where}: key '{key}' is {value!r}; use one of {', '.join(map(str, s.choices))}")
    return value


def flag_names(*configs: Any) -> dict[str, str]:
    """{'TrainConfig.lr': '--lr', ...} for the settings of the given configs (for error messages)."""
    return {f"{s.owner}.{s.field}": s.flag for c in configs for s in settings_of(c)}


def in_flags(message: str, *configs: Any) -> str:
    """`message` with every `Class.field` the configs declare written as its flag (`TrainConfig.lr=0` -> `--lr 0`)."""
    names: dict[str, str] = {}
    for config in configs:
        names.update(flag_names(config))
    for qualified in sorted(names, key=len, reverse=True):
        message = re.sub(rf"\b{re.escape(qualified)}=", names[qualified] + " ", message)
        message = re.sub(rf"\b{re.escape(qualified)}\b", names[qualified], message)
    return message


def replace_nested(config: Any, values: dict[tuple[str, ...], Any]) -> Any:
    """A copy of `config` with each value set at its path; dataclasses are rebuilt, so __post_init__ checks run."""
    here = {path[0]: v for path, v in values.items() if len(path) == 1}
    for name in {path[0] for path in values if len(path) > 1}:
        inner = {path[1:]: v for path, v in values.items() if len(path) > 1 and path[0] == name}
        here[name] = replace_nested(getattr(config, name), inner)
    return dataclasses.replace(config, **here) if here else config


def as_recorded_before(config: Any) -> dict[str, Any]:
    """dataclasses.asdict(config), with each field that declares `before` at that value: the settings a run
    recorded before such a field existed is to be read with (see the module docstring)."""
    out = dataclasses.asdict(config)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = as_recorded_before(value)
        elif "before" in f.metadata:
            out[f.name] = f.metadata["before"]
    return out


def upgrade_recorded(config: Any, recorded: dict[str, Any]) -> dict[str, Any]:
    """A run's recorded settings of the dataclass `config` (as `asdict` wrote them, maybe by an older version) with
    each field that `replaces` an older one filled in from that one's recorded value (nested groups too)."""
    out = dict(recorded)
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and isinstance(out.get(f.name), dict):
            out[f.name] = upgrade_recorded(value, out[f.name])
        elif "replaces" in f.metadata and f.name not in out:
            old, mapping = f.metadata["replaces"]
            if old in out:
                old_value = out.pop(old)
                out[f.name] = mapping.get(old_value, old_value)
    return out


def as_flags(config: Any, defaults: Any) -> list[str]:
    """The command line that gives `config` from `defaults` (only the settings that differ): for logs."""
    argv: list[str] = []
    for s in settings_of(defaults):
        value, default = _get(config, s.path), _get(defaults, s.path)
        if value == default:
            continue
        if s.kind in ("bool", "no-bool"):
            argv.append(s.flag)
        elif s.kind == "repeat":
            argv += [x for v in value for x in (s.flag, str(v))]
        else:
            argv += [s.flag, ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)]
    return argv


def _get(config: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        config = getattr(config, name)
    return config


def _parse_list(text: Any) -> list[str]:
    """A flag's comma list (a repeated flag's values, a config file's list: as they are) as strings."""
    if isinstance(text, (list, tuple)):
        return [str(t) for t in text]
    return [t.strip() for t in str(text).split(",") if t.strip()]


def _list_of(container: type, item: Any) -> Any:
    """The parser of a list setting: its comma-separated strings as `container` (list or tuple) of `item`."""
    item = item if item in (int, float) else str
    return lambda texts: container(item(t) for t in texts)


def _list_value(s: Setting, raw: Any, where: str) -> Any:
    """A list setting's value from a flag's comma list or a config file's list; InputError naming `where`."""
    try:
        return s.parse(_parse_list([raw] if s.kind == "repeat" and isinstance(raw, str) else raw))
    except ValueError:
        raise InputError(f"{where} {raw}: give a comma-separated list of numbers, as its default is") from None


def require(ok: bool, config: Any, name: str, why: str) -> None:
    """InputError 'Class.field=value: why' unless `ok` (for __post_init__ checks; the CLI shows the flag instead)."""
    if not ok:
        value = getattr(config, name)
        shown = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else repr(value)  # as a flag takes it
        raise InputError(f"{type(config).__name__}.{name}={shown}: {why}")


def require_unset_unless(read: bool, config: Any, name: str, why: str) -> None:
    """InputError when field `name` of `config` is away from its default where nothing reads it (`read` False): a
    flag that changed nothing would otherwise be recorded as if it had."""
    f = next(f for f in dataclasses.fields(config) if f.name == name)
    default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
    require(read or getattr(config, name) == default, config, name, why)
