"""The failure story of HTTP streams on the ASGI app under a real hypercorn.

A reader that stops reading, a client that hears nothing but keep-alives, and
hypercorn's graceful shutdown, for graphql-sse (distinct connections) and
Apollo multipart, which share one stream driver, and for an app route's event
stream. The native host's own tests cover the same cases there; what differs
under hypercorn (its send cannot be cancelled, and it announces no shutdown)
is what these pin down, including what still does not hold: a stalled
reader's connection, and so hypercorn's shutdown, lasts until its socket goes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Metrics
from meshsub_trio._app import EventStream, HttpRequest, ServerSentEvent
from meshsub_trio._core import _delivery
from meshsub_trio._wire._sse import SseEvent, SseParser
from meshsub_trio.brokers import _buffer

from ..hypercorn_host import Hosted, start_hypercorn, stream_subscription
from .conftest import Tracker
from .streams_app import make_stream_app
from .test_multipart import DELIMITER, PART_HEAD, PartReader

SSE_ACCEPT = "text/event-stream"
MULTIPART_ACCEPT = 'multipart/mixed;subscriptionSpec="1.0"'
FORMATS = {"sse": SSE_ACCEPT, "multipart": MULTIPART_ACCEPT}
SOON = 5.0  # generous bound for "happens"
SLACK = 0.5  # scheduling allowance on top of a configured deadline
WRITE_TIMEOUT = 1.0
OUTBOX = 8
#: The streamers' buffer (``App``'s default for a streamer), drop-oldest.
STREAMER_CAPACITY = 256
#: Largest gap a healthy 10 ms ticker may see while another client is stalled.
HEALTHY_GAP = 0.3  # as tests/chaos/test_slow_consumer.py allows a WebSocket
GRACEFUL = 0.5
CLOSE_TIMEOUT = 1.0
KEEPALIVE = 0.2


async def serve(nursery: trio.Nursery, app: App, **overrides: Any) -> Hosted:
    """*app* under hypercorn, with this file's shutdown timings."""
    overrides.setdefault("close_timeout", CLOSE_TIMEOUT)
    return await start_hypercorn(nursery, app, graceful_timeout=GRACEFUL, **overrides)


async def open_stalled(served: Hosted, query: str, accept: str) -> trio.SocketStream:
    """A request whose client never reads a byte of the answer.

    The receive buffer is made small before connecting, so the window the
    server sees is small from the start and, never read, stays shut: the
    server's write stops dead instead of trickling on.
    """
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", served.port))
    stream = trio.SocketStream(sock)
    body = json.dumps({"query": query}).encode()
    head = (
        f"POST /api HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n"
        f"Accept: {accept}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)
    return stream


@dataclass
class Occupancy:
    """Peaks of the bounded queues on an HTTP stream's send path, and the first overflow."""

    buffer_peak: int = 0
    outbox_peak: int = 0
    overflowed: trio.Event = field(default_factory=trio.Event)


@pytest.fixture
def occupancy(monkeypatch: pytest.MonkeyPatch) -> Occupancy:
    """Record queue sizes where they grow: the streamer's buffer and the stream's outbox."""
    seen = Occupancy()
    put = _buffer.EventBuffer.put

    def buffer_put(self: Any, item: Any) -> bool:
        kept = put(self, item)
        seen.buffer_peak = max(seen.buffer_peak, len(self))
        if not kept:
            seen.overflowed.set()
        return kept

    send = _delivery.Delivery.send

    async def outbox_send(self: Any, owner: Any, frame: bytes) -> None:
        await send(self, owner, frame)
        seen.outbox_peak = max(seen.outbox_peak, len(self))

    monkeypatch.setattr(_buffer.EventBuffer, "put", buffer_put)
    monkeypatch.setattr(_delivery.Delivery, "send", outbox_send)
    return seen


def dropped(metrics: Metrics, policy: str) -> int:
    return dict(metrics.dropped_by_policy.items()).get(policy, 0)


class Ticker:
    """A healthy SSE client on a 10 ms ticker: records when each event arrives."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.stop = trio.Event()
        self._arrived = trio.Event()

    async def until(self, count: int) -> None:
        """Wait until *count* events have arrived in all."""
        while len(self.arrivals) < count:
            await self._arrived.wait()

    async def run(self, served: Hosted, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        query = "subscription { ticks(everyMs: 10) }"
        async with stream_subscription(served.url, query, SSE_ACCEPT) as response:
            parser = SseParser()
            started = False
            async for chunk in response.aiter_raw():
                for _event in parser.receive_data(chunk):
                    self.arrivals.append(trio.current_time())
                    self._arrived.set()
                    self._arrived = trio.Event()
                    if not started:
                        started = True
                        task_status.started()
                if self.stop.is_set():
                    return

    def worst_gap(self, since: float, until: float) -> float:
        times = [t for t in self.arrivals if since <= t <= until]
        assert len(times) > 5, "the healthy client stopped receiving"
        return max(b - a for a, b in pairwise(times))


@pytest.mark.parametrize("protocol", list(FORMATS))
async def test_stalled_reader_is_bounded_dropped_at_the_deadline_and_harms_nobody(
    nursery: trio.Nursery, tracker: Tracker, occupancy: Occupancy, protocol: str
) -> None:
    """hypercorn's send to a stalled reader never returns, so the stream must not
    wait for it: the buffers stay within capacity (the streamer's policy drops the
    oldest), the operation ends at the write deadline, and another client on the
    same server keeps its pace throughout."""
    served = await serve(
        nursery, make_stream_app(tracker), write_timeout=WRITE_TIMEOUT, outbox_size=OUTBOX
    )
    ticker = Ticker()
    await nursery.start(ticker.run, served)
    began = trio.current_time()
    stalled = await open_stalled(served, "subscription { blobs(size: 4096) }", FORMATS[protocol])
    try:
        with trio.fail_after(SOON):
            await occupancy.overflowed.wait()
        overflowed_at = trio.current_time()
        assert dropped(served.metrics, "drop_oldest") > 0
        assert tracker.cleanups == []
        # The write in progress began before the overflow: its deadline is at most
        # WRITE_TIMEOUT away, and passing it ends the operation (cleanup, buffers).
        with trio.fail_after(WRITE_TIMEOUT + SLACK):
            await served.metrics.wait_for(lambda m: m.cleanups_run == 1)
        assert tracker.cleanups == ["blobs"]
        dropped_at = trio.current_time()
        assert occupancy.buffer_peak == STREAMER_CAPACITY
        assert occupancy.outbox_peak <= OUTBOX
        # The healthy client never noticed, before or after the drop.
        with trio.fail_after(SOON):
            await ticker.until(len(ticker.arrivals) + 10)
        assert ticker.worst_gap(began, trio.current_time()) < HEALTHY_GAP
        assert began <= overflowed_at <= dropped_at
        # hypercorn still holds the response (its shielded send is waiting on the
        # socket), but nothing of the operation: once the client goes, it ends too.
        assert served.requests.value == 2
        assert served.metrics.live_operations == 1  # the ticker
    finally:
        # hypercorn cannot stop before this socket is gone (see the module notes).
        await stalled.aclose()
    with trio.fail_after(SOON):
        await served.requests.wait_for(1)
    assert tracker.cleanups == ["blobs"]
    ticker.stop.set()
    with trio.fail_after(SOON):
        await served.metrics.wait_for(
            lambda m: m.live_operations == 0 and m.cleanups_run == m.operations_started == 2
        )
    assert sorted(tracker.cleanups) == ["blobs", "ticks"]
    served.stop.set()


@pytest.mark.parametrize("protocol", list(FORMATS))
async def test_keepalives_flow_while_no_events_do(
    nursery: trio.Nursery, tracker: Tracker, protocol: str
) -> None:
    """A subscription with nothing to say still writes a keep-alive (SSE comment,
    multipart ``{}`` part) every interval, so proxies and clients (EventSource,
    Apollo's heartbeat check) see the stream alive."""
    served = await serve(nursery, make_stream_app(tracker), keepalive=KEEPALIVE)
    start = b":\n\n" if protocol == "sse" else DELIMITER
    keepalive = b":\n\n" if protocol == "sse" else PART_HEAD + b"{}" + DELIMITER
    silent = "subscription { silent }"
    async with stream_subscription(served.url, silent, FORMATS[protocol]) as response:
        assert response.status_code == 200
        chunks = response.aiter_raw()
        received = b""
        with trio.fail_after(SOON):
            while len(received) < len(start):
                received += await anext(chunks)
        assert received == start
        for _ in range(3):
            received = b""
            with trio.fail_after(KEEPALIVE + SLACK):
                while len(received) < len(keepalive):
                    received += await anext(chunks)
            assert received == keepalive
        assert tracker.cleanups == []
    with trio.fail_after(SOON):
        await served.metrics.wait_for(lambda m: m.cleanups_run == m.operations_started == 1)
    assert tracker.cleanups == ["silent"]
    served.stop.set()


@dataclass
class Reading:
    """One client's view of its stream until the body ends."""

    body: bytes = b""
    ended_cleanly: bool = False
    started: trio.Event = field(default_factory=trio.Event)


async def read_until_the_end(
    served: Hosted, query: str, accept: str, ready: bytes, reading: Reading
) -> None:
    """Read the whole body; *ready* marks that the stream is serving (first event)."""
    async with stream_subscription(served.url, query, accept) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_raw():  # raises if the body is cut short
            reading.body += chunk
            if ready in reading.body:
                reading.started.set()
    reading.ended_cleanly = True


async def test_graceful_shutdown_ends_every_stream_cleanly_and_in_time(
    nursery: trio.Nursery, tracker: Tracker
) -> None:
    """hypercorn's shutdown: it tells the app nothing and cancels it after
    ``graceful_timeout``. Every stream must still end as a shutdown ends it (a
    whole body: SSE after a whole event and without ``complete``, multipart with
    the error part and the close), every cleanup must run once, and serve must
    return within ``graceful_timeout`` plus ``close_timeout``."""
    served = await serve(nursery, make_stream_app(tracker))
    sse, idle, multipart = Reading(), Reading(), Reading()
    async with trio.open_nursery() as clients:
        ticks = "subscription { ticks }"
        clients.start_soon(read_until_the_end, served, ticks, SSE_ACCEPT, b"event: next", sse)
        clients.start_soon(
            read_until_the_end, served, "subscription { silent }", SSE_ACCEPT, b":\n\n", idle
        )
        clients.start_soon(
            read_until_the_end, served, ticks, MULTIPART_ACCEPT, b'"ticks"', multipart
        )
        with trio.fail_after(SOON):
            for reading in (sse, idle, multipart):
                await reading.started.wait()
            await served.metrics.wait_for(lambda m: m.live_operations == 3)
        served.stop.set()
        with trio.fail_after(GRACEFUL + CLOSE_TIMEOUT + SLACK):
            await served.returned.wait()
    assert sse.ended_cleanly and idle.ended_cleanly and multipart.ended_cleanly
    parser = SseParser()
    events: list[SseEvent] = parser.receive_data(sse.body)
    assert len(events) >= 1
    assert all(event.event == "next" for event in events)
    assert sse.body.endswith(b"\n\n")
    assert SseParser().receive_data(idle.body) == []
    assert idle.body.endswith(b"\n\n")
    reader = PartReader()
    *parts, last = reader.feed(multipart.body)
    assert reader.closed
    assert parts and all("ticks" in part["payload"]["data"] for part in parts)
    assert last == {"payload": None, "errors": [{"message": "Server shutting down"}]}
    metrics = served.metrics
    assert metrics.live_operations == 0
    assert metrics.cleanups_run == metrics.operations_started == 3
    assert sorted(tracker.cleanups) == ["silent", "ticks", "ticks"]
    assert served.requests.value == 0


async def test_a_stalled_reader_holds_hypercorn_shutdown_until_its_socket_closes(
    nursery: trio.Nursery, tracker: Tracker
) -> None:
    """What does not hold under hypercorn, pinned so that a change shows: its
    send cannot be cancelled, so a connection whose reader stopped outlives
    ``graceful_timeout`` until the client closes its socket. The operation
    itself is long gone (ended at the write deadline, cleanup run once)."""
    served = await serve(
        nursery, make_stream_app(tracker), write_timeout=WRITE_TIMEOUT, outbox_size=OUTBOX
    )
    stalled = await open_stalled(served, "subscription { blobs(size: 4096) }", SSE_ACCEPT)
    try:
        with trio.fail_after(WRITE_TIMEOUT + SOON):
            await served.metrics.wait_for(lambda m: m.cleanups_run == 1)
        assert tracker.cleanups == ["blobs"]
        served.stop.set()
        with trio.move_on_after(GRACEFUL + CLOSE_TIMEOUT + SLACK):
            await served.returned.wait()
        assert not served.returned.is_set()
        assert served.requests.value == 1
    finally:
        await stalled.aclose()
    with trio.fail_after(SOON):
        await served.returned.wait()
    assert served.requests.value == 0
    assert tracker.cleanups == ["blobs"]
    assert served.metrics.cleanups_run == served.metrics.operations_started == 1


class FeedSource:
    """An app route's event source: counts ``open()`` exits and sees its reader stop."""

    def __init__(self) -> None:
        self.closed = 0
        self.exited = trio.Event()
        #: The stream stopped pulling events (its producer ended).
        self.stopped = trio.Event()
        self.send, self._receive = trio.open_memory_channel[ServerSentEvent](16)

    async def _events(self) -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in self._receive:
                yield event
        finally:
            self.stopped.set()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        try:
            yield self._events()
        finally:
            self.closed += 1
            self.exited.set()


def feed_app(source: FeedSource) -> App:
    async def feed(_request: HttpRequest) -> EventStream:
        return EventStream(source.open, keepalive=0)

    return App("type Query { ok: Boolean }", http_routes={"/feed": feed})


async def test_app_event_stream_stalled_reader_stops_at_the_deadline(
    nursery: trio.Nursery,
) -> None:
    """An app route's stream (Meshery's SSE) under hypercorn: the stalled reader
    stops being fed at the write deadline; ``open()`` is exited once, when the
    client's socket goes (the writer is in hypercorn's send until then)."""
    source = FeedSource()
    served = await serve(nursery, feed_app(source), write_timeout=WRITE_TIMEOUT)
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", served.port))
    stalled = trio.SocketStream(sock)
    try:
        request = f"GET /feed HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\n\r\n"
        await stalled.send_all(request.encode())
        blob = b"x" * 65536
        with trio.fail_after(WRITE_TIMEOUT + SOON):
            while not source.stopped.is_set():
                try:
                    source.send.send_nowait(ServerSentEvent(blob))
                except trio.WouldBlock:
                    await source.stopped.wait()
        assert source.closed == 0
    finally:
        await stalled.aclose()
    with trio.fail_after(SOON):
        await source.exited.wait()
        await served.requests.wait_for(0)
    assert source.closed == 1
    served.stop.set()


async def test_app_event_stream_ends_cleanly_on_hypercorn_shutdown(nursery: trio.Nursery) -> None:
    source = FeedSource()
    served = await serve(nursery, feed_app(source))
    reading = Reading()

    async def read() -> None:
        async with (
            httpx.AsyncClient(timeout=None) as client,
            client.stream("GET", f"{served.url}/feed") as response,
        ):
            async for chunk in response.aiter_raw():  # raises if the body is cut short
                reading.body += chunk
                if b"data: before" in reading.body:
                    reading.started.set()
        reading.ended_cleanly = True

    async with trio.open_nursery() as clients:
        clients.start_soon(read)
        source.send.send_nowait(ServerSentEvent(b"before"))
        with trio.fail_after(SOON):
            await reading.started.wait()
        served.stop.set()
        with trio.fail_after(GRACEFUL + CLOSE_TIMEOUT + SLACK):
            await served.returned.wait()
    assert reading.ended_cleanly
    assert [event.data for event in SseParser().receive_data(reading.body)] == ["before"]
    assert source.closed == 1
