"""A slow consumer against a streamer at full speed: bounded memory, named policy, no spillover.

The slow client reads nothing (the proxy stops reading from the server for
that one connection), so every byte the server wants to send piles up
somewhere; each place it can pile up must stay within its configured
capacity, and a healthy client on the same server must not notice.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import pytest
import trio
import trio.testing

from meshsub_trio import Config, Server
from meshsub_trio.testing import LEGACY_WS, TRANSPORT_WS, FaultProxy, open_graphql_ws

from ..rawws import masked_frame, open_raw_websocket
from . import (
    FLOOD_CAPACITY,
    SLACK,
    Tracker,
    data_type,
    drain_until_closed,
    graphql_ws_over,
    settled_rss,
    tag_number,
)

PAD = 200  # bytes of padding per event: the pile-up outgrows every kernel buffer fast
#: A frame of the flood streamers is at most this long (id, envelope, tag, index, pad).
FRAME_BOUND = PAD + 128
#: Largest gap a healthy 10 ms ticker may see while another client is stalled.
HEALTHY_GAP = 0.3
#: How much the process may grow while 3 floods push 54 MB at a stalled socket.
RSS_BOUND = 4 * 1024 * 1024


@pytest.fixture
def meshsub_config() -> Config:
    """No keep-alive (a stalled reader is alive, just slow), a short outbox, a long write deadline."""
    return Config(port=0, keepalive=0, close_timeout=1.0, outbox_size=8, write_timeout=30.0)


@dataclass
class Occupancy:
    """Peak occupancy of every bounded queue on the server's send path."""

    peaks: dict[str, int] = field(default_factory=dict)
    capacities: dict[str, int] = field(default_factory=dict)

    def record(self, name: str, used: int, capacity: int) -> None:
        if used > self.peaks.get(name, -1):
            self.peaks[name] = used
        self.capacities[name] = capacity


@pytest.fixture
def occupancy(monkeypatch: pytest.MonkeyPatch, meshsub_config: Config) -> Iterator[Occupancy]:
    """Record queue sizes at every insertion (the only moments they can grow).

    Wraps the event buffer's ``put``, the connection outbox and the native
    socket's unsent backlog, whichever of them this version of the server has.
    """
    from meshsub_trio._core import _delivery
    from meshsub_trio._transports import _native_ws
    from meshsub_trio.brokers import _buffer

    seen = Occupancy()
    put = _buffer.EventBuffer.put

    def buffer_put(self: Any, item: Any) -> bool:
        kept = put(self, item)
        seen.record("event buffer", len(self), self.capacity)
        return kept

    monkeypatch.setattr(_buffer.EventBuffer, "put", buffer_put)
    send = _delivery.Delivery.send

    async def queued(self: Any, owner: Any, frame: bytes) -> None:
        await send(self, owner, frame)
        seen.record("outbox", len(self), self.capacity)

    monkeypatch.setattr(_delivery.Delivery, "send", queued)
    write = getattr(_native_ws.NativeWebSocket, "_write", None)
    limit = getattr(meshsub_config, "write_buffer_size", None)
    if write is not None and limit is not None:
        # Direct writes stop at the limit; the writer may add one drained
        # outbox (and a ping) on top, so that is the true capacity.
        capacity = limit + (meshsub_config.outbox_size + 2) * FRAME_BOUND

        def socket_write(self: Any, data: bytes) -> None:
            write(self, data)
            seen.record("socket backlog", len(self._backlog), capacity)

        monkeypatch.setattr(_native_ws.NativeWebSocket, "_write", socket_write)
    yield seen


def assert_within_capacity(seen: Occupancy) -> None:
    assert "event buffer" in seen.peaks and "outbox" in seen.peaks, seen
    for name, peak in seen.peaks.items():
        assert peak <= seen.capacities[name], f"{name}: {peak} > {seen.capacities[name]}"
    assert seen.peaks["event buffer"] == FLOOD_CAPACITY  # it did fill: the test stalled it
    assert seen.peaks["outbox"] == seen.capacities["outbox"]


def dropped(server: Server, policy: str) -> float:
    """``meshsub_dropped_events_total`` for *policy* (0 when never incremented)."""
    text = server.metrics.render().decode()
    found = re.search(rf'meshsub_dropped_events_total{{policy="{policy}"}} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


class Ticker:
    """A healthy client's 10 ms ticker: records every arrival to measure its worst gap."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        self.values: list[int] = []

    async def run(self, server: Server, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_graphql_ws("127.0.0.1", server.port) as client:
            await client.init()
            op = await client.start("subscription { ticks(everyMs: 10) }")
            started = False
            async for payload in client.results(op):
                self.arrivals.append(trio.current_time())
                self.values.append(payload["data"]["ticks"])
                if not started:
                    started = True
                    task_status.started()

    def worst_gap(self, since: float) -> float:
        times = [t for t in self.arrivals if t >= since]
        assert len(times) > 5, "the healthy client stopped receiving"
        return max(b - a for a, b in pairwise(times))


async def test_stalled_reader_keeps_every_queue_within_capacity_and_others_unaffected(
    meshsub_server: Server,
    fault_proxy: FaultProxy,
    tracker: Tracker,
    occupancy: Occupancy,
    nursery: trio.Nursery,
) -> None:
    """Three 30 000-event floods into a client that reads nothing.

    Bounds: event buffer <= its capacity (16), outbox <= ``outbox_size``,
    unsent socket bytes <= ``write_buffer_size`` + one drained outbox; RSS
    grows <= 4 MiB while 54 MB are produced; a healthy client's 10 ms ticks
    never pause longer than 0.3 s.
    """
    server = meshsub_server
    ticker = Ticker()
    await nursery.start(ticker.run, server)
    stream = await trio.open_tcp_stream("127.0.0.1", fault_proxy.port)
    async with graphql_ws_over(stream, "127.0.0.1", fault_proxy.port) as slow:
        await slow.init()
        (conn,) = fault_proxy.connections
        conn.stop_reading()
        tags = [f"flood{i}" for i in range(3)]
        for tag in tags:
            await slow.start(
                f'subscription {{ floodDrop(tag: "{tag}", n: 30000, pad: {PAD}, gated: true) }}'
            )
        with trio.fail_after(5):
            await tracker.wait_for(lambda t: all(t.started[tag] for tag in tags))
        before = settled_rss()
        began = trio.current_time()
        for tag in tags:
            tracker.gate(tag).set()
        with trio.fail_after(30):
            await tracker.wait_for(lambda t: t.emitted_all >= set(tags))
        grown = settled_rss() - before
        assert ticker.worst_gap(began) <= HEALTHY_GAP
        assert_within_capacity(occupancy)
        assert grown <= RSS_BOUND, f"RSS grew {grown / 1e6:.1f} MB"
        assert server.metrics.live_operations == 4  # nothing was dropped or closed meanwhile
        conn.resume_reading()
        seen: dict[str, list[int]] = {tag: [] for tag in tags}
        done = 0
        with trio.fail_after(10):
            while done < len(tags):
                message = await slow.receive()
                if message["type"] == "complete":
                    done += 1
                elif message["type"] == "next":
                    tag, n = tag_number(message)
                    seen[tag].append(n)
    for tag, values in seen.items():
        assert values == sorted(set(values)) and values[-1] == 29999, tag
    with trio.fail_after(2):
        await server.metrics.wait_for(lambda m: m.live_operations == 1)
    delivered = sum(len(values) for values in seen.values())
    assert dropped(server, "drop_oldest") == 3 * 30000 - delivered


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
@pytest.mark.parametrize("policy", ["drop_oldest", "coalesce", "close"])
async def test_overflow_policy_applies_as_configured(
    meshsub_server: Server,
    fault_proxy: FaultProxy,
    tracker: Tracker,
    occupancy: Occupancy,
    policy: str,
    protocol: str,
) -> None:
    """5000 events (1.3 MB) burst into a stalled reader through a 16-slot buffer.

    DROP_OLDEST: the newest survive, in order, and delivered + dropped ==
    emitted (every loss counted). COALESCE: in order, ending with the latest.
    CLOSE: an unbroken prefix (nothing skipped silently), then an ``error``.
    """
    server = meshsub_server
    field_name = {"drop_oldest": "floodDrop", "coalesce": "floodCoalesce", "close": "floodClose"}
    count = 5000
    stream = await trio.open_tcp_stream("127.0.0.1", fault_proxy.port)
    async with graphql_ws_over(stream, "127.0.0.1", fault_proxy.port, protocol=protocol) as slow:
        await slow.init()
        (conn,) = fault_proxy.connections
        conn.stop_reading()
        op = await slow.start(
            f'subscription {{ {field_name[policy]}(tag: "p", n: {count}, pad: {PAD}, gated: true) }}'
        )
        with trio.fail_after(5):
            await tracker.wait_for(lambda t: t.started["p"] == 1)
        tracker.gate("p").set()
        with trio.fail_after(10):
            # CLOSE too: the consumer only sees the overflow once the socket
            # takes its frames again, so the streamer may well finish first.
            await tracker.wait_for(lambda t: "p" in t.emitted_all or t.cleaned["p"] == 1)
        assert_within_capacity(occupancy)
        conn.resume_reading()
        values: list[int] = []
        with trio.fail_after(10):
            while True:
                message = await slow.receive()
                assert message.get("id") == op, message
                if message["type"] != data_type(protocol):
                    break
                values.append(tag_number(message)[1])
    assert values, "nothing was delivered at all"
    with trio.fail_after(2):
        await server.metrics.wait_idle()
    assert tracker.cleaned["p"] == 1
    if policy == "close":
        assert message["type"] == "error"
        errors = message["payload"] if protocol == TRANSPORT_WS else [message["payload"]]
        assert f"more than {FLOOD_CAPACITY} events behind" in errors[0]["message"]
        assert values == list(range(len(values)))  # nothing silently skipped before the error
        assert dropped(server, "close") >= 1
        return
    assert message["type"] == "complete"
    assert values == sorted(set(values)) and values[-1] == count - 1
    if policy == "drop_oldest":
        assert dropped(server, "drop_oldest") == count - len(values)
    else:
        assert dropped(server, "coalesce") >= 1
        assert len(values) < count


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_write_deadline_drops_the_stalled_socket_with_1008(
    meshsub_server: Server,
    fault_proxy: FaultProxy,
    tracker: Tracker,
    nursery: trio.Nursery,
    protocol: str,
) -> None:
    """A socket that takes nothing for ``write_timeout`` (0.5 s) is dropped.

    Bound: gone within ``write_timeout`` + 1 s of the stall (filling the
    pipe takes well under that at full speed); close recorded as 1008; its
    operations' cleanups run once; a healthy client's ticks never pause
    longer than 0.3 s.
    """
    server = meshsub_server
    server.config.write_timeout = 0.5  # (this test's own Config instance)
    ticker = Ticker()
    await nursery.start(ticker.run, server)
    stream = await trio.open_tcp_stream("127.0.0.1", fault_proxy.port)
    async with graphql_ws_over(stream, "127.0.0.1", fault_proxy.port, protocol=protocol) as slow:
        await slow.init()
        (conn,) = fault_proxy.connections
        await slow.start(f'subscription {{ floodDrop(tag: "w", pad: {PAD}) }}')
        await slow.start('subscription { stream(tag: "w2", everyMs: 1) }')
        with trio.fail_after(5):
            await tracker.wait_for(lambda t: t.started["w"] == 1 and t.started["w2"] == 1)
        began = trio.current_time()
        conn.stop_reading()
        with trio.fail_after(server.config.write_timeout + 1.0 + SLACK):
            await server.metrics.wait_for(lambda m: m.live_connections == 1)
        assert trio.current_time() - began <= server.config.write_timeout + 1.0
        assert 'meshsub_closes_total{code="1008"} 1.0' in server.metrics.render().decode()
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 1)
        assert tracker.cleaned["w"] == 1 and tracker.cleaned["w2"] == 1
        assert tracker.cleanup_completed["w2"] == 1
        assert ticker.worst_gap(began) <= HEALTHY_GAP
        conn.resume_reading()
        with trio.fail_after(5):
            await drain_until_closed(slow)
        assert slow.close_code == 1006  # dropped without a close frame: it cannot hear one


@pytest.mark.parametrize("kind", ["ping frames", "graphql-transport-ws pings"])
async def test_pings_from_a_client_that_never_reads_stay_bounded(
    meshsub_server: Server, fault_proxy: FaultProxy, occupancy: Occupancy, kind: str
) -> None:
    """A client that sends pings as fast as it can and reads nothing.

    Every ping asks for an answer the client will not read, so the answers
    must back up into the client's own send path (the server stops reading),
    not into server memory. The client pushes 12 MB (or for 3 s, if the
    server pushes back first): more than kernel buffers can hide. Bounds: the
    unsent socket backlog stays within its capacity; RSS grows <= 4 MiB.

    The proxy does the not-reading: shrinking a raw client's receive buffer
    after the handshake would wedge TCP itself (the window already offered
    cannot shrink, so the server's segments, and the ACKs they carry, drop).
    """
    raw = await open_raw_websocket(fault_proxy.port)
    try:
        assert await raw.init() == {"type": "connection_ack"}
        (conn,) = fault_proxy.connections
        conn.stop_reading()
        if kind == "ping frames":
            unit = masked_frame(b"p" * 125, opcode=0x9)  # the largest control frame
        else:
            unit = masked_frame(b'{"type":"ping","payload":{"pad":"' + b"p" * 90 + b'"}}')
        burst = unit * 256
        before = settled_rss()
        pushed = 0
        with trio.move_on_after(3.0):
            while pushed < 12 * 1024 * 1024:
                await raw.stream.send_all(burst)
                pushed += len(burst)
        with trio.fail_after(10):
            await trio.testing.wait_all_tasks_blocked(0.05)  # the server read all it will read
        grown = settled_rss() - before
        for name, peak in occupancy.peaks.items():
            assert peak <= occupancy.capacities[name], (
                f"{name}: {peak} > {occupancy.capacities[name]} after {pushed / 1e6:.1f} MB of {kind}"
            )
        assert grown <= RSS_BOUND, f"RSS grew {grown / 1e6:.1f} MB for {pushed / 1e6:.1f} MB of {kind}"
        # A server that pushed back has stopped reading, so it would hear a
        # close only after write_timeout (30 s here); an RST it notices at once.
        conn.reset()
        with trio.fail_after(2):
            await meshsub_server.metrics.wait_idle()
    finally:
        await raw.aclose()


async def test_slow_consumer_closing_normally_is_recorded_as_its_close(
    meshsub_server: Server,
    fault_proxy: FaultProxy,
    tracker: Tracker,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A stalled reader sends its close frame while the server still has bytes for it.

    Bounds: the server records the client's 1000 (not an internal error),
    logs no error, runs the cleanup once and lets the socket go within
    ``close_timeout`` + slack (its close reply cannot be delivered).
    """
    server = meshsub_server
    stream = await trio.open_tcp_stream("127.0.0.1", fault_proxy.port)
    async with graphql_ws_over(stream, "127.0.0.1", fault_proxy.port) as slow:
        await slow.init()
        (conn,) = fault_proxy.connections
        conn.stop_reading()
        await slow.start(f'subscription {{ floodDrop(tag: "c", n: 3000, pad: {PAD}) }}')
        with trio.fail_after(10):
            await tracker.wait_for(lambda t: "c" in t.emitted_all)  # ~0.8 MB is stuck
        began = trio.current_time()
        with trio.fail_after(server.config.close_timeout + 1 + SLACK):
            await slow.aclose(1000)  # sends the close frame; upstream still flows
            await server.metrics.wait_idle()
        assert trio.current_time() - began <= server.config.close_timeout + 1 + SLACK
    text = server.metrics.render().decode()
    assert 'meshsub_closes_total{code="1000"} 1.0' in text, re.findall(r"meshsub_closes_total.*", text)
    assert tracker.cleaned["c"] == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() + (r.exc_text or "") for r in errors]
