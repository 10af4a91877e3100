"""The bounded buffer and the in-memory broker on their own, without sockets.

The socket suites prove these through whole servers; here each policy and
each end of a stream is pinned down directly, and Hypothesis checks the
buffer's promises for any sequence of puts and takes.
"""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from meshsub_trio import (
    BufferClosed,
    BufferOverflow,
    CursorError,
    CursorExpired,
    EventBuffer,
    MemoryBroker,
    Overflow,
)

# ---- EventBuffer -------------------------------------------------------------------------


def drain(buffer: EventBuffer[int]) -> list[int]:
    taken = []
    while True:
        try:
            taken.append(buffer.get_nowait())
        except trio.WouldBlock:
            return taken


def test_drop_oldest_keeps_the_newest_and_counts() -> None:
    buffer: EventBuffer[int] = EventBuffer(3, Overflow.DROP_OLDEST)
    kept = [buffer.put(n) for n in range(5)]
    assert kept == [True, True, True, False, False]
    assert drain(buffer) == [2, 3, 4]
    assert buffer.dropped == 2


def test_coalesce_keeps_only_the_latest_once_full() -> None:
    buffer: EventBuffer[int] = EventBuffer(2, Overflow.COALESCE)
    for n in range(5):
        buffer.put(n)
    assert drain(buffer) == [4]
    assert buffer.dropped == 4  # 0 and 1 at the put of 2, then 2 and 3 at the put of 4


def test_close_policy_ends_the_stream_with_overflow() -> None:
    buffer: EventBuffer[int] = EventBuffer(2, Overflow.CLOSE)
    buffer.put(1)
    buffer.put(2)
    assert buffer.put(3) is False
    assert buffer.put(4) is False  # nothing more is queued after the overflow
    with pytest.raises(BufferOverflow) as raised:
        buffer.get_nowait()
    assert raised.value.capacity == 2


def test_close_ends_after_what_was_queued_and_carries_an_error() -> None:
    buffer: EventBuffer[int] = EventBuffer(4)
    buffer.put(1)
    buffer.close()
    assert buffer.get_nowait() == 1
    with pytest.raises(trio.EndOfChannel):
        buffer.get_nowait()
    failing: EventBuffer[int] = EventBuffer(4)
    failing.close(RuntimeError("upstream"))
    with pytest.raises(RuntimeError, match="upstream"):
        failing.get_nowait()


def test_put_after_the_consumer_left_raises() -> None:
    buffer: EventBuffer[int] = EventBuffer(4)
    buffer.detach()
    assert buffer.consumer_closed
    with pytest.raises(BufferClosed):
        buffer.put(1)


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        EventBuffer(0)


async def test_a_waiting_consumer_wakes_on_put_and_on_close() -> None:
    buffer: EventBuffer[int] = EventBuffer(4)
    got: list[int] = []

    async def consume() -> None:
        async for item in buffer:
            got.append(item)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        buffer.put(7)
        await trio.testing.wait_all_tasks_blocked()
        assert got == [7]
        buffer.close()
    assert got == [7]


@given(
    capacity=st.integers(1, 8),
    policy=st.sampled_from([Overflow.DROP_OLDEST, Overflow.COALESCE]),
    steps=st.lists(st.one_of(st.just("take"), st.integers(0, 1000)), max_size=60),
)
def test_any_sequence_keeps_the_bound_the_order_and_the_count(
    capacity: int, policy: Overflow, steps: list[int | str]
) -> None:
    """Never more than *capacity* queued; what arrives is in put order; the
    newest value is never lost; every put is either taken, queued or counted."""
    buffer: EventBuffer[int] = EventBuffer(capacity, policy)
    put: list[int] = []
    taken: list[int] = []
    for step in steps:
        if step == "take":
            if len(buffer):
                taken.append(buffer.get_nowait())
        else:
            assert isinstance(step, int)
            buffer.put(step)
            put.append(step)
        assert len(buffer) <= capacity
    rest = drain(buffer)
    delivered = taken + rest
    positions = [put.index(value) for value in delivered] if len(set(put)) == len(put) else []
    assert positions == sorted(positions)
    if put:
        assert delivered and delivered[-1] == put[-1]
    assert len(delivered) + buffer.dropped == len(put)


# ---- MemoryBroker ------------------------------------------------------------------------


async def test_publish_reaches_every_subscriber_of_the_topic_only() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("a") as first, broker.subscribe("a") as second:
        async with broker.subscribe("b") as other:
            broker.publish("a", {"n": 1})
            assert first.get_nowait() == {"n": 1}
            assert second.get_nowait() == {"n": 1}
            with pytest.raises(trio.WouldBlock):
                other.get_nowait()
        assert broker.subscriber_count("b") == 0
    assert broker.subscriber_count("a") == 0


async def test_close_ends_every_stream_cleanly() -> None:
    broker = MemoryBroker()
    async with broker.subscribe("a") as stream:
        broker.close()
        with pytest.raises(trio.EndOfChannel):
            stream.get_nowait()


async def test_the_log_replays_after_a_cursor_then_follows_live() -> None:
    broker = MemoryBroker(log_capacity=10)
    async with broker.subscribe_log("t") as first:
        for n in range(3):
            broker.publish("t", n)
        cursors = [delivery.seq for delivery in drain_deliveries(first)]
    async with broker.subscribe_log("t", after=cursors[0]) as resumed:
        broker.publish("t", 3)
        assert [d.message for d in drain_deliveries(resumed)] == [1, 2, 3]


async def test_cursors_ahead_or_evicted_are_refused() -> None:
    broker = MemoryBroker(log_capacity=2)
    async with broker.subscribe_log("t"):
        for n in range(5):
            broker.publish("t", n)
    with pytest.raises(CursorError):
        async with broker.subscribe_log("t", after=broker.last_seq + 5):
            pass
    with pytest.raises(CursorExpired):
        async with broker.subscribe_log("t", after=0):
            pass


def drain_deliveries(buffer: EventBuffer) -> list:  # type: ignore[type-arg]
    taken = []
    while True:
        try:
            taken.append(buffer.get_nowait())
        except trio.WouldBlock:
            return taken
