"""The resumable log: one contract, checked on MemoryBroker and NatsBroker alike.

Cursors (``Delivery.seq``) come from the broker: per broker in memory, the
JetStream stream sequence over NATS (shared by every process). Tests take
cursors from what a reader observed, never from arithmetic on them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from meshsub_trio import BufferOverflow, Overflow
from meshsub_trio.brokers import (
    ConnectionState,
    CursorError,
    CursorExpired,
    Delivery,
    LogStream,
    MemoryBroker,
)
from meshsub_trio.testing import NatsServer, open_nats_server
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect, take

__all__ = ["nats_server"]

TOPIC = "meshery.events.user-1"
OTHER = "meshery.events.user-2"
RETAIN = 300  # messages the log keeps (per topic in memory, per stream on NATS)


@pytest.fixture(params=["memory", "nats"])
async def log_broker(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryBroker(log_capacity=RETAIN)
        return
    async with open_nats_server() as server, connect(
        server, log=LogStream(name="MESHERY", subjects=("meshery.>",), max_msgs=RETAIN, heartbeat=0.5)
    ) as broker:
        yield broker


async def settle(broker: Any) -> None:
    """Make sure published messages are in the log (a no-op in memory)."""
    if hasattr(broker, "flush"):
        with trio.fail_after(SOON):
            await broker.flush()


async def observe(broker: Any, count: int) -> list[Delivery[Any]]:
    """Publish ``{"n": 0..count-1}`` and return their deliveries (with cursors).

    In chunks, read as they go: a reader further behind than the retention
    would miss what the stream evicted before delivering it.
    """
    seen: list[Delivery[Any]] = []
    async with broker.subscribe_log(TOPIC, capacity=count + 1) as log:
        for start in range(0, count, 50):
            chunk = range(start, min(start + 50, count))
            for n in chunk:
                broker.publish(TOPIC, {"n": n})
            seen += await take(log, len(chunk))
    return seen


async def test_after_none_sees_only_new_messages(log_broker: Any) -> None:
    await observe(log_broker, 3)
    await settle(log_broker)
    async with log_broker.subscribe_log(TOPIC) as log:
        log_broker.publish(TOPIC, {"n": "new"})
        [delivery] = await take(log, 1)
        assert delivery.message == {"n": "new"}


async def test_resume_replays_after_cursor_then_continues_live(log_broker: Any) -> None:
    seen = await observe(log_broker, 20)
    assert [d.message["n"] for d in seen] == list(range(20))
    async with log_broker.subscribe_log(TOPIC, after=seen[9].seq) as log:
        assert await take(log, 10) == seen[10:]
        log_broker.publish(TOPIC, {"n": 20})
        [live] = await take(log, 1)
        assert live.message == {"n": 20}
        assert live.seq > seen[-1].seq


async def test_resume_ignores_other_topics(log_broker: Any) -> None:
    seen = await observe(log_broker, 5)
    log_broker.publish(OTHER, {"other": True})
    log_broker.publish(TOPIC, {"n": 5})
    async with log_broker.subscribe_log(TOPIC, after=seen[2].seq) as log:
        got = await take(log, 3)
    assert [d.message for d in got] == [{"n": 3}, {"n": 4}, {"n": 5}]


async def test_no_gap_no_duplicate_when_resuming_during_publishing(log_broker: Any) -> None:
    total = RETAIN - 20  # all of it stays in the log
    async with log_broker.subscribe_log(TOPIC, capacity=total + 1) as observer:
        async with trio.open_nursery() as nursery:

            async def publisher() -> None:
                for n in range(total):
                    log_broker.publish(TOPIC, {"n": n})
                    if n % 20 == 19:
                        await trio.sleep(0)  # let readers interleave with publishing

            nursery.start_soon(publisher)
            seen = await take(observer, 150)
            cursor = seen[99].seq
            # The publisher is still going: replay and live overlap right now.
            async with log_broker.subscribe_log(TOPIC, after=cursor, capacity=total) as log:
                got = await take(log, total - 100)
        seen += await take(observer, total - 150)
    assert [d.message["n"] for d in got] == list(range(100, total))
    assert got == seen[100:]


async def test_cursor_older_than_retained_log_expires(log_broker: Any) -> None:
    seen = await observe(log_broker, RETAIN + 100)
    await settle(log_broker)
    oldest_kept = seen[100]
    with pytest.raises(CursorExpired) as info:
        async with log_broker.subscribe_log(TOPIC, after=seen[98].seq):
            pass
    assert info.value.oldest == seen[99].seq
    assert info.value.cursor == seen[98].seq
    # The newest evicted cursor is still fine: nothing after it is missing.
    async with log_broker.subscribe_log(TOPIC, after=seen[99].seq) as log:
        [first] = await take(log, 1)
        assert first == oldest_kept


async def test_cursor_ahead_of_log_is_refused(log_broker: Any) -> None:
    seen = await observe(log_broker, 3)
    with pytest.raises(CursorError) as info:
        async with log_broker.subscribe_log(TOPIC, after=seen[-1].seq + 1000):
            pass
    assert not isinstance(info.value, CursorExpired)


async def test_replay_larger_than_reader_buffer_is_lossless(log_broker: Any) -> None:
    seen = await observe(log_broker, 200)
    async with log_broker.subscribe_log(TOPIC, after=0, capacity=4) as log:
        got: list[Delivery[Any]] = []
        with trio.fail_after(SOON):
            async for delivery in log:
                got.append(delivery)
                await trio.sleep(0)
                if len(got) == 200:
                    break
    assert got == seen


async def test_memory_live_overflow_closes_and_cursor_resumes() -> None:
    broker = MemoryBroker(log_capacity=RETAIN)
    async with broker.subscribe_log(TOPIC, capacity=4, policy=Overflow.CLOSE) as log:
        for n in range(10):
            broker.publish(TOPIC, {"n": n})
        with pytest.raises(BufferOverflow):
            await log.get()
    async with broker.subscribe_log(TOPIC, after=0, capacity=4) as log:
        assert [d.message["n"] for d in await take(log, 10)] == list(range(10))


async def test_nats_live_reader_is_lossless_with_backpressure(nats_server: NatsServer) -> None:
    async with connect(nats_server) as broker, broker.subscribe_log(TOPIC, capacity=4) as log:
        for n in range(1000):
            broker.publish(TOPIC, {"n": n})
        await settle(broker)
        got = await take(log, 1000)
        assert [d.message["n"] for d in got] == list(range(1000))


async def test_cursor_is_the_same_on_every_process(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a, connect(nats_server) as b:
        async with a.subscribe_log(TOPIC) as on_a, b.subscribe_log(TOPIC) as on_b:
            for n in range(20):
                a.publish(TOPIC, {"from": "a", "n": n})
                b.publish(TOPIC, {"from": "b", "n": n})
            seen_a = await take(on_a, 40)
            seen_b = await take(on_b, 40)
        # JetStream stores one order: every reader sees it, cursors included.
        assert seen_a == seen_b
        # A cursor handed out by process a resumes on process b.
        async with b.subscribe_log(TOPIC, after=seen_a[24].seq) as resumed:
            assert await take(resumed, 15) == seen_a[25:]


async def test_topics_outside_the_stream_have_no_log(nats_server: NatsServer) -> None:
    async with connect(nats_server) as broker:
        with pytest.raises(ValueError, match="not captured"):
            async with broker.subscribe_log("other.topic"):
                pass
    async with connect(nats_server, log=None) as broker:
        with pytest.raises(RuntimeError, match="no JetStream log"):
            async with broker.subscribe_log(TOPIC):
                pass


async def test_memory_log_can_be_turned_off() -> None:
    broker = MemoryBroker(log_capacity=0)
    broker.publish(TOPIC, {"n": 1})
    with pytest.raises(RuntimeError):
        async with broker.subscribe_log(TOPIC):
            pass


async def test_memory_broker_state_and_close() -> None:
    broker = MemoryBroker()
    assert broker.state is ConnectionState.CONNECTED
    async with broker.subscribe(TOPIC) as inbox, broker.subscribe_log(TOPIC) as log:
        with trio.move_on_after(0.01) as scope:
            await broker.wait_state_change(ConnectionState.CONNECTED)  # never changes
        assert scope.cancelled_caught
        broker.publish(TOPIC, {"n": 1})
        broker.close()
        assert broker.state is ConnectionState.CLOSED
        assert await broker.wait_state_change(ConnectionState.CONNECTED) is ConnectionState.CLOSED
        assert [m async for m in inbox] == [{"n": 1}]  # queued items, then the end
        assert [d.message async for d in log] == [{"n": 1}]
