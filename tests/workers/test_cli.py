"""What ``serve --workers`` refuses, each in one line, before it starts anything."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from meshsub_trio import Config
from meshsub_trio._cli_args import parse_serve_args, print_config
from meshsub_trio._cli_run import log_stream, nats_options
from meshsub_trio._supervisor import _run, plan_for
from meshsub_trio._supervisor._embedded_nats import EmbeddedNats, EmbeddedNatsError
from meshsub_trio._supervisor._plan import worker_command, worker_environment
from meshsub_trio.brokers._nats_options import NatsOptions

from ._kit import open_supervisor


def serve(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MESHSUB_DATA_DIR=str(data_dir))
    return subprocess.run(
        [sys.executable, "-m", "meshsub_trio", "serve", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


async def test_a_taken_port_or_data_dir_is_refused(tmp_path: Path) -> None:
    async with open_supervisor(tmp_path) as supervisor:
        port = str(supervisor.port)
        # SO_REUSEPORT would let a second --workers server share the port silently.
        for args in (["--workers", "2", "--port", port], ["--port", port]):
            done = serve(*args, data_dir=tmp_path / "other")
            assert done.returncode == 1, done
            assert "cannot listen on 127.0.0.1:" in done.stderr
            assert "Address already in use" in done.stderr
        done = serve("--workers", "2", "--port", "0", data_dir=tmp_path / "data")
        assert done.returncode == 1
        assert done.stderr.strip().endswith("(one per --data-dir)"), done.stderr


def test_the_memory_broker_is_refused(tmp_path: Path) -> None:
    args = argparse.Namespace(workers=2, broker="memory", simulator=None, worker_timeout=30.0)
    with pytest.raises(SystemExit) as refused:
        plan_for(["serve"], args, Config(port=0), str(tmp_path))
    message = str(refused.value)
    assert "\n" not in message and "leave --broker out" in message


def test_config_shows_the_workers(capsys: pytest.CaptureFixture[str]) -> None:
    _, resolved = parse_serve_args(["config", "--workers", "auto"])
    print_config(resolved)
    cores = len(os.sched_getaffinity(0))
    assert f"workers = {cores!r}  # flag" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        parse_serve_args(["serve", "--workers", "0"])
    assert "must be at least 1" in capsys.readouterr().err


def test_without_the_extra_the_message_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    def missing() -> str:
        raise EmbeddedNatsError("not found")

    monkeypatch.setattr(_run, "find_nats_server", missing)
    args = argparse.Namespace(workers=2, broker=None, simulator=None, worker_timeout=30.0)
    plan = plan_for(["serve", "--workers", "2"], args, Config(port=0), str(tmp_path))
    assert _run.run_supervisor(plan) == 1
    err = capsys.readouterr().err
    assert err == (
        "meshsub-trio: --workers 2 without --broker runs an embedded nats-server: "
        "pip install 'meshsub-trio[workers]'\n"
    )


@pytest.mark.parametrize("kind", ["a file", "a file in its way", "under /proc"])
def test_an_unusable_data_dir_is_one_line_and_exit_1(
    kind: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    if kind == "a file":
        data_dir = tmp_path / "data"
        data_dir.write_text("")
    elif kind == "a file in its way":
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        (data_dir / "nats").write_text("")
    else:
        data_dir = Path("/proc/self/nope")
    args = argparse.Namespace(workers=2, broker=None, simulator=None, worker_timeout=30.0)
    plan = plan_for(["serve", "--workers", "2"], args, Config(port=0), str(data_dir))
    assert _run.run_supervisor(plan) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"meshsub-trio: cannot use {data_dir / 'nats'} for the NATS store: ")


async def test_a_nats_server_that_fails_to_restart_is_not_reported_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # On a restart the port is already known, so knowing it must not count as
    # readiness: a server that dies at once (its port taken) was logged "ready".
    fake = tmp_path / "nats-server"
    fake.write_text(
        "#!/bin/sh\n"
        "echo '[1] [INF] Listening for client connections on 127.0.0.1:4222' >&2\n"
        "echo '[1] [FTL] Error listening on port: 127.0.0.1:4222, \"address already in use\"' >&2\n"
        "exec 2>&-\n"  # its log ends before its exit is seen, as a real one's may
        "exec sleep 30\n"  # alive well past the check, whatever the machine's load
        "exit 1\n"
    )
    fake.chmod(0o755)
    nats = EmbeddedNats(str(fake), str(tmp_path))
    nats.port = 4222  # as after its first start
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            assert await nats._start(nursery) is False
    assert "embedded nats-server ready" not in caplog.text


@pytest.mark.parametrize("given", [["--broker", ""], ["--broker="], ["--broker", "nats://x:4222"]])
def test_a_worker_takes_its_broker_from_the_environment_only(given: list[str]) -> None:
    # The supervisor's broker (the embedded one's carries its token) reaches a
    # worker in MESHSUB_BROKER; a --broker left on its command line would win
    # over it, and an empty one put each worker on a memory broker of its own.
    argv = ["serve", "--workers", "2", *given, "--port", "0"]
    args = argparse.Namespace(workers=2, broker=None, simulator=None, worker_timeout=30.0)
    plan = plan_for(argv, args, Config(port=0), ":memory:")
    command = worker_command(plan, 0)
    assert not any(part.startswith("--broker") for part in command), command
    assert command[command.index("--port") + 1] == "0"  # the user's other options stay
    assert worker_environment("nats://t@127.0.0.1:1") == {"MESHSUB_BROKER": "nats://t@127.0.0.1:1"}


def test_nats_stale_timeout_reaches_the_broker_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESHSUB_NATS_STALE_TIMEOUT", raising=False)
    args, resolved = parse_serve_args(["serve", "--nats-stale-timeout", "2.5"])
    options = nats_options(args)
    assert options.stale_timeout == 2.5 and options.log == log_stream()
    assert ("nats-stale-timeout", 2.5, "flag") in list(resolved)
    # The CLI's default is the broker's own (repeated there to keep nats-py unimported).
    args, _ = parse_serve_args(["serve"])
    assert nats_options(args).stale_timeout == NatsOptions().stale_timeout
    monkeypatch.setenv("MESHSUB_NATS_STALE_TIMEOUT", "0")  # 0: the probe is off
    args, _ = parse_serve_args(["serve"])
    assert nats_options(args).stale_timeout == 0.0


@pytest.mark.parametrize(
    ("given", "why"),
    [
        ("-1", "'-1' is a negative duration"),
        ("soon", "'soon' is not a number"),
        ("inf", "'inf' is not a finite number"),
        ("nan", "'nan' is not a finite number"),
    ],
)
def test_a_bad_nats_stale_timeout_is_a_usage_error(
    given: str, why: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(SystemExit) as refused:
        parse_serve_args(["serve", "--nats-stale-timeout", given])
    assert refused.value.code == 2
    assert capsys.readouterr().err == (
        f"meshsub-trio serve: error: argument --nats-stale-timeout: {why} (see --help)\n"
    )
    monkeypatch.setenv("MESHSUB_NATS_STALE_TIMEOUT", given)
    with pytest.raises(SystemExit) as refused:
        parse_serve_args(["serve"])
    assert str(refused.value) == f"meshsub-trio: MESHSUB_NATS_STALE_TIMEOUT: {why}"


def test_a_worker_gets_the_nats_stale_timeout_on_its_command_line() -> None:
    # Not a secret, so it travels as the user gave it (a worker's own
    # environment and --config file reach it as well, unchanged).
    for given in (["--nats-stale-timeout", "3"], ["--nats-stale-timeout=3"]):
        argv = ["serve", "--workers", "2", *given, "--port", "0"]
        args = argparse.Namespace(workers=2, broker=None, simulator=None, worker_timeout=30.0)
        command = worker_command(plan_for(argv, args, Config(port=0), ":memory:"), 1)
        start = command.index(given[0])
        assert command[start : start + len(given)] == given, command
