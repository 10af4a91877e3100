"""Where each ``serve`` option's value comes from: flag > environment > file > default.

Every option of :mod:`._serve_options` has three more sources than its flag:
an environment variable named ``MESHSUB_`` plus the option's long name
(``--max-cost`` is ``MESHSUB_MAX_COST``), a key of a TOML file given by
``--config FILE`` (or ``MESHSUB_CONFIG``; the key is the long name with dashes
or underscores, at the top level or under ``[serve]``), and its default. Values
from the environment and the file go through the flag's own type check, so a
bad one is refused in one line naming where it came from.

A flag takes ``true`` or ``false``. ``true`` is the flag given. ``false`` on a
switch that turns something on (``--simulator``, ``--allow-remote-local-mode``)
turns it off; on one that turns something off (``--no-simulator``,
``--no-compiled-execution``) it means "not given": the next source, else the
default, decides. It never means the opposite flag, which would turn the
simulator on for ``no-simulator = false`` in a config shared by every replica.

:func:`parse_flags` parses with every option starting as :data:`UNSET`, so
after parsing, what is still unset was not given as a flag.
"""

from __future__ import annotations

import argparse
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ._serve_options import ENV_PREFIX

CONFIG_ENV = "MESHSUB_CONFIG"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class _Unset:
    """The default of every option while parsing: "not given as a flag"."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


class SettingError(Exception):
    """A value from the environment or the config file that the option refuses."""


@dataclass(frozen=True)
class Option:
    """One ``serve`` option: its destination, long name and how to read it."""

    action: argparse.Action
    default: Any

    @property
    def name(self) -> str:
        longs = [o for o in self.action.option_strings if o.startswith("--")]
        if not longs:
            return self.action.dest.replace("_", "-")  # the positional APP
        return longs[0][2:]

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper().replace("-", "_")


def collect_options(parser: argparse.ArgumentParser) -> dict[str, list[Option]]:
    """The options of *parser* by destination.

    ``--simulator`` and ``--no-simulator`` share one destination, so a dest maps
    to a list; the first option that has a value names it.
    """
    options: dict[str, list[Option]] = {}
    for action in parser._actions:  # argparse offers no public walk of its actions
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if action.dest == "config":
            continue
        options.setdefault(action.dest, []).append(Option(action, action.default))
    return options


def parse_flags(
    parser: argparse.ArgumentParser, argv: list[str], options: Mapping[str, list[Option]]
) -> argparse.Namespace:
    """Parse *argv* leaving every option not given as a flag :data:`UNSET`.

    argparse fills a default only where the namespace has no such attribute,
    so a namespace that starts with every destination set to UNSET keeps the
    help's defaults intact and still tells given flags apart.
    """
    namespace = argparse.Namespace(**{dest: UNSET for dest in options})
    return parser.parse_args(argv, namespace=namespace)


def _read_file(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise SettingError(f"cannot read the config file {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingError(f"config file {path} is not valid TOML: {error}") from None
    table = data.get("serve", {})
    if not isinstance(table, dict):
        raise SettingError(f"config file {path}: [serve] must be a table")
    merged = {k: v for k, v in data.items() if k != "serve"}
    merged.update(table)
    return {key.replace("_", "-"): value for key, value in merged.items()}


def _convert(option: Option, raw: Any, where: str) -> Any:
    """A value from the environment (text) or the file (TOML) as the flag would give it."""
    action = option.action
    try:
        if isinstance(action, argparse._StoreConstAction):  # flags like --simulator
            if _boolean(raw):
                return action.const  # as if given
            return False if action.const is True else UNSET  # see the module's docstring
        if isinstance(action, argparse._AppendAction):
            items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
            return [_one(action, str(item).strip()) for item in items]
        if isinstance(raw, list | dict):
            raise argparse.ArgumentTypeError(f"{raw!r} is not a single value")
        return _one(action, _text(raw))
    except argparse.ArgumentTypeError as error:
        raise SettingError(f"{where}: {error}") from None


def _text(raw: Any) -> str:
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return str(raw)


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"{raw!r} is not true or false")


def _one(action: argparse.Action, text: str) -> Any:
    value = action.type(text) if callable(action.type) else text
    if action.choices is not None and value not in action.choices:
        choices = ", ".join(map(str, action.choices))
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {choices}")
    return value


@dataclass(frozen=True)
class Resolved:
    """Each option's effective value and where it came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    #: The option name of each destination (``hosts`` is ``allow-host``).
    names: dict[str, str]
    #: Destinations named by a ``--no-x`` flag (``compiled_execution``): their
    #: value is x's, so the name's is its opposite.
    negated: frozenset[str] = frozenset()

    def __iter__(self) -> Iterator[tuple[str, Any, str]]:
        """``(option name, value, source)`` in name order, each value the name's own:
        ``no-compiled-execution = False`` while compiled execution is on."""
        for dest in sorted(self.values, key=self.names.__getitem__):
            value = self.values[dest]
            if dest in self.negated and isinstance(value, bool):
                value = not value
            yield self.names[dest], value, self.sources[dest]


def resolve(
    args: argparse.Namespace,
    options: Mapping[str, list[Option]],
    environ: Mapping[str, str] = os.environ,
) -> Resolved:
    """Fill every option *args* left :data:`UNSET`, from the environment, the file, the default."""
    config_path = getattr(args, "config", None) or environ.get(CONFIG_ENV)
    from_file = _read_file(config_path) if config_path else {}
    known = {option.name for group in options.values() for option in group}
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise SettingError(f"config file {config_path}: unknown option(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for dest, group in options.items():
        given = getattr(args, dest, UNSET)
        if given is None and not group[0].action.option_strings:
            given = UNSET  # an optional positional (APP) always gets a value
        if given is not UNSET:
            values[dest], sources[dest] = given, "flag"
        else:
            values[dest], sources[dest] = _unflagged(group, environ, from_file, config_path)
        setattr(args, dest, values[dest])
    names = {dest: group[0].name for dest, group in options.items()}
    negated = frozenset(dest for dest, group in options.items() if _is_negation(group[0]))
    return Resolved(values, sources, names, negated)


def _is_negation(option: Option) -> bool:
    """A ``--no-x`` flag storing False into x (``store_false``)."""
    return isinstance(option.action, argparse._StoreConstAction) and option.action.const is False


def _unflagged(
    group: list[Option],
    environ: Mapping[str, str],
    from_file: Mapping[str, Any],
    config_path: str | None,
) -> tuple[Any, str]:
    """The value and source of an option not given as a flag: the first of the
    environment and the file that gives one (``false`` on a ``--no-x`` gives
    none), else the default."""
    for option in group:
        if option.env in environ:
            value = _convert(option, environ[option.env], option.env)
            if value is not UNSET:
                return value, f"env {option.env}"
    for option in group:
        if option.name in from_file:
            value = _convert(option, from_file[option.name], f"{config_path}: {option.name}")
            if value is not UNSET:
                return value, f"file {config_path}"
    return group[0].default, "default"
