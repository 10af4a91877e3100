"""Shared wildcard subscriptions: many topics, one NATS subscription, local dispatch.

``NatsBroker.share_subscription("meshery.items.*")`` makes every topic under
the pattern go through one NATS subscription per process; the broker then
dispatches by the message's subject. What must not change: each subscriber
gets its own topic's messages, all of them, once, in order, and nothing of
another topic. "Nothing more arrived" is a sentinel published last.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import trio

from meshsub_trio import Overflow
from meshsub_trio.brokers import ConnectionState, NatsBroker
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect, take, wait_for_state

__all__ = ["nats_server"]

PATTERN = "meshery.items.*"
X, Y, Z = "meshery.items.x", "meshery.items.y", "meshery.items.z"
END = {"end": True}


async def until_end(buffer: Any) -> list[Any]:
    """Everything before the sentinel; the buffer must then be empty."""
    items: list[Any] = []
    with trio.fail_after(SOON):
        while (item := await buffer.get()) != END:
            items.append(item)
    assert len(buffer) == 0
    return items


def publish_ends(broker: NatsBroker, topics: Iterable[str]) -> None:
    for topic in topics:
        broker.publish(topic, END)


async def test_topics_under_one_subscription_reach_only_their_own_subscribers(
    nats_server: NatsServer,
) -> None:
    count = 500
    async with (
        connect(nats_server) as a,
        connect(nats_server, shared_subjects=(PATTERN,)) as b,
        b.subscribe(X, capacity=4 * count, policy=Overflow.CLOSE) as x1,
        b.subscribe(X, capacity=4 * count, policy=Overflow.CLOSE) as x2,
        b.subscribe(Y, capacity=4 * count, policy=Overflow.CLOSE) as y1,
    ):
        assert b.nats_subscription_count() == 1
        for n in range(count):  # interleaved, plus a sibling nobody here wants
            a.publish(X, {"t": "x", "n": n})
            a.publish(Y, {"t": "y", "n": n})
            a.publish(Z, {"t": "z", "n": n})
        publish_ends(a, (X, Y))
        assert await until_end(x1) == [{"t": "x", "n": n} for n in range(count)]
        assert await until_end(x2) == [{"t": "x", "n": n} for n in range(count)]
        assert await until_end(y1) == [{"t": "y", "n": n} for n in range(count)]
        assert sum(b.dropped.values()) == 0
        assert b.stats()["decode_errors"] == 0


async def test_unsubscribing_one_topic_leaves_the_other(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a, connect(nats_server) as b:
        b.share_subscription(PATTERN)
        async with b.subscribe(Y) as on_y:
            async with b.subscribe(X) as on_x:
                a.publish(X, {"n": 0})
                assert await take(on_x, 1) == [{"n": 0}]
            assert b.subscriber_count(X) == 0
            assert b.nats_subscription_count() == 1  # Y still holds the shared one
            a.publish(X, {"n": 1})  # nobody here wants it any more
            a.publish(Y, {"n": 2})
            publish_ends(a, (Y,))
            assert await until_end(on_y) == [{"n": 2}]
        assert b.nats_subscription_count() == 0
        async with b.subscribe(X) as on_x:  # the shared subscription comes back
            assert b.nats_subscription_count() == 1
            a.publish(X, {"n": 3})
            assert await take(on_x, 1) == [{"n": 3}]


async def test_topics_outside_the_pattern_keep_their_own_subscriptions(
    nats_server: NatsServer,
) -> None:
    deeper, other = "meshery.items.x.deep", "meshery.other.x"
    async with (
        connect(nats_server, shared_subjects=(PATTERN,)) as a,
        a.subscribe(X) as on_x,
        a.subscribe(Y) as on_y,
        a.subscribe(deeper) as on_deeper,
        a.subscribe(other) as on_other,
    ):
        assert a.nats_subscription_count() == 3  # the pattern, deeper, other
        for topic in (X, Y, deeper, other):  # its own messages come back through NATS
            a.publish(topic, {"topic": topic})
        publish_ends(a, (X, Y, deeper, other))
        for topic, buffer in ((X, on_x), (Y, on_y), (deeper, on_deeper), (other, on_other)):
            assert await until_end(buffer) == [{"topic": topic}]


async def test_share_subscription_refuses_what_would_duplicate(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a:
        a.share_subscription(PATTERN)
        a.share_subscription("meshery.items.*.deep.>")  # more tokens: no subject matches both
        for overlapping in ("meshery.>", "meshery.*.x", "*.items.y"):
            with pytest.raises(ValueError, match="overlaps"):
                a.share_subscription(overlapping)
        with pytest.raises(ValueError, match="no wildcard"):
            a.share_subscription("meshery.plain")
        with pytest.raises(ValueError, match="invalid"):
            a.share_subscription("meshery.it*")
        async with a.subscribe("meshery.late.x"):
            with pytest.raises(RuntimeError, match="own subscription"):
                a.share_subscription("meshery.late.*")
    with pytest.raises(ValueError, match="overlaps"):
        async with connect(nats_server, shared_subjects=(PATTERN, "meshery.>")):
            pass


async def test_shared_subscription_survives_an_outage(nats_server: NatsServer) -> None:
    async with (
        connect(nats_server) as a,
        connect(nats_server, shared_subjects=(PATTERN,)) as b,
        b.subscribe(X, capacity=1000) as on_x,
        b.subscribe(Y, capacity=1000) as on_y,
    ):
        await nats_server.stop()
        await wait_for_state(b, ConnectionState.RECONNECTING)
        await nats_server.start()
        await wait_for_state(a, ConnectionState.CONNECTED)
        await wait_for_state(b, ConnectionState.CONNECTED)
        # nats-py restores the subscription on reconnect; once a message sent
        # after that arrives, everything later does too, in order.
        with trio.fail_after(SOON):
            while True:
                a.publish(X, {"probe": True})
                with trio.move_on_after(0.2):
                    await on_x.get()
                    break
        for n in range(100):
            a.publish(X, {"n": n})
            a.publish(Y, {"n": n})
        publish_ends(a, (X, Y))
        got_x = [m for m in await until_end(on_x) if "probe" not in m]
        assert got_x == [{"n": n} for n in range(100)]
        got_y = await until_end(on_y)
        assert got_y == [{"n": n} for n in range(100)]
