"""Every serve option from a flag, a MESHSUB_* variable or a TOML file, in that order."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import trio

from meshsub_trio._cli_app import config_from_args
from meshsub_trio._cli_args import parse_serve_args


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    path = tmp_path / "meshsub.toml"
    path.write_text(
        'port = 9200\nallow-host = ["a.example", "b.example"]\nno-simulator = true\n'
        "[serve]\nmax_fields = 300\nkeepalive = 5\n",
        encoding="utf-8",
    )
    return path


def test_flag_beats_env_beats_file_beats_default(
    toml: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MESHSUB_PORT", "9300")
    monkeypatch.setenv("MESHSUB_KEEPALIVE", "7")
    args, resolved = parse_serve_args(["serve", "--config", str(toml), "--keepalive", "9"])
    sources = {name: source for name, _value, source in resolved}
    assert args.keepalive == 9.0 and sources["keepalive"] == "flag"
    assert args.port == 9300 and sources["port"] == "env MESHSUB_PORT"
    assert args.max_fields == 300 and sources["max-fields"] == f"file {toml}"
    assert args.hosts == ["a.example", "b.example"]
    assert args.simulator is False and sources["simulator"] == f"file {toml}"
    assert args.max_cost == 100_000 and sources["max-cost"] == "default"
    config = config_from_args(args)
    assert (config.port, config.keepalive, config.max_fields) == (9300, 9.0, 300)
    assert config.allowed_hosts == ("a.example", "b.example")


def test_config_file_from_the_environment(toml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHSUB_CONFIG", str(toml))
    args, _ = parse_serve_args(["serve"])
    assert args.port == 9200


@pytest.mark.parametrize(
    ("env", "value", "message"),
    [
        ("MESHSUB_PORT", "99999", "MESHSUB_PORT: '99999' is not a TCP port"),
        ("MESHSUB_KEEPALIVE", "-1", "MESHSUB_KEEPALIVE: '-1' is a negative duration"),
        ("MESHSUB_DURABILITY", "fast", "MESHSUB_DURABILITY: 'fast' is not one of full, normal"),
        ("MESHSUB_SIMULATOR", "maybe", "MESHSUB_SIMULATOR: 'maybe' is not true or false"),
    ],
)
def test_a_bad_environment_value_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, message: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(SystemExit) as exit_:
        parse_serve_args(["serve"])
    assert message in str(exit_.value)


def test_a_bad_file_is_refused_by_name(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("bogus = 1\n", encoding="utf-8")
    with pytest.raises(SystemExit, match="unknown option"):
        parse_serve_args(["serve", "--config", str(unknown)])
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n", encoding="utf-8")
    with pytest.raises(SystemExit, match="not valid TOML"):
        parse_serve_args(["serve", "--config", str(broken)])
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('port = "http"\n', encoding="utf-8")
    with pytest.raises(SystemExit, match="port: 'http' is not a whole number"):
        parse_serve_args(["serve", "--config", str(wrong)])


async def test_config_command_prints_values_and_sources(toml: Path) -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "config", "--config", str(toml),
         "--metrics-token", "s3cret"],
        capture_stdout=True, capture_stderr=True, check=False,
        env={"MESHSUB_MAX_COST": "500", "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "max-cost = 500  # env MESHSUB_MAX_COST" in lines
    assert "port = 9200  # file " + str(toml) in lines
    assert "metrics-token = '***'  # flag" in lines
    assert b"s3cret" not in result.stdout


async def test_version() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "--version"], capture_stdout=True
    )
    assert result.stdout.decode().startswith("meshsub-trio ")


@pytest.mark.parametrize(
    ("argv", "env", "port"),
    [
        (["serve"], {}, 9081),
        (["serve", "meshsub_trio.meshery:app"], {}, 9081),
        (["serve", "meshsub_trio.meshery:create_app"], {}, 9081),
        (["serve"], {"MESHSUB_APP": "meshsub_trio.meshery:create_app"}, 9081),
        (["serve", "meshsub_trio.examples.countdown:app"], {}, 8000),
        (["serve"], {"MESHSUB_APP": "meshsub_trio.examples.countdown:app"}, 8000),
        (["serve", "meshsub_trio.meshery:app", "--port", "9500"], {}, 9500),
    ],
)
def test_meshery_keeps_its_port_however_it_is_named(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], env: dict[str, str], port: int
) -> None:
    """Naming the default app (by flag or ``MESHSUB_APP``) is still Meshery:
    Meshery UI expects 9081 whether or not the operator spelled the app out."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args, resolved = parse_serve_args(argv)
    assert args.port == port
    assert dict((name, value) for name, value, _source in resolved)["port"] == port
