"""The client against Strawberry (hypercorn, asyncio) over both WebSocket protocols.

A real server process (``_strawberry_app.py``): a small schema with a query,
a finite subscription and one that never yields; the server reports on
stdout when a subscription's generator was closed, so the test sees that
leaving ``subscribe``'s block reached the server.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from meshsub_trio.client import OperationError, open_client

from ._kit import PING, SOON, Notices, fast

APP = Path(__file__).with_name("_strawberry_app.py")
STRAWBERRY_PONG = 1.0


class StrawberryServer:
    """The running process: its port and what it printed."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def count(self, name: str) -> int:
        return sum(1 for event in self.events if event["event"] == name)

    @property
    def port(self) -> int:
        return int(next(e for e in self.events if e["event"] == "ready")["port"])

    async def wait(self, done: Callable[[StrawberryServer], bool], what: str) -> None:
        with trio.fail_after(SOON):
            while not done(self):
                if self.process.returncode is not None:
                    raise AssertionError(f"the Strawberry server exited waiting for {what}")
                await self._changed.wait()

    async def read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self.events += [json.loads(line) for line in lines if line.startswith(b"{")]
            self._changed.set()
            self._changed = trio.Event()


@asynccontextmanager
async def strawberry_server() -> AsyncIterator[StrawberryServer]:
    process = await trio.lowlevel.open_process(
        [sys.executable, str(APP)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    server = StrawberryServer(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read)
            await server.wait(lambda s: s.count("ready") == 1, "ready")
            yield server
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            assert process.stdin is not None
            await process.stdin.aclose()  # the script exits when stdin closes
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


@pytest.mark.parametrize(
    ("transport", "subprotocol"),
    [("ws", "graphql-transport-ws"), ("legacy", "graphql-ws"), ("auto", "graphql-transport-ws")],
)
async def test_the_client_against_strawberry(transport: str, subprotocol: str) -> None:
    notices = Notices()
    async with strawberry_server() as server:
        url = f"ws://127.0.0.1:{server.port}/graphql"
        # A ping every 0.2 s, but a second for each answer: another process on
        # two shared cores can stall for more than 0.2 s, and what is tested
        # here is that the pings are understood, not how fast (that bound is
        # tested against our own server).
        options = fast(pong_timeout=STRAWBERRY_PONG)
        async with open_client(url, transport=transport, on_notice=notices, **options) as client:
            with trio.fail_after(SOON):
                if transport == "legacy":
                    # Strawberry's legacy graphql-ws handler serves subscriptions only.
                    with pytest.raises(OperationError, match="queries are not allowed"):
                        await client.execute("{ hello }")
                else:
                    assert await client.execute("{ hello }") == {"hello": "world"}
            assert client.subprotocol == subprotocol
            with trio.fail_after(SOON):
                async with client.subscribe("subscription { count(to: 3) }") as stream:
                    got = [payload async for payload in stream]  # ends: Strawberry completed
            assert got == [{"data": {"count": n}} for n in range(3)]
            async with client.subscribe("subscription { quiet }"):
                # Nothing flows for several heartbeat bounds: the pings (protocol
                # pings, or ping frames on legacy) are answered and the link lives.
                with trio.move_on_after(2 * (PING + STRAWBERRY_PONG)):
                    await notices.wait(lambda n: bool(n.lost()))
                assert notices.lost() == []
            await server.wait(lambda s: s.count("stopped") == 1, "complete/stop to end it")
            assert client.connections == 1  # one socket for everything
        assert notices.lost() == []
