"""A nats-server that is alive but silent (SIGSTOPped): noticed within a bound, then recovered.

A stopped process keeps its sockets: the kernel still accepts connections and
buffers bytes for it, so nothing resets the link and nats-py, left alone,
notices only after ``ping_interval`` x (``max_outstanding_pings`` + 1), or
never while its writes are stuck behind a full socket buffer. The broker
probes the server itself and must report the link down within
``NatsOptions.stale_timeout``, then come back when the server is continued.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from meshsub_trio.brokers import ConnectionState, NatsOptions
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect, take, wait_for_state

__all__ = ["nats_server"]

TOPIC = "meshery.events.user-1"
CONNECTED = ConnectionState.CONNECTED
RECONNECTING = ConnectionState.RECONNECTING
#: The bound under test, and what a shared 2-core machine may add to it
#: (the probe's timers and the state change crossing from asyncio to Trio).
BOUND = 1.0
SLACK = 1.0


@asynccontextmanager
async def stopped(server: NatsServer) -> AsyncIterator[None]:
    """The server process frozen (SIGSTOP) inside the block, continued on the way out."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.pid, signal.SIGCONT)


@pytest.mark.parametrize("backlog", [0, 8 * 1024 * 1024], ids=["idle", "writes-stuck"])
async def test_a_silent_server_is_noticed_within_the_bound_then_the_link_recovers(
    nats_server: NatsServer, backlog: int
) -> None:
    async with (
        connect(nats_server, stale_timeout=BOUND, max_pending_bytes=16 * 1024 * 1024) as a,
        connect(nats_server, stale_timeout=BOUND) as b,
        b.subscribe(TOPIC, capacity=1000) as live,
        b.subscribe_log(TOPIC, capacity=1000) as log,
    ):
        a.publish(TOPIC, {"n": 0})
        assert [m["n"] for m in await take(live, 1)] == [0]
        assert [d.message["n"] for d in await take(log, 1)] == [0]

        async with stopped(nats_server):
            frozen_at = trio.current_time()
            # With a backlog, a's writes pile up behind the full socket buffers:
            # nats-py's own PINGs cannot even be sent then.
            blob = "x" * 32 * 1024
            for _ in range(backlog // len(blob)):
                a.publish("meshery.bulk", {"blob": blob})
            for broker in (a, b):
                await wait_for_state(broker, RECONNECTING, timeout=BOUND + SLACK)
            noticed = trio.current_time() - frozen_at
            assert noticed <= BOUND + SLACK, noticed
            assert a.stats()["stale_detections"] == 1 and b.stats()["stale_detections"] == 1
        for broker in (a, b):
            await wait_for_state(broker, CONNECTED)

        # Both kinds of subscription receive again: the core one (restored by
        # nats-py) and the log reader (resynced from its last sequence).
        a.publish(TOPIC, {"n": 1})
        with trio.fail_after(SOON):
            while (message := await live.get())["n"] != 1:
                assert message["n"] == 0, message
            while (await log.get()).message["n"] != 1:
                pass
        # The round trips whose PINGs the silent server swallowed are not kept.
        with trio.fail_after(SOON):
            while a.stats()["pings_waiting"] or b.stats()["pings_waiting"]:
                await trio.sleep(0.01)  # polled: nothing signals a task's end to Trio


async def test_a_healthy_server_is_never_reported_down(nats_server: NatsServer) -> None:
    async with connect(nats_server, stale_timeout=0.4) as a, a.subscribe(TOPIC) as live:
        changed = trio.Event()

        async def watch() -> None:
            await a.wait_state_change(CONNECTED)
            changed.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            # Many probe periods, with traffic and without.
            for n in range(20):
                a.publish(TOPIC, {"n": n})
                assert (await take(live, 1))[0] == {"n": n}
                with trio.move_on_after(0.1):
                    await changed.wait()
            assert not changed.is_set() and a.state is CONNECTED
            assert a.stats()["stale_detections"] == 0
            nursery.cancel_scope.cancel()


async def test_a_probe_lost_in_an_outage_does_not_condemn_the_next_link(
    nats_server: NatsServer,
) -> None:
    """A probe whose PING went out just before the server died can never be
    answered; the reconnect cancels it, and that is not silence of the new
    connection. (It used to be: nats-py reuses its transport object across
    reconnects, so the probe took the fresh link for the one it had probed,
    reported it silent and aborted it, with whatever requests were in flight.)
    """
    # A probe goes out every 2 s and waits 2 s for its PONG: the window in
    # which the restart below must land for the old bug to show.
    async with connect(nats_server, stale_timeout=4.0) as a, a.subscribe(TOPIC) as live:
        assert nats_server.pid is not None
        os.kill(nats_server.pid, signal.SIGSTOP)  # the pending or next probe goes unanswered
        with trio.fail_after(SOON):
            while not a.stats()["pings_waiting"]:
                await trio.sleep(0.01)  # polled: a PING going out signals nothing to Trio
        await nats_server.stop(kill=True)  # SIGKILL ends a stopped process too
        await wait_for_state(a, RECONNECTING)
        await nats_server.start()
        await wait_for_state(a, CONNECTED)
        with trio.fail_after(SOON):
            while a.stats()["pings_waiting"]:  # the lost probe, cancelled by the reconnect
                await trio.sleep(0.01)
        # A round trip through the server: time for the probe's verdict to land.
        a.publish(TOPIC, {"n": 0})
        assert await take(live, 1) == [{"n": 0}]
        assert a.stats()["stale_detections"] == 0
        assert a.state is CONNECTED


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_the_bound_must_be_a_finite_non_negative_number(bad: float) -> None:
    with pytest.raises(ValueError, match="stale_timeout"):
        NatsOptions(stale_timeout=bad)


def test_the_default_bound_is_on_and_well_under_a_minute() -> None:
    default = NatsOptions().stale_timeout
    assert 0 < default <= 15  # on by default, and well under nats-py's own minute
