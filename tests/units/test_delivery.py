"""The delivery path and cohorts on their own, without sockets.

A :class:`Delivery` is driven with an in-memory socket that takes bytes
without waiting (as the native host's does) or with none (as an HTTP stream
has), and a framer that makes envelopes visible. What is pinned down: the
fast-or-queue decision, order, the bound of the frame queue, what a stopped
operation still gets (nothing), lanes and their overflow policies, and a
cohort executing once for all its lanes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from meshsub_trio import App, BufferClosed, BufferOverflow, Config, Metrics, Overflow, streamer
from meshsub_trio._core._delivery import Delivery
from meshsub_trio._core._state import ServerState

pytestmark = pytest.mark.filterwarnings("error")


class Framer:
    """Envelopes anyone can read: ``N<id>:<payload>``, ``C<id>``, ``E<id>``."""

    result_type = b"N"

    def __init__(self) -> None:
        self.ended: set[str] = set()

    def may_send(self, op_id: str) -> bool:
        return op_id not in self.ended

    def wrap(self, op_id: str, payload: bytes) -> bytes:
        return b"N" + op_id.encode() + b":" + payload

    def next(self, op_id: str, payload: bytes) -> bytes | None:
        return None if op_id in self.ended else b"N" + op_id.encode() + b":" + payload

    def complete(self, op_id: str) -> bytes | None:
        if op_id in self.ended:
            return None
        self.ended.add(op_id)
        return b"C" + op_id.encode()

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> bytes | None:
        if op_id in self.ended:
            return None
        self.ended.add(op_id)
        return b"E" + op_id.encode()


class MemorySocket:
    """Takes every write at once; ``backlog`` is whatever the test says."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.writes = 0
        self.encodes = 0
        self.backlog = 0
        self.on_backlog = lambda: None

    def write_frames(self, frames: list[bytes]) -> None:
        self.write_encoded(self.encode_frames(frames))

    def encode_frames(self, frames: list[bytes]) -> bytes:
        self.encodes += 1
        return b"\x00".join(frames)

    def write_encoded(self, data: bytes) -> None:
        self.writes += 1
        self.written.extend(data.split(b"\x00"))


@dataclass
class Sender:
    id: str
    stopped_by_client: bool = False
    sent: int = 0
    overflows: list[tuple[Overflow, int]] = field(default_factory=list)

    def overflowed(self, policy: Overflow, count: int, capacity: int) -> None:
        self.overflows.append((policy, count))


def direct_delivery(capacity: int = 4, limit: int = 1 << 16) -> tuple[Delivery, MemorySocket]:
    socket = MemorySocket()
    delivery = Delivery(
        Framer(),
        Metrics(),
        protocol="graphql-transport-ws",
        capacity=capacity,
        direct=socket,  # type: ignore[arg-type]
        backlog_limit=limit,
    )
    return delivery, socket


# ---- the fast path and the queue ---------------------------------------------------------


async def test_a_frame_with_nothing_ahead_is_written_at_once() -> None:
    delivery, socket = direct_delivery()
    woken: list[bool] = []
    delivery.wake_writer = lambda: woken.append(True)
    op = Sender("1")
    await delivery.send_payload(op, b"a")
    await delivery.complete(op)
    assert socket.written == [b"N1:a", b"C1"]
    assert op.sent == 2 and not woken and not delivery.has_work


async def test_a_backed_up_socket_queues_in_order_and_the_writer_takes_it_all() -> None:
    delivery, socket = direct_delivery(limit=10)
    woken: list[bool] = []
    delivery.wake_writer = lambda: woken.append(True)
    socket.backlog = 10  # at the limit: nothing may pass
    op = Sender("1")
    for payload in (b"a", b"b"):
        await delivery.send_payload(op, payload)
    socket.backlog = 0
    await delivery.send(None, b"ping")  # must not overtake the queued frames
    assert socket.written == [] and woken
    assert delivery.take() == [b"N1:a", b"N1:b", b"ping"]
    assert not delivery.has_work and delivery.can_write_now()


async def test_producers_wait_while_the_frame_queue_is_full() -> None:
    delivery, _ = direct_delivery(capacity=2, limit=0)  # limit 0: never direct
    op = Sender("1")
    await delivery.send_payload(op, b"a")
    await delivery.send_payload(op, b"b")
    done = trio.Event()

    async def third() -> None:
        await delivery.send_payload(op, b"c")
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(third)
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set() and len(delivery) == 2
        assert delivery.take() == [b"N1:a", b"N1:b"]  # room: the producer goes on
        await done.wait()
    assert delivery.take() == [b"N1:c"]


async def test_a_stopped_operation_gets_nothing_more() -> None:
    delivery, _ = direct_delivery(limit=0)
    op, other = Sender("1"), Sender("2")
    await delivery.send_payload(op, b"a")
    await delivery.send_payload(other, b"b")
    op.stopped_by_client = True
    await delivery.complete(op)  # its id may be someone else's now: no complete
    await delivery.error(op, [{"message": "x"}])
    assert delivery.take() == [b"N2:b"]


async def test_a_closed_delivery_queues_nothing_and_releases_waiters() -> None:
    delivery, _ = direct_delivery(capacity=1, limit=0)
    op = Sender("1")
    await delivery.send_payload(op, b"a")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(delivery.send_payload, op, b"b")
        await trio.testing.wait_all_tasks_blocked()
        delivery.close()  # the waiting producer returns
    await delivery.send_payload(op, b"c")
    assert delivery.take() == [b"N1:a"]
    assert not delivery.can_write_now()


async def test_without_a_direct_socket_everything_is_queued() -> None:
    delivery = Delivery(Framer(), Metrics(), protocol="sse", capacity=8)
    op = Sender("s")
    assert not delivery.can_write_now()
    await delivery.send_payload(op, b"a")
    await delivery.complete(op)
    assert delivery.take() == [b"Ns:a", b"Cs"]


# ---- lanes ---------------------------------------------------------------------------


def test_a_lane_writes_a_burst_in_one_call_when_nothing_is_ahead() -> None:
    delivery, socket = direct_delivery()
    op = Sender("7")
    lane = delivery.lane(op, 4, Overflow.DROP_OLDEST)
    assert lane.put_many([b"a", b"b", b"c"]) is True
    assert socket.written == [b"N7:a", b"N7:b", b"N7:c"] and socket.writes == 1
    assert op.sent == 3


def test_a_fan_out_frames_a_burst_once_per_operation_id() -> None:
    """Lanes on different connections share the wire bytes of a burst when
    their operation ids match; each connection's own check still applies."""
    sockets, lanes, senders = [], [], []
    for op_id in ("1", "1", "2", "1"):
        delivery, socket = direct_delivery()
        sender = Sender(op_id)
        sockets.append(socket)
        senders.append(sender)
        lanes.append(delivery.lane(sender, 4, Overflow.DROP_OLDEST))
    ended = lanes[3].delivery.framer
    assert isinstance(ended, Framer)
    ended.ended.add("1")  # this connection's operation already ended
    cache: dict[tuple[bytes, str], bytes] = {}
    for lane in lanes:
        assert lane.put_many([b"a", b"b"], 0.0, cache) is True
    assert [s.written for s in sockets] == [
        [b"N1:a", b"N1:b"], [b"N1:a", b"N1:b"], [b"N2:a", b"N2:b"], []
    ]
    assert sum(s.encodes for s in sockets) == 2  # once for "1", once for "2"
    assert [s.sent for s in senders] == [2, 2, 2, 0]


def test_a_lane_buffers_under_its_policy_and_drains_in_order() -> None:
    delivery, socket = direct_delivery(limit=1)
    socket.backlog = 1
    op = Sender("7")
    lane = delivery.lane(op, 2, Overflow.DROP_OLDEST)
    assert lane.put_many([b"a", b"b", b"c"]) is False
    assert op.overflows == [(Overflow.DROP_OLDEST, 1)] and lane.dropped == 1
    socket.backlog = 0
    # Something buffered: later values queue behind it, even though the socket is free.
    assert lane.put_many([b"d"]) is False
    assert delivery.take() == [b"N7:c", b"N7:d"]
    assert lane.put_many([b"e"]) is True and socket.written == [b"N7:e"]


async def test_a_lane_that_closes_wakes_its_operation_after_what_was_buffered() -> None:
    delivery, _ = direct_delivery(limit=0)
    op = Sender("7")
    lane = delivery.lane(op, 4, Overflow.DROP_OLDEST)
    lane.put(b"a")
    woke = trio.Event()

    async def member() -> None:
        parked = lane.until_closed()
        assert parked is not None
        await parked
        woke.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(member)
        await trio.testing.wait_all_tasks_blocked()
        lane.close(RuntimeError("source failed"))
        assert not woke.is_set()  # the writer has not drained it yet
        assert delivery.take() == [b"N7:a"]
    assert woke.is_set() and isinstance(lane.error, RuntimeError)
    assert lane.until_closed() is None


def test_the_close_policy_ends_the_lane_with_an_overflow() -> None:
    delivery, _ = direct_delivery(limit=0)
    op = Sender("7")
    lane = delivery.lane(op, 1, Overflow.CLOSE)
    lane.put_many([b"a", b"b"])
    # A subscriber this far behind is cut off at once: what it buffered is dropped.
    assert delivery.take() == []
    assert isinstance(lane.error, BufferOverflow) and lane.until_closed() is None
    assert op.overflows == [(Overflow.CLOSE, 1)]


def test_a_detached_lane_refuses_more() -> None:
    delivery, _ = direct_delivery()
    lane = delivery.lane(Sender("7"), 1, Overflow.DROP_OLDEST)
    lane.detach()
    with pytest.raises(BufferClosed):
        lane.put(b"a")


# ---- cohorts -------------------------------------------------------------------------

SCHEMA = "type Query { ok: Boolean } type Subscription { ticks(n: Int!): Int! }"


async def test_a_cohort_executes_once_and_gives_every_lane_the_same_bytes() -> None:
    emitted = trio.Event()
    runs: list[int] = []

    @streamer(share="events")
    async def ticks(ctx: Any, args: dict[str, Any], emit: Any) -> None:
        runs.append(1)
        for n in range(args["n"]):
            emit(n)
        emitted.set()
        await trio.sleep_forever()

    state = ServerState(App(SCHEMA, streamers={"ticks": ticks}), Config())
    engine = state.engine
    delivery, socket = direct_delivery()
    query = "subscription { ticks(n: 3) }"
    lanes = [delivery.lane(Sender(str(i)), 8, Overflow.DROP_OLDEST) for i in range(2)]
    async with state.cohorts.running():
        cohort = None
        for lane in lanes:
            prepared = await engine.prepare_async(query, None, None, None)
            assert not isinstance(prepared, list)
            source = await engine.open_source(prepared)
            key = ("k", b"", None, None)
            joined = state.cohorts.join(key, prepared, source, lane)  # type: ignore[arg-type]
            assert cohort is None or joined is cohort
            cohort = joined
            if joined.prepared is not prepared:
                prepared.release()
        await emitted.wait()
        with trio.fail_after(5):
            while len(socket.written) < 6:
                await trio.testing.wait_all_tasks_blocked()
        assert cohort is not None and cohort.events == 3 and runs == [1]
        for lane in lanes:
            cohort.remove(lane)
    by_lane = sorted(socket.written)
    assert by_lane == sorted(
        b"N%d:" % i + b'{"data":{"ticks":%d}}' % n for i in range(2) for n in range(3)
    )

