"""Request/reply through NatsBroker on a real nats-server.

The point of it: a request to a subject nobody serves fails at once
(:class:`NoResponders`, nats-server's own status), where a publish and a wait
would only learn it at the deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from meshsub_trio.brokers import BrokerClosed, NatsBroker, NoResponders, Request
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect

__all__ = ["nats_server"]

SUBJECT = "meshsub.sse.0123456789abcdef"


@asynccontextmanager
async def two(server: NatsServer) -> AsyncIterator[tuple[NatsBroker, NatsBroker]]:
    """Two connections: an asker and a server, as two processes would have."""
    async with connect(server, log=None) as asker, connect(server, log=None) as answering:
        yield asker, answering


async def answer_all(broker: object, inbox: object, transform: object) -> None:
    async for request in inbox:  # type: ignore[attr-defined]
        broker.reply(request, transform(request.message))  # type: ignore[attr-defined, operator]


async def test_a_request_gets_its_servers_answer(nats_server: NatsServer) -> None:
    async with (
        two(nats_server) as (asker, server),
        server.serve_requests(SUBJECT) as inbox,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(answer_all, server, inbox, lambda m: {"echo": m})
        with trio.fail_after(SOON):
            answers = [await asker.request(SUBJECT, {"n": n}, timeout=2) for n in range(3)]
        assert answers == [{"echo": {"n": n}} for n in range(3)]
        nursery.cancel_scope.cancel()


async def test_nobody_serving_is_known_at_once_not_at_the_deadline(
    nats_server: NatsServer,
) -> None:
    async with two(nats_server) as (asker, server):
        started = trio.current_time()
        with trio.fail_after(SOON):
            try:
                await asker.request(SUBJECT, {"n": 1}, timeout=5)
            except NoResponders as error:
                assert error.subject == SUBJECT
            else:
                raise AssertionError("answered by nobody")
        assert trio.current_time() - started < 1.0  # a round trip, not the 5 s timeout
        # Served, then no longer: no responders again, at once.
        async with server.serve_requests(SUBJECT) as inbox, trio.open_nursery() as nursery:
            nursery.start_soon(answer_all, server, inbox, lambda m: m)
            with trio.fail_after(SOON):
                assert await asker.request(SUBJECT, {"n": 2}, timeout=2) == {"n": 2}
            nursery.cancel_scope.cancel()
        # Once serve_requests has exited the server has dropped the interest:
        # the next request is NoResponders at once, not routed there to time out.
        started = trio.current_time()
        with trio.fail_after(SOON):
            try:
                await asker.request(SUBJECT, {"n": 3}, timeout=5)
            except NoResponders:
                pass
            else:
                raise AssertionError("answered after serving stopped")
        assert trio.current_time() - started < 2.0


async def test_a_server_that_never_answers_is_a_timeout(nats_server: NatsServer) -> None:
    async with two(nats_server) as (asker, server), server.serve_requests(SUBJECT) as inbox:
        started = trio.current_time()
        with trio.fail_after(SOON):
            try:
                await asker.request(SUBJECT, {"n": 1}, timeout=0.3)
            except TimeoutError:
                pass
            else:
                raise AssertionError("answered by a server that never answers")
        assert 0.3 <= trio.current_time() - started < 2.0
        [request] = [inbox.get_nowait()]
        assert isinstance(request, Request) and request.message == {"n": 1}
        assert request.subject == SUBJECT and request.reply


async def test_plain_messages_need_no_answer_and_junk_is_dropped(
    nats_server: NatsServer,
) -> None:
    async with two(nats_server) as (asker, server), server.serve_requests(SUBJECT) as inbox:
        asker.publish(SUBJECT, {"k": "notice"})
        await asker.flush()
        raw = asker._nc  # bytes that are not JSON, as a foreign client might send
        await asker._aio(raw.publish)(SUBJECT, b"\xff not json")
        await asker._aio(raw.flush)()
        with trio.fail_after(SOON):
            while server.decode_errors == 0:
                await trio.sleep(0.01)
            notice = await inbox.get()
        assert notice.message == {"k": "notice"} and notice.reply is None
        assert server.reply(notice, {"ignored": True}) is False
        assert len(inbox) == 0


async def test_a_closed_broker_refuses_requests(nats_server: NatsServer) -> None:
    async with connect(nats_server, log=None) as asker:
        pass
    try:
        await asker.request(SUBJECT, {}, timeout=1)
    except BrokerClosed:
        pass
    else:
        raise AssertionError("a closed broker asked")


async def test_closing_the_broker_ends_what_serves_requests(nats_server: NatsServer) -> None:
    ended = trio.Event()

    async def serve(broker: NatsBroker) -> None:
        async with broker.serve_requests(SUBJECT) as inbox:
            async for _ in inbox:
                pass
        ended.set()

    async with trio.open_nursery() as nursery:
        async with connect(nats_server, log=None) as broker:
            nursery.start_soon(serve, broker)
            with trio.fail_after(SOON):
                while not broker._serving:
                    await trio.sleep(0.01)
        with trio.fail_after(SOON):
            await ended.wait()
