"""The client against other servers: graphql-ws's reference server and Apollo's legacy one (Node).

Both run from ``js/ref_servers.cjs`` on the packages ``scripts/install-test-deps``
installs for tests/interop (graphql-ws 6, subscriptions-transport-ws 0.11, ws 8,
graphql 16); it reports what reached it (pings, completed iterators) on stdout.
Strawberry (both protocols, under hypercorn) is in ``test_strawberry.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from meshsub_trio.client import open_client

from ._kit import SOON, Notices, fast

HERE = Path(__file__).parent
NODE_MODULES = HERE.parent / "interop" / "js" / "node_modules"
INSTALL_HINT = "run scripts/install-test-deps (npm ci in tests/interop/js) first"


class NodeServers:
    """The running script: its ports and the events it printed."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.events: list[dict[str, Any]] = []
        self._changed = trio.Event()

    def count(self, name: str) -> int:
        return sum(1 for event in self.events if event["event"] == name)

    def port(self, which: str) -> int:
        return int(next(e for e in self.events if e["event"] == "ready")[which])

    async def wait(self, done: Callable[[NodeServers], bool], what: str) -> None:
        with trio.fail_after(SOON):
            while not done(self):
                if self.process.returncode is not None:
                    raise AssertionError(f"the Node servers exited waiting for {what}")
                await self._changed.wait()

    async def read(self) -> None:
        assert self.process.stdout is not None
        pending = b""
        async for chunk in self.process.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                self.events.append(json.loads(line))
            self._changed.set()
            self._changed = trio.Event()


@asynccontextmanager
async def node_servers() -> AsyncIterator[NodeServers]:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "graphql-ws").is_dir():
        pytest.fail(f"node and {NODE_MODULES} are needed: {INSTALL_HINT}")
    process = await trio.lowlevel.open_process(
        [node, str(HERE / "js" / "ref_servers.cjs")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},
    )
    servers = NodeServers(process)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(servers.read)
            await servers.wait(lambda s: s.count("ready") == 1, "ready")
            yield servers
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


@pytest.mark.node
async def test_graphql_ws_reference_server() -> None:
    notices = Notices()
    async with node_servers() as servers:
        url = f"ws://127.0.0.1:{servers.port('ws')}/graphql"
        async with open_client(url, on_notice=notices, **fast()) as client:  # "auto"
            assert await client.execute("{ hello }") == {"hello": "world"}
            assert client.subprotocol == "graphql-transport-ws"
            async with client.subscribe("subscription { count(to: 3) }") as stream:
                got = [payload async for payload in stream]  # ends: the server completed
            assert got == [{"data": {"count": n}} for n in range(3)]
            async with client.subscribe("subscription { quiet }"):
                # Nothing flows; protocol pings are answered, so the link lives on.
                await servers.wait(lambda s: s.count("ping") >= 3, "three pings")
                assert notices.lost() == []
            await servers.wait(lambda s: s.count("stopped") == 1, "complete to stop it")
        assert servers.count("connected") == 1  # one socket for everything


@pytest.mark.node
async def test_apollo_legacy_server() -> None:
    notices = Notices()
    async with node_servers() as servers:
        url = f"ws://127.0.0.1:{servers.port('legacy')}/graphql"
        async with open_client(url, transport="legacy", on_notice=notices, **fast()) as client:
            assert await client.execute("{ hello }") == {"hello": "world"}
            assert client.subprotocol == "graphql-ws"
            async with client.subscribe("subscription { count(to: 3) }") as stream:
                got = [payload async for payload in stream]
            assert got == [{"data": {"count": n}} for n in range(3)]
            async with client.subscribe("subscription { quiet }"):
                # No keep-alive from this server: WebSocket ping frames keep the link.
                await servers.wait(lambda s: s.count("frame-ping") >= 3, "three ping frames")
                assert notices.lost() == []
            await servers.wait(lambda s: s.count("stopped") == 1, "stop to end it")
        assert servers.count("connected") == 1
