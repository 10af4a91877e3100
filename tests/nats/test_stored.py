"""Publishing for a ticket: the caller learns whether JetStream's log stored the message.

A flush only proves nats-server has the bytes; the log may still refuse them
(a full disk, a message over the stream's limit, no stream at all). These run
against a real nats-server and make its stream refuse for real.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import trio

from meshsub_trio.brokers import NatsBroker, NotStored
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect

__all__ = ["nats_server"]  # the fixture, re-exported so pytest finds it

TOPIC = "meshery.events.user-1"


async def limit_message_size(broker: NatsBroker, size: int) -> None:
    """Make the log's stream refuse messages over *size* bytes (a real JetStream limit)."""
    js: Any = broker._js
    info = await broker._aio(js.stream_info)("MESHERY")
    await broker._aio(js.update_stream)(replace(info.config, max_msg_size=size))


async def test_a_stored_publish_is_confirmed_by_the_log(nats_server: NatsServer) -> None:
    async with connect(nats_server) as broker, broker.subscribe_log(TOPIC) as log:
        tickets = [broker.publish(TOPIC, {"n": n}, stored=True) for n in range(3)]
        assert tickets == [1, 2, 3] and broker.publish(TOPIC, {"n": 3}) == 0
        with trio.fail_after(SOON):
            await broker.wait_stored(tickets[-1])
            got = [(await log.get()).message["n"] for _ in range(4)]
        assert got == [0, 1, 2, 3]


async def test_a_message_the_log_refuses_is_reported_to_its_waiter(
    nats_server: NatsServer,
) -> None:
    async with connect(nats_server) as broker:
        await limit_message_size(broker, 256)
        small = broker.publish(TOPIC, {"n": 1}, stored=True)
        big = broker.publish(TOPIC, {"blob": "x" * 1024}, stored=True)
        after = broker.publish(TOPIC, {"n": 2}, stored=True)
        with trio.fail_after(SOON):
            await broker.wait_stored(small)
            with pytest.raises(NotStored, match="maximum"):
                await broker.wait_stored(big, after=small)
            with pytest.raises(NotStored):
                await broker.wait_stored(after)  # the window still holds the refusal
            await broker.wait_stored(after, after=big)  # the one after it was stored


async def test_only_a_logged_topic_can_be_published_for_a_ticket(
    nats_server: NatsServer,
) -> None:
    async with connect(nats_server) as broker:
        with pytest.raises(ValueError, match="not captured by the log"):
            broker.publish("elsewhere.topic", {"n": 1}, stored=True)
