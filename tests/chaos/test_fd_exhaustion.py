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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

LIMIT = 64
CLIENTS = 90
#: Clients that arrive together at a full table: more than one shedding batch.
BURST = 150
#: How many waiting clients one shedding pass turns away (the server's accept batch).
SHED_BATCH = 64


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


@asynccontextmanager
async def _starved_server() -> AsyncIterator[int]:
    """A real server process capped at ``LIMIT`` descriptors; yields its port."""
    command = [
        sys.executable, "-m", "meshsub_trio", "serve", "meshsub_trio.examples.countdown:app",
        "--port", "0", "--keepalive", "0", "--init-timeout", "60",
    ]  # fmt: skip  (held clients stay held: none sends connection_init)
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
        yield int(match.group(1))
    finally:
        process.terminate()
        with trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _fill_the_table(port: int) -> list[trio.SocketStream]:
    """Upgraded clients until the next one hears 503: the table is then full."""
    held: list[trio.SocketStream] = []
    with trio.fail_after(20):
        while True:
            stream, status = await _status_of_upgrade(port)
            held.append(stream)
            if status.startswith(b"HTTP/1.1 503"):
                return held
            assert b" 101 " in status + b" ", status


async def test_out_of_descriptors_clients_hear_503_and_service_resumes() -> None:
    async with _starved_server() as port:
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


async def test_a_burst_larger_than_one_shedding_batch_is_answered_in_full() -> None:
    """More clients waiting at once than one batch sheds (64): the spare
    descriptor must survive the batch, or the rest wait with no answer."""
    async with _starved_server() as port:
        held = await _fill_the_table(port)
        statuses: list[bytes] = []

        async def one() -> None:  # holds its connection: the table stays full
            stream, status = await _status_of_upgrade(port)
            held.append(stream)
            statuses.append(status)

        with trio.fail_after(20):  # every one of them is answered
            async with trio.open_nursery() as nursery:
                for _ in range(BURST):
                    nursery.start_soon(one)
        busy = [s for s in statuses if s.startswith(b"HTTP/1.1 503")]
        upgraded = [s for s in statuses if b" 101 " in s + b" "]
        assert len(busy) + len(upgraded) == BURST, statuses
        assert len(busy) > SHED_BATCH, len(busy)
        for stream in held:
            await stream.aclose()
