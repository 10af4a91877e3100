"""Publish/subscribe through NatsBroker: across connections, fan-out, order, bounds, close.

Two brokers in one test are two NATS connections, i.e. two "processes"; one
test also runs a real second OS process. "Nothing more arrived" is proven by
a sentinel published last, never by sleeping.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import textwrap
import warnings

import pytest
import trio
import trio_asyncio

from meshsub_trio import Overflow
from meshsub_trio.brokers import BrokerClosed, ConnectionState, NatsBroker, PublishQueueFull
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect, take

__all__ = ["nats_server"]  # the fixture, re-exported so pytest finds it

TOPIC = "meshery.events.user-1"


async def test_message_crosses_to_another_connection(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a, connect(nats_server) as b:
        assert a.state is b.state is ConnectionState.CONNECTED
        async with b.subscribe(TOPIC) as inbox:
            a.publish(TOPIC, {"type": "event", "op": "append", "event": {"id": "e1"}})
            assert await take(inbox, 1) == [{"type": "event", "op": "append", "event": {"id": "e1"}}]


async def test_local_subscribers_receive_own_messages_via_nats(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a, a.subscribe(TOPIC) as inbox:
        a.publish(TOPIC, {"n": 1})
        assert await take(inbox, 1) == [{"n": 1}]
        # It came back from the server, not through a local shortcut.
        assert a.stats()["received"] == 1


async def test_fan_out_shares_one_nats_subscription(nats_server: NatsServer) -> None:
    subscribers = 50
    async with connect(nats_server) as a, connect(nats_server) as b:
        async with trio.open_nursery() as nursery:
            ready = 0
            all_ready = trio.Event()
            all_done = trio.Event()
            leave = trio.Event()
            results: list[list[object]] = []

            async def subscriber() -> None:
                nonlocal ready
                async with b.subscribe(TOPIC) as inbox:
                    ready += 1
                    if ready == subscribers:
                        all_ready.set()
                    results.append(await take(inbox, 20))
                    if len(results) == subscribers:
                        all_done.set()
                    await leave.wait()

            for _ in range(subscribers):
                nursery.start_soon(subscriber)
            with trio.fail_after(SOON):
                await all_ready.wait()
            assert b.subscriber_count(TOPIC) == subscribers
            assert b.nats_subscription_count() == 1
            for n in range(20):
                a.publish(TOPIC, {"n": n})
            with trio.fail_after(SOON):
                await all_done.wait()
            leave.set()
        assert results == [[{"n": n} for n in range(20)]] * subscribers
        assert b.nats_subscription_count() == 0
        assert b.subscriber_count(TOPIC) == 0


async def test_unsubscribe_last_then_resubscribe(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a, connect(nats_server) as b:
        async with b.subscribe(TOPIC) as inbox:
            a.publish(TOPIC, {"n": 0})
            assert await take(inbox, 1) == [{"n": 0}]
        assert b.nats_subscription_count() == 0
        async with b.subscribe(TOPIC) as inbox:
            assert b.nats_subscription_count() == 1
            a.publish(TOPIC, {"n": 1})
            assert await take(inbox, 1) == [{"n": 1}]


async def test_10k_in_order_exactly_once_on_every_subscriber(nats_server: NatsServer) -> None:
    count = 10_000
    async with connect(nats_server) as a, connect(nats_server) as b:
        async with (
            a.subscribe(TOPIC, capacity=count + 1, policy=Overflow.CLOSE) as on_a,
            b.subscribe(TOPIC, capacity=count + 1, policy=Overflow.CLOSE) as on_b1,
            b.subscribe(TOPIC, capacity=count + 1, policy=Overflow.CLOSE) as on_b2,
            b.subscribe_log(TOPIC, capacity=64) as log_b,
        ):
            for n in range(count):
                a.publish(TOPIC, {"n": n})
                if n % 1000 == 999:
                    with trio.fail_after(SOON):
                        await a.flush()  # stay within the outgoing-queue bound
            a.publish(TOPIC, {"end": True})
            expected = [{"n": n} for n in range(count)] + [{"end": True}]
            for inbox in (on_a, on_b1, on_b2):
                assert await take(inbox, count + 1) == expected
            deliveries = await take(log_b, count + 1)
            assert [d.message for d in deliveries] == expected
            seqs = [d.seq for d in deliveries]
            assert seqs == sorted(set(seqs))
        assert sum(b.dropped.values()) == 0
        assert b.stats()["slow_consumer"] == 0


async def test_per_publisher_order_with_two_publishers(nats_server: NatsServer) -> None:
    per_publisher = 500
    async with (
        connect(nats_server) as a,
        connect(nats_server) as b,
        a.subscribe(TOPIC, capacity=2000) as on_a,
        b.subscribe(TOPIC, capacity=2000) as on_b,
    ):
        for n in range(per_publisher):
            a.publish(TOPIC, {"from": "a", "n": n})
            b.publish(TOPIC, {"from": "b", "n": n})
        for inbox in (on_a, on_b):
            got = await take(inbox, 2 * per_publisher)
            for source in ("a", "b"):
                assert [m["n"] for m in got if m["from"] == source] == list(range(per_publisher))


async def test_publish_queue_bound_raises_and_counts(nats_server: NatsServer) -> None:
    async with connect(nats_server, max_pending=10) as a, a.subscribe(TOPIC) as inbox:
        for n in range(10):
            a.publish(TOPIC, {"n": n})  # no checkpoint: the drain task cannot run yet
        with pytest.raises(PublishQueueFull):
            a.publish(TOPIC, {"n": 10})
        assert a.stats()["publish_rejected"] == 1
        assert a.stats()["publish_queued"] == 10
        with trio.fail_after(SOON):
            await a.flush()
        a.publish(TOPIC, {"n": 11})  # room again once drained
        assert await take(inbox, 11) == [{"n": n} for n in (*range(10), 11)]


async def test_publish_queue_byte_bound(nats_server: NatsServer) -> None:
    async with connect(nats_server, max_pending_bytes=100) as a:
        a.publish(TOPIC, {"blob": "x" * 60})
        with pytest.raises(PublishQueueFull):
            a.publish(TOPIC, {"blob": "y" * 60})


async def test_invalid_topics_and_payloads_fail_at_the_call(nats_server: NatsServer) -> None:
    async with connect(nats_server) as a:
        for topic in ("", "meshery..x", "meshery.*", "meshery.>", "has space", "a.b "):
            with pytest.raises(ValueError):
                a.publish(topic, {})
        with pytest.raises(TypeError):
            a.publish(TOPIC, {"not json": object()})
        with pytest.raises(ValueError, match="max payload"):
            a.publish(TOPIC, {"blob": "x" * (2 * 1024 * 1024)})


async def test_close_ends_subscribers_and_refuses_publish(nats_server: NatsServer) -> None:
    ended: list[str] = []
    both_ended = trio.Event()

    async def reader(broker: NatsBroker, kind: str, task_status: trio.TaskStatus[None]) -> None:
        subscribe = broker.subscribe if kind == "plain" else broker.subscribe_log
        async with subscribe(TOPIC) as inbox:
            task_status.started()
            async for _ in inbox:
                pass
        ended.append(kind)
        if len(ended) == 2:
            both_ended.set()

    async with trio.open_nursery() as nursery:
        async with connect(nats_server) as broker:
            await nursery.start(reader, broker, "plain")
            await nursery.start(reader, broker, "log")
        # The broker closed under its subscribers: their streams simply end.
        with trio.fail_after(SOON):
            await both_ended.wait()
    assert sorted(ended) == ["log", "plain"]
    assert broker.state is ConnectionState.CLOSED
    with pytest.raises(BrokerClosed):
        broker.publish(TOPIC, {})


async def test_close_flushes_queued_messages(nats_server: NatsServer) -> None:
    async with connect(nats_server) as b, b.subscribe(TOPIC) as inbox:
        async with connect(nats_server) as a:
            for n in range(100):
                a.publish(TOPIC, {"n": n})
        # a closed right after publishing: everything still went out.
        assert await take(inbox, 100) == [{"n": n} for n in range(100)]


async def test_clean_close_leaves_no_tasks_or_resource_warnings(nats_server: NatsServer) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with trio_asyncio.open_loop() as loop:
            async with (
                connect(nats_server) as a,
                a.subscribe(TOPIC) as inbox,
                a.subscribe_log(TOPIC) as log,
            ):
                a.publish(TOPIC, {"n": 1})
                assert await take(inbox, 1) == [{"n": 1}]
                assert [d.message for d in await take(log, 1)] == [{"n": 1}]
            leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
            assert leftover == []
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []


async def test_connect_to_nothing_fails_clearly() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: refused
        with pytest.raises(ConnectionError, match="no NATS server answered"):
            async with NatsBroker.connect(f"nats://127.0.0.1:{port}", connect_timeout=0.5):
                pass


_CHILD = textwrap.dedent(
    """
    import json, sys, trio
    from meshsub_trio.brokers import NatsBroker

    async def main(url, count):
        async with NatsBroker.connect(url) as broker:
            async with broker.subscribe("meshery.controllers", capacity=count + 1) as inbox:
                print("READY", flush=True)
                got = [await inbox.get() for _ in range(count)]
            broker.publish("meshery.k8s_contexts", {"child_got": len(got)})
        print(json.dumps(got), flush=True)

    trio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def test_two_os_processes(nats_server: NatsServer) -> None:
    count = 200
    async with connect(nats_server) as parent, parent.subscribe("meshery.k8s_contexts") as replies:
        child = await trio.lowlevel.open_process(
            [sys.executable, "-c", _CHILD, nats_server.url, str(count)],
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONWARNINGS": "error::ResourceWarning"},
        )
        assert child.stdout is not None
        output = b""
        try:
            with trio.fail_after(SOON * 2):
                async with child.stdout:
                    while b"READY\n" not in output:
                        output += await child.stdout.receive_some()
                    for n in range(count):
                        parent.publish("meshery.controllers", {"n": n})
                    while chunk := await child.stdout.receive_some():
                        output += chunk
                assert await child.wait() == 0
                got = json.loads(output.split(b"READY\n", 1)[1])
                assert got == [{"n": n} for n in range(count)]
                assert await take(replies, 1) == [{"child_got": count}]
        finally:
            if child.returncode is None:
                child.kill()
                with trio.CancelScope(shield=True):
                    await child.wait()
