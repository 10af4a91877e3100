"""A flag set from the environment or a config file: ``false`` never means the opposite flag.

Found from outside: ``MESHSUB_NO_SIMULATOR=false`` (or ``no-simulator = false``
in a TOML file) turned the simulator ON, which under NATS starts one on every
replica sharing the config. ``false`` on a ``--no-x`` flag now means "not
given"; on a flag that turns something on it turns it off.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest
import trio

from meshsub_trio._cli_args import parse_serve_args
from meshsub_trio._cli_types import Parser
from meshsub_trio._serve_options import add_serve_options
from meshsub_trio._settings import Option, collect_options

NATS = "nats://127.0.0.1:4222"


def flags() -> list[Option]:
    """Every ``serve`` option that takes no value (``--simulator``, ``--no-x``...)."""
    parser = Parser(prog="meshsub-trio serve")
    add_serve_options(parser)
    return [
        option
        for group in collect_options(parser).values()
        for option in group
        if isinstance(option.action, argparse._StoreConstAction)
    ]


def negations() -> list[Option]:
    return [option for option in flags() if option.action.const is not True]


def test_the_flags_are_the_known_ones() -> None:
    """A new flag is checked below too; this says which kind it is."""
    assert {option.name for option in negations()} == {"no-simulator", "no-compiled-execution"}
    assert {option.name for option in flags()} - {o.name for o in negations()} == {
        "simulator",
        "allow-remote-local-mode",
    }


def value_and_source(argv: list[str], dest: str) -> tuple[object, str]:
    args, resolved = parse_serve_args(argv)
    [source] = [source for name, _, source in resolved if name == resolved.names[dest]]
    return getattr(args, dest), source


@pytest.mark.parametrize("option", negations(), ids=lambda option: option.name)
@pytest.mark.parametrize("false", ["false", "0", "no", "off"])
def test_false_on_a_negation_is_not_given(
    option: Option, false: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in (o.env for o in flags()):
        monkeypatch.delenv(name, raising=False)
    dest, default = option.action.dest, option.default
    monkeypatch.setenv(option.env, false)
    assert value_and_source(["config", "--broker", NATS], dest) == (default, "default")
    monkeypatch.setenv(option.env, "true")
    assert value_and_source(["config", "--broker", NATS], dest) == (
        option.action.const, f"env {option.env}",
    )  # fmt: skip
    monkeypatch.delenv(option.env)
    toml = tmp_path / "shared.toml"
    toml.write_text(f"{option.name} = false\n", "utf-8")
    assert value_and_source(["config", "--config", str(toml)], dest) == (default, "default")
    # "Not given" lets the next source decide: the file under a false variable.
    toml.write_text(f"{option.name} = true\n", "utf-8")
    monkeypatch.setenv(option.env, "false")
    assert value_and_source(["config", "--config", str(toml)], dest) == (
        option.action.const, f"file {toml}",
    )  # fmt: skip


@pytest.mark.parametrize(
    "option", [o for o in flags() if o.action.const is True], ids=lambda option: option.name
)
def test_false_on_a_switch_turns_it_off(option: Option, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(option.env, "false")
    assert value_and_source(["config"], option.action.dest) == (False, f"env {option.env}")
    monkeypatch.setenv(option.env, "true")
    assert value_and_source(["config"], option.action.dest) == (True, f"env {option.env}")


async def config_lines(*args: str, env: dict[str, str] | None = None) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MESHSUB_")}
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "config", "--broker", NATS, *args],
        capture_stdout=True, capture_stderr=True, check=False, env={**clean, **(env or {})},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().splitlines()


async def test_no_simulator_false_leaves_the_simulator_off_under_nats(tmp_path: Path) -> None:
    default = "simulator = None  # default"  # off under NATS (README: exactly one process)
    assert default in await config_lines()
    assert default in await config_lines(env={"MESHSUB_NO_SIMULATOR": "false"})
    toml = tmp_path / "replicas.toml"
    toml.write_text("no-simulator = false\n", "utf-8")
    assert default in await config_lines("--config", str(toml))
    assert "simulator = False  # env MESHSUB_NO_SIMULATOR" in await config_lines(
        env={"MESHSUB_NO_SIMULATOR": "true"}
    )


@pytest.mark.parametrize("option", flags(), ids=lambda option: option.name)
def test_config_shows_a_flag_as_its_own_name_means(
    option: Option, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``no-compiled-execution = True`` once it is given, never the stored
    ``compiled_execution`` under the flag's name."""
    for name in (o.env for o in flags()):
        monkeypatch.delenv(name, raising=False)
    _, resolved = parse_serve_args(["config", f"--{option.name}"])
    shown = {name: (value, source) for name, value, source in resolved}
    name = resolved.names[option.action.dest]
    expected = True if name == option.name else option.action.const  # --no-simulator: simulator
    assert shown[name] == (expected, "flag")
    _, resolved = parse_serve_args(["config"])
    shown = {name: (value, source) for name, value, source in resolved}
    if name == option.name:  # given nowhere: a flag's own name is not set (None: undecided)
        assert shown[name] in ((False, "default"), (None, "default"))


async def test_config_shows_no_compiled_execution_as_set(tmp_path: Path) -> None:
    off = "no-compiled-execution = False  # default"  # compiled execution on
    assert off in await config_lines()
    assert "no-compiled-execution = True  # flag" in await config_lines("--no-compiled-execution")
    assert "no-compiled-execution = True  # env MESHSUB_NO_COMPILED_EXECUTION" in (
        await config_lines(env={"MESHSUB_NO_COMPILED_EXECUTION": "true"})
    )
    toml = tmp_path / "slow.toml"
    toml.write_text("no-compiled-execution = true\n", "utf-8")
    assert f"no-compiled-execution = True  # file {toml}" in await config_lines(
        "--config", str(toml)
    )
