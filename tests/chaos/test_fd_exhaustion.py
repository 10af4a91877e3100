"""A server out of file descriptors turns clients away with 503 instead of
leaving them queued with no answer, and serves again once descriptors free up.

A real server process whose descriptor limit (soft and hard) is 64, so it
cannot lift it: every client gets an answer within the bound, the last ones a
503 with ``Retry-After``, and after they leave a new client is upgraded.
"""

from __future__ import annotations

import base64
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import trio

LIMIT = 64
CLIENTS = 90


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (LIMIT, LIMIT))


async def _status_of_upgrade(port: int) -> tuple[trio.SocketStream, bytes]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    await stream.send_all(
        (
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n" not in head:
        chunk = await stream.receive_some(4096)
        if not chunk:
            break
        head += chunk
    return stream, head.split(b"\r\n", 1)[0]


async def test_out_of_descriptors_clients_hear_503_and_service_resumes() -> None:
    command = [
        sys.executable, "-m", "meshsub_trio", "serve", "meshsub_trio.examples.countdown:app",
        "--port", "0", "--keepalive", "0",
    ]  # fmt: skip
    process = await trio.lowlevel.open_process(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=_limit_descriptors,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert process.stdout is not None
        seen = b""
        with trio.fail_after(20):
            while (match := re.search(rb"serving on http://[^:]+:(\d+)", seen)) is None:
                chunk = await process.stdout.receive_some(4096)
                assert chunk, "the server exited before serving"
                seen += chunk
        port = int(match.group(1))
        streams: list[trio.SocketStream] = []
        statuses: list[bytes] = []
        with trio.fail_after(20):  # nobody is left waiting for an answer
            for _ in range(CLIENTS):
                stream, status = await _status_of_upgrade(port)
                streams.append(stream)
                statuses.append(status)
        upgraded = [s for s in statuses if b" 101 " in s + b" "]
        busy = [s for s in statuses if s.startswith(b"HTTP/1.1 503")]
        assert upgraded and busy, statuses
        assert len(upgraded) + len(busy) == CLIENTS, statuses
        for stream in streams:
            await stream.aclose()
        with trio.fail_after(10):
            while True:  # the server notices the closes, then has room again
                stream, status = await _status_of_upgrade(port)
                await stream.aclose()
                if b" 101 " in status + b" ":
                    break
                await trio.sleep(0.05)
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
