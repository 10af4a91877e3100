"""SIGTERM under load: the real command line, fifty streaming clients, both protocols.

The operator's promise (README): SIGINT/SIGTERM close every socket with 1001,
run every cleanup and exit 0 within ``close_timeout`` (2 s) plus a short
grace, even with frozen clients.
"""

from __future__ import annotations

import fcntl
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

import trio

from meshsub_trio.testing import LEGACY_WS, TRANSPORT_WS, GraphQLWSClient, open_graphql_ws

from ..rawws import RawWebSocket, open_raw_websocket
from . import first_data

CLIENTS = 50
CLOSE_TIMEOUT = 2.0  # the CLI's default
GRACE = 1.0


@asynccontextmanager
async def cli(*args: str) -> AsyncIterator[tuple[trio.Process, int]]:
    """``meshsub-trio serve`` as a real process on a free port; killed on exit if still up."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshsub_trio", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(256)
                assert chunk, "the server exited before listening"
                line += chunk
        yield process, int(line.split(b":")[-1].split(b"\n")[0])
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def terminate(process: trio.Process) -> tuple[int, float]:
    """SIGTERM; return the exit code and how long the exit took (bounded generously)."""
    process.send_signal(signal.SIGTERM)
    began = trio.current_time()
    with trio.fail_after(3 * CLOSE_TIMEOUT + GRACE):
        code = await process.wait()
    return code, trio.current_time() - began


async def test_sigterm_with_50_streaming_clients_closes_each_1001_and_exits_0_in_time() -> None:
    """50 clients (25 per protocol, two streams each), keep-alive 0.5 s, then SIGTERM.

    Bound: every client receives 1001, and the process exits 0 within
    ``close_timeout`` (2 s) + 1 s of the signal.
    """
    async with (
        cli("meshsub_trio.examples.countdown:app", "--keepalive", "0.5") as (process, port),
        AsyncExitStack() as stack,
    ):
        clients: list[GraphQLWSClient] = []
        for n in range(CLIENTS):
            protocol = TRANSPORT_WS if n % 2 else LEGACY_WS
            client = await stack.enter_async_context(
                open_graphql_ws("127.0.0.1", port, protocol=protocol)
            )
            await client.init()
            for every in (10, 25):
                query = f"subscription {{ ticks(everyMs: {every}) }}"
                await first_data(client, await client.start(query))
            clients.append(client)
        code, took = await terminate(process)
        with trio.fail_after(1):
            for client in clients:
                await client.closed.wait()
    assert code == 0
    assert sorted({client.close_code for client in clients}) == [1001]
    assert took <= CLOSE_TIMEOUT + GRACE, f"exited {took:.2f}s after SIGTERM"


def unread(raw: RawWebSocket) -> int:
    """Bytes waiting in this client's kernel receive queue (it never reads them)."""
    result = fcntl.ioctl(raw.stream.socket.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return struct.unpack("i", result)[0]


async def wait_until_stalled(raw: RawWebSocket) -> None:
    """Until the frozen client's receive queue is full and stays full (the server's sends stall)."""
    previous = -1
    stable = 0
    while stable < 5:
        await trio.sleep(0.02)  # a poll of kernel state, not a guess at timing
        now = unread(raw)
        stable = stable + 1 if now == previous and now >= 2048 else 0
        previous = now


async def test_sigterm_with_frozen_clients_exits_0_within_close_timeout_and_grace() -> None:
    """Two frozen clients (one per protocol) that stopped reading a full-speed stream.

    Keep-alive is off so they are frozen, not dead (a dead peer is dropped
    before shutdown needs to wait). A healthy client streams beside them.
    Bound: exit 0 within ``close_timeout`` (2 s) + 1 s of SIGTERM, and the
    healthy client still receives its 1001.
    """
    frozen: list[RawWebSocket] = []
    async with (
        cli(
            "meshsub_trio.examples.countdown:app", "--keepalive", "0", "--write-timeout", "30"
        ) as (process, port),
        open_graphql_ws("127.0.0.1", port) as healthy,
    ):
        try:
            await healthy.init()
            await first_data(healthy, await healthy.start("subscription { ticks(everyMs: 10) }"))
            for protocol in (TRANSPORT_WS, LEGACY_WS):
                raw = await open_raw_websocket(port, subprotocol=protocol, receive_buffer=4096)
                frozen.append(raw)
                await raw.init()
                kind = "subscribe" if protocol == TRANSPORT_WS else "start"
                for op in range(20):
                    query = "subscription { ticks(everyMs: 0) }"
                    await raw.send_json({"id": str(op), "type": kind, "payload": {"query": query}})
            with trio.fail_after(10):
                for raw in frozen:
                    await wait_until_stalled(raw)
            code, took = await terminate(process)
            with trio.fail_after(1):
                await healthy.closed.wait()
        finally:
            for raw in frozen:
                await raw.aclose()
    assert code == 0
    assert healthy.close_code == 1001
    assert took <= CLOSE_TIMEOUT + GRACE, f"exited {took:.2f}s after SIGTERM"
