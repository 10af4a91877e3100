"""The keep-alive wheel on its own, on Trio's mock clock: who is pinged when,
who is dropped, and that the dead-peer bound holds (interval + deadline + 2 ticks)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from meshsub_trio import Config, Server, serve
from meshsub_trio._core._keepalive import KeepAliveWheel
from meshsub_trio.examples.countdown import app as countdown_app
from meshsub_trio.testing import live_tasks

from ..rawws import open_raw_websocket


class Peer:
    """A connection as the wheel sees it; ``alive`` decides whether it answers."""

    def __init__(self, *, alive: bool = True, probes: bool = True) -> None:
        self.alive = alive
        self.probes = probes
        self.heard = True
        self.ka_slot = -1
        self.ka_phase = 0
        self.ka_pinged_at = 0.0
        self.ka_due = 0.0
        self.pings: list[float] = []
        self.dropped_at: float | None = None

    def keepalive_probe(self) -> bool:
        self.pings.append(trio.current_time())
        self.heard = False
        if self.alive:
            self.heard = True  # its pong arrives within the deadline
        return self.probes

    def keepalive_expired(self) -> None:
        self.dropped_at = trio.current_time()

    def keepalive_failed(self, error: BaseException) -> None:
        raise AssertionError(f"the wheel failed a healthy peer: {error!r}")


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def run_for(wheel: KeepAliveWheel, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await wheel.run()


async def test_live_peers_are_pinged_every_interval_and_kept(clock: trio.testing.MockClock) -> None:
    wheel = KeepAliveWheel(interval=10.0, deadline=5.0)
    peers = [Peer() for _ in range(50)]
    for peer in peers:
        wheel.add(peer)
    await run_for(wheel, 61.0)
    for peer in peers:
        assert peer.dropped_at is None
        assert 5 <= len(peer.pings) <= 7, peer.pings
        gaps = [b - a for a, b in zip(peer.pings, peer.pings[1:], strict=False)]
        assert all(10.0 - wheel.tick <= gap <= 10.0 + wheel.tick for gap in gaps), gaps
    assert len(wheel) == 50


async def test_a_dead_peer_is_dropped_within_the_bound(clock: trio.testing.MockClock) -> None:
    wheel = KeepAliveWheel(interval=10.0, deadline=5.0)
    alive, dead = Peer(), Peer(alive=False)
    start = trio.current_time()
    wheel.add(alive)
    wheel.add(dead)
    await run_for(wheel, 40.0)
    assert alive.dropped_at is None
    assert dead.dropped_at is not None
    took = dead.dropped_at - start
    # Never less than the deadline after its ping, never more than the bound.
    assert dead.dropped_at - dead.pings[-1] >= 5.0
    assert took <= 10.0 + 5.0 + 2 * wheel.tick, took
    assert len(wheel) == 1  # the dropped one is gone from the wheel


async def test_a_peer_without_a_probe_is_only_pinged(clock: trio.testing.MockClock) -> None:
    wheel = KeepAliveWheel(interval=1.0, deadline=1.0)
    silent = Peer(alive=False, probes=False)  # e.g. legacy ``ka`` on a host that cannot ping
    wheel.add(silent)
    await run_for(wheel, 5.5)
    assert silent.dropped_at is None and len(silent.pings) >= 4


async def test_discard_forgets_a_peer(clock: trio.testing.MockClock) -> None:
    wheel = KeepAliveWheel(interval=1.0, deadline=1.0)
    gone = Peer(alive=False)
    wheel.add(gone)
    wheel.discard(gone)
    wheel.discard(gone)  # twice is harmless
    await run_for(wheel, 5.0)
    assert gone.pings == [] and len(wheel) == 0


async def test_a_server_keeps_connections_alive_without_a_task_each() -> None:
    """Many idle subscribed connections add no keep-alive task, and leave the wheel when they go."""
    config = Config(port=0, keepalive=0.2, pong_timeout=0.2)
    async with trio.open_nursery() as nursery:
        server: Server = await nursery.start(serve, countdown_app, config)
        before = len(live_tasks())
        sockets = []
        for n in range(20):
            ws = await open_raw_websocket(server.port)
            await ws.init()
            await ws.send_json(
                {"id": str(n), "type": "subscribe",
                 "payload": {"query": "subscription { countdown(to: 100000) }"}}
            )  # fmt: skip
            sockets.append(ws)
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_operations == 20)
        per_connection = (len(live_tasks()) - before) / 20
        # The connection's nursery body and its operation: no keep-alive task.
        assert per_connection <= 2, per_connection
        assert server.state.keepalive is not None and len(server.state.keepalive) == 20
        for ws in sockets:
            await ws.aclose()
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_connections == 0)
        assert len(server.state.keepalive) == 0
        server.shutdown()


async def test_a_long_deadline_does_not_slow_the_cadence(clock: trio.testing.MockClock) -> None:
    """Pings stay ``interval`` apart when the pong deadline is longer (a client
    that answers at once is pinged on schedule, not once per deadline)."""
    wheel = KeepAliveWheel(interval=0.05, deadline=1.0)
    peer = Peer()
    wheel.add(peer)
    await run_for(wheel, 1.0)
    assert peer.dropped_at is None
    assert 18 <= len(peer.pings) <= 20, peer.pings


async def test_a_silent_peer_still_gets_the_whole_deadline(clock: trio.testing.MockClock) -> None:
    wheel = KeepAliveWheel(interval=0.05, deadline=1.0)
    dead = Peer(alive=False)
    start = trio.current_time()
    wheel.add(dead)
    await run_for(wheel, 3.0)
    assert dead.dropped_at is not None and len(dead.pings) == 1
    assert dead.dropped_at - dead.pings[0] >= 1.0
    assert dead.dropped_at - start <= 0.05 + 1.0 + 2 * wheel.tick


class SlowPeer(Peer):
    """Answers each ping *rtt* seconds later, until it dies at *dies_at*."""

    def __init__(self, nursery: trio.Nursery, rtt: float, dies_at: float = float("inf")) -> None:
        super().__init__()
        self.nursery = nursery
        self.rtt = rtt
        self.dies_at = dies_at
        self.last_heard = trio.current_time()

    def keepalive_probe(self) -> bool:
        self.pings.append(trio.current_time())
        self.heard = False
        self.nursery.start_soon(self._pong)
        return True

    async def _pong(self) -> None:
        await trio.sleep(self.rtt)
        if trio.current_time() < self.dies_at:
            self.heard = True
            self.last_heard = trio.current_time()


@pytest.mark.parametrize(("interval", "deadline"), [(12.0, 12.0), (1.0, 3.0), (10.0, 5.0)])
async def test_the_cadence_does_not_drift(
    clock: trio.testing.MockClock, interval: float, deadline: float
) -> None:
    """Each ping is ``interval`` after the one before, give or take a tick, and
    the errors do not add up: 100 intervals hold 100 pings (the default 12 s /
    12 s once drifted to a ping every 13.2 s)."""
    wheel = KeepAliveWheel(interval=interval, deadline=deadline)
    await trio.sleep(0.0123 * interval)  # not on a tick boundary
    peer = Peer()
    wheel.add(peer)
    await run_for(wheel, 100 * interval + wheel.tick / 2)
    gaps = [b - a for a, b in zip(peer.pings, peer.pings[1:], strict=False)]
    assert len(peer.pings) == 100, (len(peer.pings), gaps[:5])
    assert all(abs(gap - interval) <= wheel.tick + 1e-9 for gap in gaps), gaps


async def test_a_pong_later_than_the_interval_but_within_the_deadline_counts(
    clock: trio.testing.MockClock,
) -> None:
    """A slow link (1.5 s round trip, 1 s interval, 3 s deadline) is kept, and
    pinged at the cadence whenever its answer is in."""
    wheel = KeepAliveWheel(interval=1.0, deadline=3.0)
    async with trio.open_nursery() as nursery:
        peer = SlowPeer(nursery, rtt=1.5)
        wheel.add(peer)
        await run_for(wheel, 30.0)
        nursery.cancel_scope.cancel()
    assert peer.dropped_at is None
    gaps = [b - a for a, b in zip(peer.pings, peer.pings[1:], strict=False)]
    assert all(abs(gap - 2.0) <= wheel.tick + 1e-9 for gap in gaps), gaps


@pytest.mark.parametrize("rtt", [0.0, 0.5, 1.5, 2.9])
async def test_a_peer_that_dies_after_a_late_pong_is_dropped_within_the_bound(
    clock: trio.testing.MockClock, rtt: float
) -> None:
    """However late its last answer came, a dead peer is held at most
    ``interval + deadline + 2 ticks`` after its last sign of life."""
    wheel = KeepAliveWheel(interval=1.0, deadline=3.0)
    async with trio.open_nursery() as nursery:
        peer = SlowPeer(nursery, rtt=rtt, dies_at=10.0)
        wheel.add(peer)
        await run_for(wheel, 30.0)
        nursery.cancel_scope.cancel()
    assert peer.dropped_at is not None
    assert peer.dropped_at - peer.pings[-1] >= 3.0
    assert peer.dropped_at - peer.last_heard <= 1.0 + 3.0 + 2 * wheel.tick + 1e-9


class BrokenPeer(Peer):
    """A connection whose probe has a bug."""

    def __init__(self) -> None:
        super().__init__()
        self.failed: BaseException | None = None

    def keepalive_probe(self) -> bool:
        raise RuntimeError("a bug in one connection's probe")

    def keepalive_failed(self, error: BaseException) -> None:
        self.failed = error


async def test_a_probe_that_raises_ends_its_connection_only(
    clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """One connection's bug must not end the wheel (and with it ``serve``): that
    connection is failed and forgotten, the others are pinged on."""
    wheel = KeepAliveWheel(interval=1.0, deadline=1.0)
    broken, healthy = BrokenPeer(), Peer()
    wheel.add(broken)
    wheel.add(healthy)
    await run_for(wheel, 5.5)
    assert isinstance(broken.failed, RuntimeError)
    assert len(healthy.pings) == 5 and healthy.dropped_at is None
    assert len(wheel) == 1
    assert "keep-alive failed" in caplog.text


@pytest.mark.parametrize("probes", [True, False])
@pytest.mark.parametrize("stall", [0.5, 0.95])
async def test_a_stalled_loop_delays_pings_without_a_burst_after(
    clock: trio.testing.MockClock, stall: float, probes: bool
) -> None:
    """A stall (a collection, a starved CPU) makes a ping late; the next one
    then comes a whole interval after it (less a tick), never right behind it."""
    wheel = KeepAliveWheel(interval=1.0, deadline=1.0)
    peer = Peer(probes=probes)
    wheel.add(peer)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wheel.run)
        await trio.sleep(2.99)  # just before the third ping is due
        clock.jump(stall)  # time passes with the loop held
        await trio.sleep(3.0)
        nursery.cancel_scope.cancel()
    gaps = [b - a for a, b in zip(peer.pings, peer.pings[1:], strict=False)]
    assert all(gap >= 1.0 - wheel.tick - 1e-9 for gap in gaps), gaps
    assert max(gaps) <= 1.0 + stall + wheel.tick + 1e-9, gaps
