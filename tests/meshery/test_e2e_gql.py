"""Python ``gql`` (both WebSocket subprotocols) against the real Meshery server.

The server runs in the Trio test; gql runs on its own asyncio loop in a worker
thread and calls back into Trio (a portal) to change the model at the one
moment that matters: after every snapshot has arrived and every streamer is
subscribed. Nothing sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from gql import Client, GraphQLRequest
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from meshsub_trio import Server
from meshsub_trio.meshery import LOCAL_USER_ID, create_app

from ..interop.conftest import TrioPortal, run_asyncio, wait_idle
from .test_e2e_documents import (
    UI_DOCUMENTS,
    UiDocument,
    bounded,
    check,
    drive,
    page_filter,
    seed,
    when_live,
)

MESHERY_PATH = "/api/system/graphql/query"
APOLLO = WebsocketsTransport.APOLLO_SUBPROTOCOL
TRANSPORT_WS = WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture
async def portal() -> TrioPortal:
    """Built inside the test's Trio run (it needs the run's token)."""
    return TrioPortal()


@pytest.fixture(params=[APOLLO, TRANSPORT_WS])
def subprotocol(request: pytest.FixtureRequest) -> str:
    return request.param


def transport(
    server: Server,
    subprotocol: str,
    *,
    headers: Mapping[str, str] | None = None,
    init_payload: dict[str, Any] | None = None,
) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=f"ws://127.0.0.1:{server.port}{MESHERY_PATH}",
        subprotocols=[subprotocol],
        headers=dict(headers or {}),
        init_payload=init_payload,
        connect_timeout=5,
        ack_timeout=5,
        close_timeout=5,
    )


def request_of(doc: UiDocument, **variables: Any) -> GraphQLRequest:
    return GraphQLRequest(
        doc.query,
        variable_values={**doc.variables, **variables},
        operation_name=doc.operation,
    )


async def follow_all(
    session: Any, docs: list[UiDocument], portal: TrioPortal, then: Callable[[], Any]
) -> dict[str, list[dict[str, Any]]]:
    """Subscribe to every document; once each has its initial messages, run
    *then* in Trio; return each document's ``take`` messages."""
    received: dict[str, list[dict[str, Any]]] = {doc.name: [] for doc in docs}
    ready = {doc.name: asyncio.Event() for doc in docs}

    async def follow(doc: UiDocument) -> None:
        results = session.subscribe(request_of(doc))
        async with contextlib.aclosing(results):
            if doc.initial == 0:
                ready[doc.name].set()
            async for data in results:
                received[doc.name].append(data)
                if len(received[doc.name]) == doc.initial:
                    ready[doc.name].set()
                if len(received[doc.name]) == doc.take:
                    break

    tasks = [asyncio.create_task(follow(doc)) for doc in docs]
    waiting = asyncio.gather(*(event.wait() for event in ready.values()))
    done, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if waiting not in done:  # a subscription ended (or failed) before its snapshot
        waiting.cancel()
        await asyncio.gather(*tasks)
        raise AssertionError(f"a subscription ended early: {received}")
    await portal.run(then)
    await asyncio.gather(*tasks)
    return received


@bounded()
async def test_every_ui_subscription(
    start_server: Any, subprotocol: str, portal: TrioPortal
) -> None:
    """All eight documents on one socket: snapshots, no-snapshot fields, deltas, shapes."""
    app = create_app(simulator=False, seed=7)
    seed(app.model)
    server = await start_server(app=app)
    docs = list(UI_DOCUMENTS.values())

    async def changes() -> None:
        await when_live(server, len(docs))
        drive(app.model)

    async def scenario() -> dict[str, list[dict[str, Any]]]:
        async with Client(transport=transport(server, subprotocol)) as session:
            return await follow_all(session, docs, portal, changes)

    received = await run_asyncio(scenario)

    for doc in docs:
        check(doc.name, received[doc.name])
    await wait_idle(server)


@bounded()
async def test_events_reach_only_their_user(
    start_server: Any, subprotocol: str, portal: TrioPortal
) -> None:
    """Token mode: alice (Bearer header) and bob (Meshery's token cookie) each
    see their own events only."""
    app = create_app(simulator=False, tokens={"alice-token": "alice", "bob-token": "bob"})
    server = await start_server(app=app)
    doc = UI_DOCUMENTS["events"]

    async def changes() -> None:
        await when_live(server, 2)
        app.model.publish_event("bob", {"severity": "alert", "description": "for bob"})
        app.model.publish_event("alice", {"severity": "error", "description": "for alice"})

    async def first_event(session: Any) -> dict[str, Any]:
        async for data in session.subscribe(request_of(doc)):
            return data["event"]
        raise AssertionError("the events subscription ended")

    async def scenario() -> tuple[dict[str, Any], dict[str, Any]]:
        alice = transport(server, subprotocol, headers={"Authorization": "Bearer alice-token"})
        bob = transport(
            server, subprotocol, headers={"Cookie": "meshery-provider=Meshery; token=bob-token"}
        )
        async with Client(transport=alice) as a, Client(transport=bob) as b:
            seen = asyncio.gather(first_event(a), first_event(b))
            await portal.run(changes)
            return tuple(await seen)  # type: ignore[return-value]

    for_alice, for_bob = await run_asyncio(scenario)

    assert (for_alice["userID"], for_alice["description"]) == ("alice", "for alice")
    assert (for_bob["userID"], for_bob["description"]) == ("bob", "for bob")
    await wait_idle(server)


@bounded()
async def test_bad_token_is_refused(start_server: Any, subprotocol: str) -> None:
    """Meshery's third-party docs put the token in connectionParams: a bad one is refused."""
    app = create_app(simulator=False, tokens={"alice-token": "alice"})
    server = await start_server(app=app)

    async def scenario() -> BaseException:
        bad = transport(server, subprotocol, init_payload={"Authorization": "Bearer nope"})
        try:
            async with Client(transport=bad) as session:
                await session.execute(GraphQLRequest("{ __typename }"))
        except Exception as error:  # gql raises per protocol; both must refuse
            return error
        raise AssertionError("a bad token was accepted")

    refusal = await run_asyncio(scenario)

    # graphql-transport-ws closes with 4403; the legacy protocol answers
    # connection_error first (gql raises on that, before it sees the close).
    text = f"{refusal!r} {refusal.__cause__!r}"
    expected = "4403" if subprotocol == TRANSPORT_WS else "invalid token"
    assert expected in text, text
    await wait_idle(server)


@pytest.mark.parametrize(
    ("selector", "words"),
    [
        (page_filter(pageSize="ten"), ["pageSize", "'ten'"]),
        (page_filter(page="-1"), ["page", "'-1'"]),
        (page_filter(pageSize="100000"), ["pageSize", "between 1 and 1000"]),
        (page_filter(order="qps sideways"), ["order"]),
    ],
)
@bounded()
async def test_bad_paging_is_a_clear_graphql_error(
    start_server: Any, subprotocol: str, selector: dict[str, Any], words: list[str]
) -> None:
    server = await start_server(app=create_app(simulator=False))
    doc = UI_DOCUMENTS["perf_profiles"]

    async def scenario() -> TransportQueryError:
        async with Client(transport=transport(server, subprotocol)) as session:
            try:
                async for _ in session.subscribe(request_of(doc, selector=selector)):
                    break
            except TransportQueryError as problem:
                # The socket survives the failed operation.
                assert await session.execute(GraphQLRequest("{ __typename }")) == {
                    "__typename": "Query"
                }
                return problem
        raise AssertionError("bad paging was accepted")

    problem = await run_asyncio(scenario)

    (error,) = problem.errors or []
    assert all(word in error["message"] for word in words), error
    assert error.get("extensions", {}).get("code") == "BAD_USER_INPUT", error
    await wait_idle(server)


def test_local_user_is_the_default() -> None:
    assert create_app(simulator=False).authenticator.local_user.id == LOCAL_USER_ID
