"""The command line refuses what it cannot honour, in one line, with a non-zero exit.

Found from outside: ``--port 99999`` served on 34463 and ``--port 65537`` on
port 1, a busy port printed a 70-line ExceptionGroup traceback, and negative
keep-alives were accepted.
"""

from __future__ import annotations

import sys

import pytest
import trio

COUNTDOWN = "meshsub_trio.examples.countdown:app"


async def _serve(*args: str) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "meshsub_trio", "serve", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


def _one_line(stderr: bytes) -> str:
    lines = stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize(
    ("args", "mentions"),
    [
        (["--port", "99999"], "--port"),
        (["--port", "65537"], "--port"),
        (["--port", "-1"], "--port"),
        (["--port", "http"], "--port"),
        (["--keepalive", "-1"], "--keepalive"),
        (["--keepalive", "nan"], "--keepalive"),
        (["--pong-timeout", "0"], "--pong-timeout"),
        (["--init-timeout", "-3"], "--init-timeout"),
        (["--write-timeout", "0"], "--write-timeout"),
        (["--cohort-linger", "-1"], "--cohort-linger"),
        (["--max-operations", "-5"], "--max-operations"),
        (["--max-message-size", "0"], "--max-message-size"),
        (["--max-fields", "-1"], "--max-fields"),
        (["--head-timeout", "0"], "--head-timeout"),
        (["--rate", "0"], "--rate"),
        (["--rate", "inf"], "--rate"),
        (["--allow-host", "bad host:x"], "--allow-host"),
        (["--max-records", "-1"], "--max-records"),
        (["--no-such-option"], "--no-such-option"),
    ],
)
async def test_a_bad_option_is_one_line_and_exit_2(args: list[str], mentions: str) -> None:
    result = await _serve(COUNTDOWN, *args)
    assert result.returncode == 2
    line = _one_line(result.stderr)
    assert mentions in line and "error" in line, line
    assert result.stdout == b""  # never started serving


async def test_a_busy_port_is_one_line_and_exit_1() -> None:
    with trio.socket.socket() as busy:
        await busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = await _serve(COUNTDOWN, "--port", str(port), "--log-level", "error")
    assert result.returncode == 1
    line = _one_line(result.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in line and "in use" in line, line


async def test_a_missing_app_is_one_line() -> None:
    result = await _serve("no_such_module:app", "--port", "0", "--log-level", "error")
    assert result.returncode != 0
    assert "cannot load 'no_such_module:app'" in _one_line(result.stderr)
