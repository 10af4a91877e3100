"""The client's API against real servers over real sockets: lazy, multiplexed, bounded, typed.

The server side is checked through its metrics (connections, live operations,
close codes), so "unsubscribed cleanly" and "closed with 1000" are what the
server saw, not what the client believes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from graphql import GraphQLError

from meshsub_trio import App, Context, MemoryBroker, Overflow, Server
from meshsub_trio.client import (
    ClientClosed,
    CursorLost,
    OperationError,
    Restarted,
    ResultError,
    SubscriptionOverflow,
    TooManySubscriptions,
    open_client,
)
from meshsub_trio.client._session import DEFAULT_MAX_SUBSCRIPTIONS
from meshsub_trio.testing import open_fault_proxy

from ._kit import EVENTS, SLACK, SOON, Notices, Reader, assert_exactly, fast, ws_url
from .conftest import Meshery

CONTEXTS = """subscription Contexts { subscribeK8sContext(selector: {page: "0", pageSize: "50"}) {
  total_count } }"""
ADD_CONTEXT = """mutation Add($n: String!) {
  addK8sContext(input: {name: $n, server: "https://x"}) { id } }"""
PUBLISH = """mutation Publish($d: String!) {
  publishEvent(input: {severity: informational, description: $d}) { description } }"""


def closes(server: Server, code: int) -> int:
    return dict(server.metrics.closes_by_code.items()).get(str(code), 0)


async def wait_server(server: Server, predicate: Callable[[Any], bool]) -> None:
    with trio.fail_after(SOON):
        await server.metrics.wait_for(predicate)


# ---- connection life ---------------------------------------------------------------


async def test_lazy_connection_complete_on_leave_and_close_1000(meshery: Meshery) -> None:
    server = meshery.server
    async with open_client(meshery.url, **fast(idle_timeout=60)) as client:
        await trio.testing.wait_all_tasks_blocked()
        assert client.attempts == 0 and server.metrics.live_connections == 0  # lazy
        async with client.subscribe(EVENTS, cursor="0") as stream:
            await wait_server(server, lambda m: m.live_operations == 1)
            meshery.publish("hello")
            with trio.fail_after(SOON):
                first = await stream.__anext__()
            assert first["data"]["subscribeEvents"]["description"] == "hello"
        # Leaving the block stopped it on the server; the socket stays (idle grace).
        await wait_server(server, lambda m: m.live_operations == 0)
        assert server.metrics.live_connections == 1 and closes(server, 1000) == 0
    # Closing the client closed the socket with 1000.
    await wait_server(server, lambda m: m.live_connections == 0)
    assert closes(server, 1000) == 1


async def test_idle_connection_closes_after_the_grace(meshery: Meshery) -> None:
    server = meshery.server
    grace = 0.2
    async with open_client(meshery.url, **fast(idle_timeout=grace)) as client:
        assert await client.execute("query { getAvailableNamespaces { namespace } }") == {
            "getAvailableNamespaces": []
        }
        left = trio.current_time()
        with trio.fail_after(grace + SLACK):
            await server.metrics.wait_for(lambda m: m.live_connections == 0)
        assert trio.current_time() - left >= grace * 0.9
        assert closes(server, 1000) == 1
        # The next operation opens a new connection.
        await client.execute("query { getAvailableNamespaces { namespace } }")
        assert client.connections == 2


async def test_one_socket_carries_every_operation(meshery: Meshery) -> None:
    async with (
        open_fault_proxy("127.0.0.1", meshery.server.port) as proxy,
        open_client(ws_url(proxy.port), **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        readers = [Reader() for _ in range(3)]
        for reader in readers:
            await reader.start(nursery, client, EVENTS, cursor="0")
        await wait_server(meshery.server, lambda m: m.live_operations == 3)
        published = await client.execute(PUBLISH, {"d": "via mutation"})
        assert published == {"publishEvent": {"description": "via mutation"}}
        for reader in readers:
            await reader.wait_count(1)
            assert reader.descriptions() == ["via mutation"]
        assert proxy.accepted_count == 1
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", ["auto", "ws", "legacy"])
async def test_transports(meshery: Meshery, transport: str) -> None:
    expected = {"auto": "graphql-transport-ws", "ws": "graphql-transport-ws"}
    async with (
        open_client(meshery.url, transport=transport, **fast()) as client,
        client.subscribe(EVENTS, cursor="0") as stream,
    ):
        meshery.publish("one")
        meshery.publish("two")
        got = []
        with trio.fail_after(SOON):
            async for payload in stream:
                got.append(payload["data"]["subscribeEvents"]["description"])
                if len(got) == 2:
                    break
        assert got == ["one", "two"]
        assert client.subprotocol == expected.get(transport, "graphql-ws")


async def test_failover_to_the_next_url(meshery: Meshery) -> None:
    with trio.socket.socket() as placeholder:  # a port nobody listens on
        await placeholder.bind(("127.0.0.1", 0))
        dead = ws_url(placeholder.getsockname()[1])
    notices = Notices()
    async with open_client([dead, meshery.url], on_notice=notices, **fast()) as client:
        await client.execute("query { getAvailableNamespaces { namespace } }")
        assert client.attempts == 2 and client.connected_url == meshery.url
        ((_, lost),) = notices.lost()
        assert lost.disconnect.url == dead and lost.next_url == meshery.url


# ---- execute -------------------------------------------------------------------------

ERRORS_SCHEMA = """
type Query { hello: String!  boom: String }
type Item { n: Int!  bad: String }
type Subscription { items(to: Int!): Item! }
"""


def _boom(*_: Any) -> str:
    raise GraphQLError("boom")


async def _items(ctx: Context, args: dict[str, Any], emit: Any) -> None:
    for n in range(args["to"]):
        emit({"n": n})
    await trio.sleep_forever()


@pytest.fixture
async def errors_server(start_server: Callable[..., Any]) -> Server:
    app = App(
        ERRORS_SCHEMA,
        resolvers={"Query": {"hello": lambda *_: "hi", "boom": _boom}, "Item": {"bad": _boom}},
        streamers={"items": _items},
    )
    server: Server = await start_server(app=app)
    return server


async def test_execute_typed_errors(errors_server: Server) -> None:
    async with open_client(ws_url(errors_server.port, "/ws"), **fast()) as client:
        assert await client.execute("{ hello }") == {"hello": "hi"}
        with pytest.raises(ResultError) as result:
            await client.execute("{ hello boom }")
        assert result.value.data == {"hello": "hi", "boom": None}
        assert result.value.errors[0]["message"] == "boom"
        with pytest.raises(OperationError) as invalid:
            await client.execute("{ nope }")
        assert "nope" in invalid.value.errors[0]["message"]
        with pytest.raises(ValueError):
            await client.execute("subscription { items(to: 1) { n } }")


async def test_subscription_errors_are_payloads_unless_asked_to_raise(
    errors_server: Server,
) -> None:
    query = "subscription { items(to: 2) { n bad } }"
    async with open_client(ws_url(errors_server.port, "/ws"), **fast()) as client:
        async with client.subscribe(query) as stream:
            with trio.fail_after(SOON):
                payload = await stream.__anext__()
            assert payload["data"] == {"items": {"n": 0, "bad": None}}
            assert payload["errors"][0]["message"] == "boom"
        async with client.subscribe(query, raise_on_errors=True) as stream:
            with trio.fail_after(SOON), pytest.raises(ResultError) as failed:
                await stream.__anext__()
            assert failed.value.data == {"items": {"n": 0, "bad": None}}
        await wait_server(errors_server, lambda m: m.live_operations == 0)
        async with client.subscribe("subscription { nothing }") as stream:
            with trio.fail_after(SOON), pytest.raises(OperationError):
                await stream.__anext__()


# ---- limits ---------------------------------------------------------------------------


async def test_cap_on_active_subscriptions(meshery: Meshery) -> None:
    async with open_client(meshery.url, max_subscriptions=2, **fast()) as client:
        async with client.subscribe(EVENTS), client.subscribe(EVENTS):
            with pytest.raises(TooManySubscriptions):
                async with client.subscribe(EVENTS):
                    pass  # pragma: no cover
        async with client.subscribe(EVENTS), client.subscribe(EVENTS):
            pass  # slots freed by leaving


async def test_the_default_cap_leaves_room_for_queries_and_mutations(meshery: Meshery) -> None:
    """A tester's find: the client's cap was 100, the server's operations per
    connection too, so a client at its cap could run no query or mutation
    (each is an operation on the same connection)."""
    from contextlib import AsyncExitStack

    server = meshery.server
    async with open_client(meshery.url, **fast()) as client, AsyncExitStack() as stack:
        opened = 0
        with pytest.raises(TooManySubscriptions):
            while True:
                await stack.enter_async_context(client.subscribe(EVENTS))
                opened += 1
        assert opened == DEFAULT_MAX_SUBSCRIPTIONS
        await wait_server(server, lambda m: m.live_operations == opened)
        with trio.fail_after(SOON):
            published = await client.execute(PUBLISH, {"d": "at the cap"})
            assert published["publishEvent"]["description"] == "at the cap"
            assert await client.execute("{ __typename }") == {"__typename": "Query"}


async def test_overflow_close_pauses_a_cursor_stream_and_loses_nothing(meshery: Meshery) -> None:
    server = meshery.server
    async with open_client(meshery.url, **fast()) as client, trio.open_nursery() as nursery:
        reader = Reader()
        reader.gate = trio.Event()
        await reader.start(nursery, client, EVENTS, capacity=4, cursor="0")
        await wait_server(server, lambda m: m.live_operations == 1)
        expected = [f"e{n}" for n in range(40)]
        for description in expected[:20]:
            meshery.publish(description)
        # The consumer is stuck: the buffer filled and the stream paused server-side.
        await wait_server(server, lambda m: m.live_operations == 0)
        for description in expected[20:]:
            meshery.publish(description)
        reader.gate.set()
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        assert reader.stream is not None
        assert reader.stream.pauses >= 1 and reader.stream.resumes >= 1
        assert reader.stream.dropped == 0
        nursery.cancel_scope.cancel()


async def test_overflow_close_ends_a_stream_without_cursors(meshery: Meshery) -> None:
    async with open_client(meshery.url, **fast()) as client, trio.open_nursery() as nursery:
        reader = Reader()
        reader.gate = trio.Event()
        await reader.start(nursery, client, CONTEXTS, capacity=1)
        for n in range(4):
            await client.execute(ADD_CONTEXT, {"n": f"c{n}"})
        reader.gate.set()
        await reader.wait_ended()
        assert isinstance(reader.error, SubscriptionOverflow)
        assert 1 <= len(reader.payloads) <= 2
        nursery.cancel_scope.cancel()


async def test_coalesce_keeps_the_latest_state(meshery: Meshery) -> None:
    async with open_client(meshery.url, **fast()) as client, trio.open_nursery() as nursery:
        slow, sentinel = Reader(), Reader()
        slow.gate = trio.Event()
        await slow.start(nursery, client, CONTEXTS)
        await sentinel.start(nursery, client, CONTEXTS)
        async with client.subscribe(CONTEXTS, capacity=1, overflow=Overflow.COALESCE) as stream:
            await sentinel.wait_count(1)
            for n in range(5):
                await client.execute(ADD_CONTEXT, {"n": f"c{n}"})
            await sentinel.wait(
                lambda r: r.payloads[-1]["data"]["subscribeK8sContext"]["total_count"] == 5,
                "five contexts",
            )
            await client.execute("query { getAvailableNamespaces { namespace } }")  # a round trip
            with trio.fail_after(SOON):
                latest = await stream.__anext__()
            assert latest["data"]["subscribeK8sContext"]["total_count"] == 5
            assert stream.dropped >= 4
        nursery.cancel_scope.cancel()


# ---- cursors --------------------------------------------------------------------------


async def test_an_expired_cursor_raises_a_clear_error(make_meshery: Callable[..., Any]) -> None:
    meshery: Meshery = await make_meshery(broker=MemoryBroker(log_capacity=3))
    for n in range(5):
        meshery.publish(f"old{n}")  # the log keeps cursors 3..5; 1 has expired
    async with (
        open_client(meshery.url, **fast()) as client,
        client.subscribe(EVENTS, cursor="1") as stream,
    ):
        with trio.fail_after(SOON), pytest.raises(CursorLost) as lost:
            await stream.__anext__()
    assert lost.value.code == "CURSOR_EXPIRED" and lost.value.cursor == "1"
    assert "expired" in str(lost.value)


async def test_an_expired_cursor_can_restart_and_says_so(make_meshery: Callable[..., Any]) -> None:
    meshery: Meshery = await make_meshery(broker=MemoryBroker(log_capacity=3))
    for n in range(5):
        meshery.publish(f"old{n}")
    notices = Notices()
    async with (
        open_client(meshery.url, on_notice=notices, **fast()) as client,
        client.subscribe(EVENTS, cursor="1", on_cursor_lost="restart") as stream,
    ):
        await notices.wait(lambda n: bool(n.of(Restarted)))
        await wait_server(meshery.server, lambda m: m.live_operations == 1)
        await trio.testing.wait_all_tasks_blocked()  # the live feed is attached
        meshery.publish("new")
        with trio.fail_after(SOON):
            payload = await stream.__anext__()
        assert payload["data"]["subscribeEvents"]["description"] == "new"
        assert stream.restarts == 1
    ((_, restarted),) = notices.of(Restarted)
    assert restarted.cursor == "1" and restarted.errors[0]["extensions"]["code"] == "CURSOR_EXPIRED"


async def test_a_closed_client_refuses_operations(meshery: Meshery) -> None:
    async with open_client(meshery.url, **fast()) as client:
        pass
    with pytest.raises(ClientClosed):
        async with client.subscribe(EVENTS):
            pass  # pragma: no cover
