"""What the scale-out tests drive: replicas, event readers, HTTP publishers, processes.

Every wait is on data (a reader's items, a close, a state) and bounded; a
reader's cursor comes from what it received, never from arithmetic.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from meshsub_trio import Config, LogStream, NatsBroker, Server, serve
from meshsub_trio.meshery import MesheryApp, StorageLimits, create_app
from meshsub_trio.testing import ClientClosed, NatsServer, open_graphql_ws

#: Generous bound for "arrives"; every wait here is bounded by it.
SOON = 15.0
GRAPHQL = "/api/system/graphql/query"
EVENTS_PATH = "/api/system/events"
EVENTS = "subscription Events { subscribeEvents { id description } }"
CONTROLLERS = (
    "subscription { subscribeMesheryControllersStatus { connectionID controller status } }"
)
CONTEXTS = """subscription { subscribeK8sContext(selector: {page: "0", pageSize: "50"}) {
  total_count contexts { id name server connection_id } } }"""


# ------------------------------------------------------------------ replicas


@dataclass
class Replica:
    """One in-process server on its own NATS connection: a process, minus the process."""

    app: MesheryApp
    server: Server
    broker: NatsBroker

    @property
    def port(self) -> int:
        return self.server.port

    async def sync(self) -> None:
        """Every change logged so far (by anyone) is applied here."""
        assert self.app.replication is not None
        with trio.fail_after(SOON):
            await self.app.model.flush()
            await self.app.replication.barrier()


@asynccontextmanager
async def open_replica(
    nats: NatsServer, *, limits: StorageLimits | None = None, **broker_options: Any
) -> AsyncIterator[Replica]:
    broker_options.setdefault("reconnect_wait", 0.1)
    broker_options.setdefault("log", LogStream(name="MESHERY", subjects=("meshery.>",), heartbeat=0.5))
    async with NatsBroker.connect(nats.url, **broker_options) as broker:
        app = create_app(broker=broker, simulator=False, limits=limits)
        async with trio.open_nursery() as nursery:
            config = Config(port=0, keepalive=0, close_timeout=1.0)
            with trio.fail_after(SOON):
                server: Server = await nursery.start(serve, app, config)
            try:
                yield Replica(app, server, broker)
            finally:
                server.shutdown()


# ------------------------------------------------------------------- readers


class Reader:
    """One subscription's payloads, collected by a task, across reconnections.

    ``items`` holds ``(cursor, data)`` for every ``next``; ``start`` can be
    called again after the connection died, resuming from ``cursor``.
    """

    def __init__(self, query: str, name: str = "") -> None:
        self.query = query
        self.name = name
        self.items: list[tuple[str | None, Any]] = []
        self.error: Any = None
        self.closed = False
        self.connections = 0
        self._changed = trio.Event()

    @property
    def cursor(self) -> str | None:
        return self.items[-1][0] if self.items else None

    def data(self) -> list[Any]:
        return [data for _, data in self.items]

    async def start(self, nursery: trio.Nursery, port: int, cursor: str | None = None) -> None:
        """Connect and subscribe (after *cursor*, if given); returns once subscribed."""
        self.closed = False
        self.connections += 1
        await nursery.start(self._run, port, cursor)

    async def _run(self, port: int, cursor: str | None, task_status: trio.TaskStatus[None]) -> None:
        try:
            async with open_graphql_ws("127.0.0.1", port, GRAPHQL) as client:
                await client.init()
                extra = {} if cursor is None else {"extensions": {"cursor": cursor}}
                op = await client.start(self.query, **extra)
                task_status.started()
                # Inside the client's context: its nursery would wrap the error.
                with contextlib.suppress(ClientClosed):
                    await self._collect(client, op)
        except (ClientClosed, OSError, trio.BrokenResourceError):
            pass
        finally:
            self.closed = True
            self._notify()

    async def _collect(self, client: Any, op: str) -> None:
        while True:
            message = await client.receive()
            if message.get("id") != op:
                continue
            if message["type"] == "next":
                payload = message["payload"]
                self.items.append((payload.get("extensions", {}).get("cursor"), payload["data"]))
                self._notify()
            else:
                if message["type"] == "error":
                    self.error = message["payload"]
                return

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, done: Callable[[Reader], bool], what: str = "") -> None:
        with trio.fail_after(SOON):
            while not done(self):
                if self.closed and not done(self):
                    raise AssertionError(f"{self.name}: closed while waiting for {what}")
                await self._changed.wait()

    async def wait_count(self, count: int) -> None:
        await self.wait(lambda r: len(r.items) >= count, f"{count} items")

    async def wait_closed(self) -> None:
        with trio.fail_after(SOON):
            while not self.closed:
                await self._changed.wait()


def descriptions(reader: Reader) -> list[str]:
    return [data["subscribeEvents"]["description"] for data in reader.data()]


def check_events(readers: list[Reader], published: list[str]) -> None:
    """Each reader got every event once, all in one order, each publisher's in its order."""
    reference = descriptions(readers[0])
    assert sorted(reference) == sorted(published), (len(reference), len(published))
    assert len(set(reference)) == len(reference)
    by_publisher: dict[str, list[int]] = {}
    for text in reference:
        publisher, n = text.rsplit("-", 1)
        by_publisher.setdefault(publisher, []).append(int(n))
    assert all(ns == sorted(ns) for ns in by_publisher.values()), by_publisher
    for reader in readers:
        assert descriptions(reader) == reference, reader.name
        cursors = [int(cursor) for cursor, _ in reader.items if cursor is not None]
        assert len(cursors) == len(reader.items) and cursors == sorted(set(cursors)), reader.name


# ---------------------------------------------------------------------- HTTP


def http_client(port: int) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=SOON, verify=False)


async def post_event(http: httpx.AsyncClient, description: str) -> httpx.Response:
    body = {"severity": "informational", "description": description}
    return await http.post(EVENTS_PATH, json=body)


async def graphql(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    response = await http.post(GRAPHQL, json={"query": query, "variables": variables})
    return response.json()  # type: ignore[no-any-return]


# ----------------------------------------------------------------- processes


@dataclass
class ServerProcess:
    process: trio.Process
    port: int

    def kill(self) -> None:
        self.process.kill()


async def start_process(*args: str) -> ServerProcess:
    """``python -m meshsub_trio serve ARGS --port 0``, once it says where it listens."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshsub_trio", "serve", *args, "--port", "0", "--keepalive", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(SOON):
        while b"\n" not in line:
            chunk = await process.stdout.receive_some(256)
            assert chunk, "the server exited before listening"
            line += chunk
    assert line.startswith(b"meshsub-trio serving on http://127.0.0.1:"), line
    return ServerProcess(process, int(line.split(b":")[-1].split(b"\n")[0]))


@asynccontextmanager
async def open_processes(count: int, *args: str) -> AsyncIterator[list[ServerProcess]]:
    """*count* server processes started at once; killed (if still alive) on exit."""
    started: list[ServerProcess | None] = [None] * count

    async def one(index: int) -> None:
        started[index] = await start_process(*args)

    try:
        async with trio.open_nursery() as nursery:
            for index in range(count):
                nursery.start_soon(one, index)
        yield [p for p in started if p is not None]
    finally:
        with trio.CancelScope(shield=True):
            for entry in started:
                if entry is None:
                    continue
                if entry.process.returncode is None:
                    entry.process.terminate()
                with trio.move_on_after(5):
                    await entry.process.wait()
                if entry.process.returncode is None:
                    entry.process.kill()
                    await entry.process.wait()
                if entry.process.stdout is not None:
                    await entry.process.stdout.aclose()
