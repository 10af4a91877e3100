"""The chaos toolkit: an app that records every cleanup, clients, churn, and memory probes.

Shared by the chaos tests and by ``scripts/soak``, so the soak runs exactly
the churn and fault mix CI runs, only for longer. Nothing here sleeps to
synchronise: waits are on Trio events, the tracker's parking lot or the
server's :meth:`~meshsub_trio.Metrics.wait_for`.
"""

from __future__ import annotations

import gc
import json
import os
import random
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, RejectConnection, Request
from wsproto.utilities import LocalProtocolError

from meshsub_trio import App, Context, Overflow, shielded_cleanup, streamer
from meshsub_trio.testing import (
    LEGACY_WS,
    TRANSPORT_WS,
    ClientClosed,
    FaultProxy,
    GraphQLWSClient,
    live_tasks,
)

PROTOCOLS = (TRANSPORT_WS, LEGACY_WS)
#: Capacity of the flood streamers' buffers: small, so overflow is quick.
FLOOD_CAPACITY = 16
#: How long a careful cleanup may take before ``shielded_cleanup`` cuts it.
CLEANUP_TIMEOUT = 1.0
#: Seconds of slack on every timing bound: scheduling on a busy 2-core CI box.
SLACK = 0.5

SCHEMA = """
type Query { hello: String }
type Subscription {
  stream(tag: String!, everyMs: Int = 5, cleanupMs: Int = 20): String!
  hang(tag: String!, timeoutMs: Int = 300): String!
  floodDrop(tag: String!, n: Int = -1, pad: Int = 0, gated: Boolean = false): String!
  floodCoalesce(tag: String!, n: Int = -1, pad: Int = 0, gated: Boolean = false): String!
  floodClose(tag: String!, n: Int = -1, pad: Int = 0, gated: Boolean = false): String!
  countdown(to: Int!): Int!
  ticks(everyMs: Int = 50): Int!
}
"""


class Tracker:
    """What the chaos app's streamers did, per ``tag``: the test's view of the server side.

    ``cleaned`` counts ``finally`` blocks (must be exactly one per start);
    ``cleanup_completed`` counts awaited cleanups that finished inside
    ``shielded_cleanup``; ``cut`` records (was it cut, how long it took) for
    cleanups that hang.
    """

    def __init__(self) -> None:
        self.started: Counter[str] = Counter()
        self.cleaned: Counter[str] = Counter()
        self.cleanup_completed: Counter[str] = Counter()
        self.cut: dict[str, tuple[bool, float]] = {}
        self.last_emitted: dict[str, int] = {}
        self.emitted_all: set[str] = set()
        self._gates: dict[str, trio.Event] = {}
        self._lot = trio.lowlevel.ParkingLot()

    def gate(self, tag: str) -> trio.Event:
        """The event a gated flood waits for before emitting."""
        return self._gates.setdefault(tag, trio.Event())

    def changed(self) -> None:
        self._lot.unpark_all()

    async def wait_for(self, predicate: Callable[[Tracker], bool]) -> None:
        """Wait until *predicate(self)* holds (re-checked on every start/cleanup)."""
        while not predicate(self):
            await self._lot.park()

    def reset(self) -> None:
        """Forget per-tag history (the soak runs for hours; the counters must not grow)."""
        self.started.clear()
        self.cleaned.clear()
        self.cleanup_completed.clear()
        self.cut.clear()
        self.last_emitted.clear()
        self.emitted_all.clear()
        self._gates.clear()


def chaos_app(tracker: Tracker) -> App:
    """Streamers whose every start, emission and cleanup lands in *tracker*."""

    async def stream(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        """``tag:n`` forever; its cleanup awaits (inside shielded_cleanup) like a lease release."""
        tag = args["tag"]
        tracker.started[tag] += 1
        tracker.changed()
        n = 0
        try:
            while True:
                emit(f"{tag}:{n}")
                tracker.last_emitted[tag] = n
                n += 1
                await trio.sleep(max(args["everyMs"], 0) / 1000)
        finally:
            with shielded_cleanup(CLEANUP_TIMEOUT):
                await trio.sleep(args["cleanupMs"] / 1000)
                tracker.cleanup_completed[tag] += 1
            tracker.cleaned[tag] += 1
            tracker.changed()

    async def hang(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        """One value, then forever; its cleanup hangs and must be cut at ``timeoutMs``."""
        tag = args["tag"]
        tracker.started[tag] += 1
        tracker.changed()
        try:
            emit(f"{tag}:0")
            await trio.sleep_forever()
        finally:
            began = trio.current_time()
            with shielded_cleanup(args["timeoutMs"] / 1000) as scope:
                await trio.sleep_forever()  # a remote call that never answers
            tracker.cut[tag] = (scope.cancelled_caught, trio.current_time() - began)
            tracker.cleaned[tag] += 1
            tracker.changed()

    def flood(policy: Overflow) -> Any:
        async def run(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
            """``tag:i:pad`` as fast as the scheduler allows (``n`` of them, or forever)."""
            tag, count, pad = args["tag"], args["n"], "x" * args["pad"]
            tracker.started[tag] += 1
            tracker.changed()
            try:
                if args["gated"]:
                    await tracker.gate(tag).wait()
                i = 0
                while count < 0 or i < count:
                    emit(f"{tag}:{i}:{pad}")
                    tracker.last_emitted[tag] = i
                    i += 1
                    await trio.lowlevel.checkpoint()
                tracker.emitted_all.add(tag)
                tracker.changed()
            finally:
                tracker.cleaned[tag] += 1
                tracker.changed()

        return streamer(run, capacity=FLOOD_CAPACITY, policy=policy)

    async def countdown(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        for n in range(args["to"], -1, -1):
            emit(n)
            await trio.sleep(0.01)

    async def ticks(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        n = 0
        while True:
            emit(n)
            n += 1
            await trio.sleep(max(args["everyMs"], 1) / 1000)

    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _root, _info: "chaos"}},
        streamers={
            "stream": stream,
            "hang": hang,
            "floodDrop": flood(Overflow.DROP_OLDEST),
            "floodCoalesce": flood(Overflow.COALESCE),
            "floodClose": flood(Overflow.CLOSE),
            "countdown": countdown,
            "ticks": ticks,
        },
    )


def data_type(protocol: str) -> str:
    """The message type carrying results in *protocol*."""
    return "next" if protocol == TRANSPORT_WS else "data"


def value_of(message: dict[str, Any]) -> Any:
    """The single field's value in a ``next``/``data`` message."""
    (value,) = message["payload"]["data"].values()
    return value


def tag_number(message: dict[str, Any]) -> tuple[str, int]:
    """``("tag", n)`` from a ``tag:n[:pad]`` value."""
    tag, n, *_ = value_of(message).split(":")
    return tag, int(n)


async def first_data(client: GraphQLWSClient, op_id: str) -> dict[str, Any]:
    """The first result message of *op_id* (others are skipped)."""
    kind = data_type(client.protocol)
    while True:
        message = await client.receive()
        if message.get("id") == op_id and message["type"] == kind:
            return message
        if message.get("id") == op_id and message["type"] in ("error", "complete"):
            raise AssertionError(f"operation {op_id} ended early: {message}")


async def drain_until_closed(client: GraphQLWSClient) -> list[dict[str, Any]]:
    """Every message still delivered before the connection is seen gone."""
    seen: list[dict[str, Any]] = []
    with suppress(ClientClosed):
        while True:
            seen.append(await client.receive())
    return seen


# ---- clients over any stream ------------------------------------------------
async def handshake(
    stream: trio.SocketStream, host: str, port: int, path: str, protocol: str
) -> WSConnection:
    """The client side of the WebSocket upgrade over an already connected *stream*."""
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(
        ws.send(Request(host=f"{host}:{port}", target=path, subprotocols=[protocol]))
    )
    while True:
        data = await stream.receive_some(65536)
        if not data:
            raise ClientClosed(1006, "connection closed during the handshake")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                return ws
            if isinstance(event, RejectConnection):
                raise ClientClosed(1006, f"handshake rejected with HTTP {event.status_code}")


@asynccontextmanager
async def graphql_ws_over(
    stream: trio.SocketStream,
    host: str,
    port: int,
    *,
    path: str = "/ws",
    protocol: str = TRANSPORT_WS,
) -> AsyncIterator[GraphQLWSClient]:
    """The kit's client on a stream we made ourselves (in a netns, or to know its address).

    ``open_graphql_ws`` always dials with ``open_tcp_stream``; a socket made
    inside a network namespace, or one whose local address must be matched
    to a proxied connection, needs this variant. The stream is closed on exit.
    """
    try:
        ws = await handshake(stream, host, port, path, protocol)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    client = GraphQLWSClient(stream, ws, protocol)

    async def reader() -> None:
        # Kit bug (reported): a server ping that crosses our close frame makes
        # the kit's reader answer it in LOCAL_CLOSING, which wsproto refuses.
        with suppress(LocalProtocolError):
            await client._reader()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reader)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def surviving_close_race(
    connection: AbstractAsyncContextManager[GraphQLWSClient],
) -> AsyncIterator[GraphQLWSClient]:
    """Enter a kit client (``open_graphql_ws``, the ``graphql_ws`` fixture), minus one kit bug.

    The kit's reader answers a server ping that crosses the client's own
    close frame, which wsproto refuses (``LocalProtocolError``) and which then
    fails the block at exit. Only that error, and only once the block itself
    has finished, is forgiven here; anything else still fails the test.
    """
    finished = False
    try:
        async with connection as client:
            yield client
            finished = True
    except* LocalProtocolError:
        if not finished:
            raise


# ---- memory -------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident set size of this process now (not the peak)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def settled_rss() -> int:
    """RSS after a full collection, so garbage waiting for the GC is not counted as a leak."""
    gc.collect()
    gc.collect()
    return rss_bytes()


# ---- tasks --------------------------------------------------------------------
async def settle_tasks(limit: int, timeout: float = 2.0) -> int:
    """Wait (bounded) until at most *limit* Trio tasks live; return how many do.

    A connection's metrics drop before its last task returns (the socket is
    closed after the counters), so "no task leaked" is checked once every
    task has had the chance to block, not at the first glance.
    """
    with trio.move_on_after(timeout):
        while len(live_tasks()) > limit:
            await trio.testing.wait_all_tasks_blocked(0.01)
    return len(live_tasks())


# ---- a real client process ---------------------------------------------------
CLIENT_PROCESS = textwrap.dedent(
    """
    import json, sys, trio
    from meshsub_trio.testing import open_graphql_ws

    async def connection(host, port, spec, ready):
        async with open_graphql_ws(host, port, protocol=spec["protocol"]) as client:
            await client.init()
            ops = [await client.start(query) for query in spec["queries"]]
            pending = set(ops)
            while pending:
                pending.discard((await client.receive()).get("id"))
            ready()
            while True:
                await client.receive()  # keep reading: the kit answers pings

    async def main(host, port, specs):
        left = [len(specs)]
        def ready():
            left[0] -= 1
            if not left[0]:
                print("ready", flush=True)
        async with trio.open_nursery() as nursery:
            for spec in specs:
                nursery.start_soon(connection, host, port, spec, ready)

    trio.run(main, sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3]))
    """
)


@asynccontextmanager
async def client_process(
    port: int,
    specs: list[dict[str, Any]],
    *,
    host: str = "127.0.0.1",
    prefix: Sequence[str] = (),
) -> AsyncIterator[trio.Process]:
    """A real child process holding the given connections, yielded once all of them stream.

    ``specs`` is ``[{"protocol": ..., "queries": [...]}, ...]``; ``prefix``
    runs it elsewhere (e.g. ``Namespace.command()`` for a network namespace).
    The process is killed on exit if the test has not already done so.
    """
    process = await trio.lowlevel.open_process(
        [*prefix, sys.executable, "-c", CLIENT_PROCESS, host, str(port), json.dumps(specs)],
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(20):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(64)
                assert chunk, "the client process exited before it was ready"
                line += chunk
        assert line.startswith(b"ready"), line
        yield process
    finally:
        with suppress(ProcessLookupError):
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


# ---- churn ----------------------------------------------------------------------
#: The fault mix: every cycle picks one. The first three never break the link.
FAULTS = ("clean", "fragment", "latency", "abort", "reset", "close", "partition")
HARMLESS = frozenset({"clean", "fragment", "latency"})
#: No cycle may take longer than this, whatever its fault.
CYCLE_LIMIT = 5.0
CHURN_TAG = "churn"


@dataclass
class ChurnStats:
    """What the churn did; ``unexpected`` lists failures of cycles with harmless faults."""

    cycles: int = 0
    by_fault: Counter[str] = field(default_factory=Counter)
    client_errors: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    stuck: int = 0


def _proxied(proxy: FaultProxy, stream: trio.SocketStream) -> Any:
    """The proxy's side of the connection *stream* made (matched by address)."""
    local = stream.socket.getsockname()
    for conn in proxy.connections:
        if conn.client_address == local:
            return conn
    return None


async def _cycle_body(
    proxy: FaultProxy, rng: random.Random, protocol: str, fault: str, cell: list[Any]
) -> None:
    heal_first = rng.random() < 0.5
    stream = await trio.open_tcp_stream("127.0.0.1", proxy.port)
    async with graphql_ws_over(stream, "127.0.0.1", proxy.port, protocol=protocol) as ws:
        conn = cell[0] = _proxied(proxy, stream)
        if conn is None:
            raise trio.BrokenResourceError("the proxy dropped the connection")
        if fault == "fragment":
            # Tiny pieces upstream (the server's frame parser), small ones back.
            conn.fragment(rng.randint(1, 7), direction="client_to_server")
            conn.fragment(rng.randint(16, 256), direction="server_to_client")
        elif fault == "latency":
            conn.set_latency(rng.uniform(0, 0.003), jitter=rng.uniform(0, 0.003))
        await ws.init()
        op = await ws.start(f'subscription {{ stream(tag: "{CHURN_TAG}", everyMs: 100, cleanupMs: 1) }}')
        await first_data(ws, op)
        if fault in HARMLESS:
            await ws.stop(op)
            if protocol == LEGACY_WS:  # graphql-ws confirms a stop with complete
                while (await ws.receive()) != {"id": op, "type": "complete"}:
                    pass
        elif fault == "abort":
            await trio.aclose_forcefully(stream)  # no close frame: the socket just goes
        elif fault in ("reset", "close"):
            if fault == "reset":
                conn.reset()
            else:
                conn.close()
            with trio.fail_after(CYCLE_LIMIT / 2):
                await ws.closed.wait()  # the client, too, learns the link is gone
            assert ws.close_code == 1006, f"{fault}: the client saw close {ws.close_code}"
        elif fault == "partition":
            conn.partition()
            await trio.sleep(rng.uniform(0, 0.02))  # the fault's duration, not a sync
            if not heal_first:
                await trio.aclose_forcefully(stream)  # its FIN is held until the heal
            conn.heal()


async def churn_cycle(proxy: FaultProxy, rng: random.Random, stats: ChurnStats) -> None:
    """One connect/init/subscribe/abort cycle through *proxy* with one random fault.

    Cycles with a harmless fault (clean, fragment, latency) must succeed;
    the others may fail on the client side in any way a broken link does.
    """
    protocol = rng.choice(PROTOCOLS)
    fault = rng.choice(FAULTS)
    stats.by_fault[fault] += 1
    cell: list[Any] = [None]
    with trio.move_on_after(CYCLE_LIMIT) as limit:
        try:
            await _cycle_body(proxy, rng, protocol, fault, cell)
        except* (ClientClosed, OSError, trio.BrokenResourceError, trio.ClosedResourceError) as group:
            for error in group.exceptions:
                stats.client_errors[type(error).__name__] += 1
            if fault in HARMLESS:
                stats.unexpected.append(f"{fault}/{protocol}: {group.exceptions!r}")
        except* (AssertionError, trio.TooSlowError) as group:
            stats.unexpected.append(f"{fault}/{protocol}: {group.exceptions!r}")
    if limit.cancelled_caught:
        stats.stuck += 1
        stats.unexpected.append(f"{fault}/{protocol}: cycle took over {CYCLE_LIMIT}s")
        if cell[0] is not None:
            cell[0].clear_faults()
    stats.cycles += 1


async def churn(
    proxy: FaultProxy, cycles: int, rng: random.Random, stats: ChurnStats, *, workers: int = 16
) -> None:
    """Run *cycles* churn cycles over *workers* concurrent clients."""
    remaining = [cycles]

    async def worker(seed: int) -> None:
        local = random.Random(seed)  # per worker: the mix stays reproducible under any schedule
        while remaining[0] > 0:
            remaining[0] -= 1
            await churn_cycle(proxy, local, stats)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker, rng.getrandbits(64))


async def churn_for(
    proxy: FaultProxy, seconds: float, rng: random.Random, stats: ChurnStats, *, workers: int = 16
) -> None:
    """Run churn cycles over *workers* concurrent clients for *seconds* (cycles finish)."""
    deadline = trio.current_time() + seconds

    async def worker(seed: int) -> None:
        local = random.Random(seed)
        while trio.current_time() < deadline:
            await churn_cycle(proxy, local, stats)

    async with trio.open_nursery() as nursery:
        for _ in range(workers):
            nursery.start_soon(worker, rng.getrandbits(64))


def soak_app() -> App:
    """The chaos app for a server in another process (``serve tests.chaos:soak_app``)."""
    return chaos_app(Tracker())
