"""A token's home and the worker holding its stream, on a real nats-server.

The home keeps a handed-over reservation for as long as its holder's stream
lives: it drops it only when the holder is asked and fails (gone, or no
answer), never because a question could not be sent (no time left, a full
queue); and not forever either, when the holder's "closed" notice is lost,
since the home asks the holder again after a while.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from meshsub_trio import App
from meshsub_trio._config import Config
from meshsub_trio._core._state import ServerState
from meshsub_trio._transports._reservations import Reservation, Reservations
from meshsub_trio._transports._sse_desk import Desk, check_holders, encode
from meshsub_trio._transports._sse_relay import GRACE, StreamRelay
from meshsub_trio._transports._sse_tokens import StreamTokens, new_worker_id, owner_fingerprint
from meshsub_trio._wire import OperationRequested
from meshsub_trio.brokers import NatsBroker, NatsOptions, PublishQueueFull
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server  # noqa: F401 (a fixture)

SECRET = b"a secret of the cluster, long enough"
OPERATION = OperationRequested("1", "{ hello }", None, None, None)


@asynccontextmanager
async def worker(server: NatsServer) -> AsyncIterator[tuple[StreamRelay, NatsBroker]]:
    """One worker's relay, serving on its own connection until the block ends."""
    relay = StreamRelay(StreamTokens(SECRET, new_worker_id()), timeout=2.0)
    options = NatsOptions(log=None, reconnect_wait=0.05)
    async with (
        NatsBroker.connect([server.url], options=options) as broker,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(relay.serve, broker)
        yield relay, broker
        nursery.cancel_scope.cancel()


class Holder:
    """Stands for the worker whose stream serves the token: counts what it is asked."""

    def __init__(self, relay: StreamRelay, *, holds: bool = True) -> None:
        self.asked: list[str] = []
        self.holds = holds
        relay.handler = self.handle

    async def handle(self, kind: str, message: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(kind)
        return {"s": 202 if kind == "op" else 200} if self.holds else {"s": 404}


def handed_over(registry: Reservations, holder: StreamRelay) -> Reservation:
    reservation = registry.reserve("alice", trio.current_time())
    registry.hand_over(reservation, holder.worker, trio.current_time())
    return reservation


def op_for(reservation: Reservation) -> dict[str, Any]:
    fingerprint = owner_fingerprint(reservation.owner)
    return {"k": "op", "t": reservation.token, "op": encode(OPERATION), "n": 10, "o": fingerprint}


def alive(registry: Reservations, reservation: Reservation) -> bool:
    return registry.get(reservation.token, trio.current_time()) is reservation


async def test_no_time_left_to_ask_the_holder_keeps_its_stream(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    state = ServerState(App("type Query { hello: String }"), Config())
    async with (
        worker(nats_server) as (home, _),
        worker(nats_server) as (held, _),
        worker(nats_server) as (asker, _),
    ):
        registry = Reservations(relay=home)
        home.handler = Desk(state, registry, home).handle
        holder = Holder(held)
        reservation = handed_over(registry, held)
        with trio.fail_after(5):
            # Less than GRACE left when the home gets it: no time to ask the holder.
            short = await asker.call(
                home.worker, op_for(reservation), deadline=time.time() + GRACE * 0.8
            )
        assert short["s"] == 503 and holder.asked == []
        assert alive(registry, reservation)
        with trio.fail_after(5):
            assert (await asker.call(home.worker, op_for(reservation)))["s"] == 202
        assert holder.asked == ["op"]


async def test_a_full_queue_toward_the_holder_keeps_its_stream(
    nats_server: NatsServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = ServerState(App("type Query { hello: String }"), Config())
    async with worker(nats_server) as (home, broker), worker(nats_server) as (held, _):
        registry = Reservations(relay=home)
        desk = Desk(state, registry, home)
        holder = Holder(held)
        reservation = handed_over(registry, held)

        async def full(*_args: Any, **_kwargs: Any) -> Any:
            raise PublishQueueFull(1, 1)

        monkeypatch.setattr(broker, "request", full)
        message = {**op_for(reservation), "r": new_worker_id(), "d": time.time() + 5}
        answer = await desk.handle("op", message)
        assert answer is not None and answer["s"] == 503
        assert alive(registry, reservation) and holder.asked == []


async def test_a_holder_that_is_gone_or_silent_still_loses_the_stream(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    state = ServerState(App("type Query { hello: String }"), Config())
    async with worker(nats_server) as (home, _), worker(nats_server) as (asker, _):
        registry = Reservations(relay=home)
        home.handler = Desk(state, registry, home).handle
        async with worker(nats_server) as (wedged, _):

            async def never(kind: str, message: dict[str, Any]) -> dict[str, Any]:
                await trio.sleep_forever()
                raise AssertionError("unreachable")

            wedged.handler = never
            silent = handed_over(registry, wedged)
            with trio.fail_after(10):
                answer = await asker.call(home.worker, op_for(silent), deadline=time.time() + 1.5)
            assert answer["s"] == 404 and not alive(registry, silent)
            gone = handed_over(registry, wedged)
        with trio.fail_after(5):
            assert (await asker.call(home.worker, op_for(gone)))["s"] == 404
        assert not alive(registry, gone)


async def test_the_home_asks_again_and_frees_a_stream_no_longer_held(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    async with worker(nats_server) as (home, _), worker(nats_server) as (held, _):
        registry = Reservations(relay=home)
        registry.handed_over_ttl = 0.0  # every handed-over reservation is due at once
        holder = Holder(held)
        running = handed_over(registry, held)
        with trio.fail_after(5):
            await check_holders(registry, home)
        assert holder.asked == ["held"] and alive(registry, running)
        assert registry.due(trio.current_time()) == [running]  # asked again later
        holder.holds = False  # its stream ended, and the notice was lost
        registry.recheck_later(running, trio.current_time())
        with trio.fail_after(5):
            await check_holders(registry, home)
        assert not alive(registry, running)
        async with worker(nats_server) as (doomed, _):
            Holder(doomed)
            orphan = handed_over(registry, doomed)
        # Its worker has ended (as one SIGKILLed): nobody answers for it any more.
        with trio.fail_after(5):
            await check_holders(registry, home)
        assert not alive(registry, orphan) and len(registry) == 0
        assert registry.next_recheck() is None
