"""nats-server goes away and comes back on the same port: what clients see.

The server really stops (SIGTERM, or SIGKILL for a crash) and restarts with
the same store dir, so the JetStream stream survives. Every wait is on a state
the broker exposes (``wait_state_change``) or on data, bounded by fail_after.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from meshsub_trio.brokers import ConnectionState, PublishQueueFull
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect, take, wait_for_state

__all__ = ["nats_server"]

TOPIC = "meshery.events.user-1"
CONNECTED = ConnectionState.CONNECTED
RECONNECTING = ConnectionState.RECONNECTING


async def take_until_end(buffer: Any) -> list[Any]:
    """Items up to (not including) the ``{"end": True}`` sentinel."""
    items: list[Any] = []
    with trio.fail_after(SOON):
        while (item := await buffer.get()) != {"end": True}:
            items.append(item)
    return items


async def test_outage_states_then_streams_continue(nats_server: NatsServer) -> None:
    async with (
        connect(nats_server) as a,
        connect(nats_server) as b,
        b.subscribe(TOPIC, capacity=1000) as live,
        b.subscribe_log(TOPIC, capacity=1000) as log,
        trio.open_nursery() as nursery,
    ):
        transitions: list[ConnectionState] = []

        async def watch() -> None:  # what the Meshery BROKER controller status would mirror
            seen = b.state
            while True:
                seen = await b.wait_state_change(seen)
                transitions.append(seen)

        nursery.start_soon(watch)
        for n in range(100):
            a.publish(TOPIC, {"phase": "before", "n": n})
        assert [m["n"] for m in await take(live, 100)] == list(range(100))
        before = await take(log, 100)

        await nats_server.stop()
        await wait_for_state(a, RECONNECTING)
        await wait_for_state(b, RECONNECTING)
        for n in range(50):  # held in a's outgoing queue meanwhile
            a.publish(TOPIC, {"phase": "during", "n": n})
        assert a.stats()["publish_queued"] == 50

        await nats_server.start()
        await wait_for_state(a, CONNECTED)
        await wait_for_state(b, CONNECTED)
        for n in range(100):
            a.publish(TOPIC, {"phase": "after", "n": n})
        a.publish(TOPIC, {"end": True})

        # Core subscription: restored, nothing published after the reconnect
        # is lost, no duplicates. ("during" may race b's resubscription.)
        got = await take_until_end(live)
        assert [m["n"] for m in got if m["phase"] == "after"] == list(range(100))
        during = [m["n"] for m in got if m["phase"] == "during"]
        assert during == sorted(set(during))

        # Log reader: resynced from its last sequence, so the messages held
        # during the outage are there too: all of them, once, in order.
        rest = []
        with trio.fail_after(SOON):
            while (delivery := await log.get()).message != {"end": True}:
                rest.append(delivery)
        assert [d.message for d in rest] == [{"phase": "during", "n": n} for n in range(50)] + [
            {"phase": "after", "n": n} for n in range(100)
        ]
        seqs = [d.seq for d in before + rest]
        assert seqs == sorted(set(seqs))
        assert b.stats()["log_resyncs"] >= 1
        assert transitions[:2] == [RECONNECTING, CONNECTED]
        nursery.cancel_scope.cancel()


async def test_publish_during_outage_is_bounded_then_delivered(nats_server: NatsServer) -> None:
    async with (
        connect(nats_server, max_pending=20) as a,
        connect(nats_server) as b,
        b.subscribe_log(TOPIC) as log,
    ):
        await nats_server.stop(kill=True)  # a crash, not a clean shutdown
        await wait_for_state(a, RECONNECTING)
        for n in range(20):
            a.publish(TOPIC, {"n": n})
        with pytest.raises(PublishQueueFull):
            a.publish(TOPIC, {"n": 20})
        assert a.stats()["publish_rejected"] == 1
        await nats_server.start()
        got = await take(log, 20)
        assert [d.message["n"] for d in got] == list(range(20))


async def test_subscribing_during_outage(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a, connect(nats_server) as b:
        await nats_server.stop()
        await wait_for_state(a, RECONNECTING)
        await wait_for_state(b, RECONNECTING)
        async with b.subscribe(TOPIC) as live, trio.open_nursery() as nursery:
            log_ready = trio.Event()
            log_got: list[Any] = []

            async def log_reader() -> None:
                async with b.subscribe_log(TOPIC) as log:  # waits for the link
                    log_ready.set()
                    log_got.extend(await take(log, 10))

            nursery.start_soon(log_reader)
            await trio.testing.wait_all_tasks_blocked()
            assert not log_ready.is_set()
            await nats_server.start()
            await wait_for_state(a, CONNECTED)
            await wait_for_state(b, CONNECTED)
            with trio.fail_after(SOON):
                await log_ready.wait()
            for n in range(10):
                a.publish(TOPIC, {"n": n})
            a.publish(TOPIC, {"end": True})
            assert await take_until_end(live) == [{"n": n} for n in range(10)]
        assert [d.message for d in log_got] == [{"n": n} for n in range(10)]


async def test_subscribers_survive_two_outages(nats_server: NatsServer) -> None:
    async with (
        connect(nats_server) as a,
        connect(nats_server) as b,
        b.subscribe(TOPIC) as live,
        b.subscribe_log(TOPIC) as log,
    ):
        for round_ in range(2):
            await nats_server.stop()
            for broker in (a, b):
                await wait_for_state(broker, RECONNECTING)
            await nats_server.start()
            for broker in (a, b):
                await wait_for_state(broker, CONNECTED)
            a.publish(TOPIC, {"round": round_})
            a.publish(TOPIC, {"end": True})
            assert await take_until_end(live) == [{"round": round_}]
            got = [d.message for d in await take(log, 2)]
            assert got == [{"round": round_}, {"end": True}]


async def test_close_during_outage_is_bounded_and_counts_unsent(nats_server: NatsServer) -> None:
    async with connect(nats_server, close_timeout=0.5) as a, a.subscribe(TOPIC):
        await nats_server.stop()
        await wait_for_state(a, RECONNECTING)
        for n in range(5):
            a.publish(TOPIC, {"n": n})
        closing_started = trio.current_time()
    assert trio.current_time() - closing_started < SOON / 2
    assert a.state is ConnectionState.CLOSED
    assert a.stats()["publish_abandoned"] == 5
