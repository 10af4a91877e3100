"""With ``--log-format json``, a refusal to start is one JSON line like every other.

Found from outside: ``serve --log-format json`` on a busy port wrote
``meshsub-trio: cannot listen on ...`` as plain text, which a collector parsing
stderr as JSON drops or mangles. Once the options are read (the log format is
one of them), refusals and crashes follow the format; plain text stays
``meshsub-trio: ...``. A bad option itself is refused before the format is
known: a plain line (README: Command line).
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield int(busy.getsockname()[1])


async def serve(*args: str, env: dict[str, str] | None = None) -> trio.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            [sys.executable, "-m", "meshsub_trio", "serve", *args],
            capture_stdout=True, capture_stderr=True, check=False,
            env={**os.environ, "MESHSUB_DATA_DIR": ":memory:", **(env or {})},
        )  # fmt: skip


def one_json_line(stderr: bytes) -> dict[str, Any]:
    lines = stderr.decode().splitlines()
    assert len(lines) == 1, lines
    entry: dict[str, Any] = json.loads(lines[0])
    assert {"time", "level", "logger", "message"} <= set(entry), entry
    return entry


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["one process", "supervisor"])
async def test_a_busy_port_is_one_json_line(busy_port: int, workers: list[str]) -> None:
    result = await serve("--port", str(busy_port), "--log-format", "json", *workers)
    assert result.returncode == 1 and result.stdout == b""
    entry = one_json_line(result.stderr)
    assert entry["level"] == "ERROR" and entry["logger"] == "meshsub_trio"
    assert entry["message"] == f"cannot listen on 127.0.0.1:{busy_port}: Address already in use"
    assert entry.get("worker") == ("supervisor" if workers else None)
    # Text stays the one plain line it always was.
    result = await serve("--port", str(busy_port), *workers)
    assert result.stderr.decode() == (
        f"meshsub-trio: cannot listen on 127.0.0.1:{busy_port}: Address already in use\n"
    )


async def test_a_refusal_from_below_is_json_too() -> None:
    """``SystemExit("...")`` raised deep down (here: exposure) leaves through one place."""
    result = await serve("--host", "0.0.0.0", "--port", "0", "--log-format", "json")
    assert result.returncode == 1
    *before, last = [json.loads(line) for line in result.stderr.decode().splitlines()]
    assert [entry["level"] for entry in before] == ["WARNING"]  # every address, no --allow-host
    assert last["level"] == "ERROR"
    assert last["message"].startswith("refusing to serve the local user on non-loopback")


async def test_a_crash_is_json_and_scrubbed(tmp_path: Path) -> None:
    (tmp_path / "boom.py").write_text(
        "def app():\n    raise RuntimeError('no broker at nats://alice:s3cretPW@h:4222')\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    result = await serve("boom:app", "--port", "0", "--log-format", "json", env=env)
    assert result.returncode == 1
    entry = one_json_line(result.stderr)
    assert entry["level"] == "CRITICAL" and entry["message"] == "unexpected error"
    assert "RuntimeError: no broker at nats://***@h:4222" in entry["exception"]
    result = await serve("boom:app", "--port", "0", env=env)
    text = result.stderr.decode()
    assert result.returncode == 1 and text.startswith("Traceback"), text
    assert "RuntimeError: no broker at nats://***@h:4222" in text and "s3cretPW" not in text


async def test_a_bad_option_is_refused_in_plain_text() -> None:
    """Before the options are read there is no log format to follow."""
    result = await serve("--log-format", "json", env={"MESHSUB_PORT": "http"})
    assert result.returncode == 1
    assert result.stderr.decode() == "meshsub-trio: MESHSUB_PORT: 'http' is not a whole number\n"
