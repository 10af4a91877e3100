"""Python's ``gql`` client (asyncio) against the real server, over both WebSocket
subprotocols and over HTTP.

gql runs on its own asyncio loop in a worker thread (``run_asyncio``); the
server runs in the Trio test. Where a test must look at the server while the
client holds its connection open, the client awaits a Trio check through a
``TrioPortal``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.httpx import HTTPXAsyncTransport
from gql.transport.websockets import WebsocketsTransport

from meshsub_trio import Server

from .conftest import TrioPortal, run_asyncio, wait_idle, wait_metrics, ws_url

MESHERY_PATH = "/graphql"
HELLO = {"hello": "Hello from meshsub-trio"}
APOLLO = WebsocketsTransport.APOLLO_SUBPROTOCOL  # "graphql-ws", the legacy protocol
TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL  # "graphql-transport-ws"


@pytest.fixture(params=[APOLLO, TRANSPORT_WS])
def subprotocol(request: pytest.FixtureRequest) -> str:
    return request.param


def ws_transport(url: str, subprotocols: list[str] | None) -> WebsocketsTransport:
    """Built inside the worker's loop; short timeouts so a silent server fails fast."""
    return WebsocketsTransport(
        url=url,
        subprotocols=subprotocols,
        connect_timeout=5,
        ack_timeout=5,
        close_timeout=5,
    )


def errors_of(problem: TransportQueryError) -> list[dict[str, Any]]:
    return list(problem.errors or [])


def is_unknown_field_error(error: dict[str, Any]) -> bool:
    message = error.get("message", "")
    return "Cannot query field" in message and "nope" in message


@pytest.mark.parametrize("path", ["/ws", MESHERY_PATH])
async def test_query(server: Server, subprotocol: str, path: str) -> None:
    url = ws_url(server, path)

    async def scenario() -> tuple[str | None, dict[str, Any]]:
        transport = ws_transport(url, [subprotocol])
        async with Client(transport=transport) as session:
            result = await session.execute(gql("{ hello }"))
            return transport.subprotocol, result

    chosen, result = await run_asyncio(scenario)

    assert chosen == subprotocol
    assert result == HELLO
    await wait_idle(server)
    assert server.metrics.cleanups_run == 1


async def test_default_offer_gets_the_clients_first_choice(server: Server) -> None:
    """gql offers [graphql-ws, graphql-transport-ws]; the client's first choice wins."""
    url = ws_url(server)

    async def scenario() -> tuple[str | None, dict[str, Any]]:
        transport = ws_transport(url, None)
        async with Client(transport=transport) as session:
            return transport.subprotocol, await session.execute(gql("{ hello }"))

    chosen, result = await run_asyncio(scenario)

    assert chosen == APOLLO
    assert result == HELLO
    await wait_idle(server)


async def test_countdown_runs_to_completion(server: Server, subprotocol: str) -> None:
    url = ws_url(server)
    request = GraphQLRequest(
        "subscription Countdown($to: Int!) { countdown(to: $to) }",
        variable_values={"to": 3},
        operation_name="Countdown",
    )

    async def scenario() -> list[int]:
        async with Client(transport=ws_transport(url, [subprotocol])) as session:
            # The loop ends only when the server completes the subscription.
            return [result["countdown"] async for result in session.subscribe(request)]

    assert await run_asyncio(scenario) == [3, 2, 1, 0]
    await wait_idle(server)
    assert server.metrics.cleanups_run == 1


async def test_unsubscribe_stops_the_server_side(
    server: Server, subprotocol: str, portal: TrioPortal
) -> None:
    """Closing the generator sends stop/complete; the server must end the operation
    while the socket stays open (checked from the Trio side at that moment)."""
    url = ws_url(server)

    async def server_has_cleaned_up() -> None:
        await wait_metrics(server, lambda m: m.live_operations == 0)
        assert server.metrics.live_connections == 1, "the socket must outlive the operation"
        assert server.metrics.cleanups_run == 1

    async def scenario() -> tuple[list[int], dict[str, Any]]:
        async with Client(transport=ws_transport(url, [subprotocol])) as session:
            seen: list[int] = []
            ticks = session.subscribe(gql("subscription { ticks(everyMs: 10) }"))
            async with contextlib.aclosing(ticks):
                async for result in ticks:
                    seen.append(result["ticks"])
                    if len(seen) == 3:
                        break
            await portal.run(server_has_cleaned_up)
            return seen, await session.execute(gql("{ hello }"))

    seen, after = await run_asyncio(scenario)

    assert seen == [0, 1, 2]
    assert after == HELLO
    await wait_idle(server)
    assert server.metrics.operations_started == 2


async def test_validation_error_is_raised(server: Server, subprotocol: str) -> None:
    """The client raises TransportQueryError, and the same connection keeps working."""
    url = ws_url(server)

    async def scenario() -> tuple[TransportQueryError, dict[str, Any]]:
        async with Client(transport=ws_transport(url, [subprotocol])) as session:
            try:
                await session.execute(gql("{ nope }"))
            except TransportQueryError as problem:
                return problem, await session.execute(gql("{ hello }"))
        raise AssertionError("a query for an unknown field succeeded")

    problem, after = await run_asyncio(scenario)

    assert any(is_unknown_field_error(error) for error in errors_of(problem)), problem
    assert after == HELLO
    await wait_idle(server)


@pytest.mark.parametrize("path", ["/api", MESHERY_PATH])
async def test_http_query(server: Server, path: str) -> None:
    url = f"{server.url}{path}"

    async def scenario() -> dict[str, Any]:
        async with Client(transport=HTTPXAsyncTransport(url=url, timeout=5)) as session:
            return await session.execute(gql("{ hello }"))

    assert await run_asyncio(scenario) == HELLO


async def test_http_validation_error_is_raised(server: Server) -> None:
    url = f"{server.url}/api"

    async def scenario() -> TransportQueryError:
        async with Client(transport=HTTPXAsyncTransport(url=url, timeout=5)) as session:
            try:
                await session.execute(gql("{ nope }"))
            except TransportQueryError as problem:
                return problem
        raise AssertionError("a query for an unknown field succeeded over HTTP")

    problem = await run_asyncio(scenario)

    assert any(is_unknown_field_error(error) for error in errors_of(problem)), problem
