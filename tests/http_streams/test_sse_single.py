"""graphql-sse single connection mode over real sockets (protocols §3.3, SSE-20..31).

Raw httpx requests: PUT for the token, one event stream read with the
server's sans-IO SSE parser, operations POSTed with their ids, DELETE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import Server
from meshsub_trio._transports._reservations import RESERVATION_TTL, reservations_of

from .conftest import Events, Tracker, all_cleaned_up
from .streams_app import make_stream_app

TOKEN = "x-graphql-event-stream-token"
ALICE = {"authorization": "Bearer alice"}
BOB = {"authorization": "Bearer bob"}


@pytest.fixture
async def server(start_server: Any, tracker: Tracker) -> Server:
    return await start_server(app=make_stream_app(tracker, users=True))


def op(op_id: str, query: str) -> dict[str, Any]:
    return {"query": query, "extensions": {"operationId": op_id}}


@asynccontextmanager
async def opened(
    client: httpx.AsyncClient, server: Server, headers: dict[str, str] = ALICE
) -> AsyncIterator[tuple[str, Events]]:
    reserve = await client.put(f"{server.url}/api", headers=headers)
    assert reserve.status_code == 201
    assert reserve.headers["content-type"] == "text/plain; charset=utf-8"
    token = reserve.text
    async with client.stream(
        "GET", f"{server.url}/api", params={"token": token},
        headers={**headers, "accept": "text/event-stream"},
    ) as response:  # fmt: skip
        assert response.status_code == 200
        yield token, Events(response)


async def test_operations_share_one_stream(server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client, opened(client, server) as (token, events):
        headers = {**ALICE, TOKEN: token}
        for op_id, query in (("a", "subscription { countdown(to: 1) }"), ("q", "{ hello }")):
            posted = await client.post(f"{server.url}/api", json=op(op_id, query), headers=headers)
            assert posted.status_code == 202 and posted.content == b""
        seen = [await events.next() for _ in range(5)]
        by_id: dict[str, list[Any]] = {}
        for name, data in seen:
            by_id.setdefault(data["id"], []).append((name, data.get("payload")))
        assert by_id["a"] == [
            ("next", {"data": {"countdown": 1}}),
            ("next", {"data": {"countdown": 0}}),
            ("complete", None),
        ]
        assert by_id["q"] == [("next", {"data": {"hello": "world"}}), ("complete", None)]
        # Ended ids may be reused; a live one may not (SSE-25).
        again = await client.post(
            f"{server.url}/api", json=op("a", "subscription { silent }"), headers=headers
        )
        assert again.status_code == 202
        clash = await client.post(f"{server.url}/api", json=op("a", "{ hello }"), headers=headers)
        assert clash.status_code == 409
        assert clash.json() == {"errors": [{"message": "Operation with ID already exists"}]}
        stopped = await client.delete(f"{server.url}/api?operationId=a", headers=headers)
        assert stopped.status_code == 200
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_operations == 0)
        assert tracker.cleanups == ["countdown", "silent"]
    await all_cleaned_up(server)


async def test_request_errors(server: Server) -> None:
    async with httpx.AsyncClient() as client, opened(client, server) as (token, events):
        headers = {**ALICE, TOKEN: token}
        api = f"{server.url}/api"
        missing = await client.post(api, json={"query": "{ hello }"}, headers=headers)
        assert missing.status_code == 400
        assert missing.json() == {"errors": [{"message": "Operation ID is missing"}]}
        # Every event of an operation repeats its id: a long one is refused.
        long_id = await client.post(api, json=op("x" * 129, "{ hello }"), headers=headers)
        assert long_id.status_code == 400
        assert long_id.json() == {
            "errors": [{"message": "Operation ID is longer than 128 characters"}]
        }
        invalid = await client.post(api, json=op("v", "{ notExists }"), headers=headers)
        assert invalid.status_code == 400 and "notExists" in invalid.text  # SSE-26
        no_id = await client.delete(api, headers=headers)
        assert no_id.status_code == 400
        second = await client.get(
            api, params={"token": token}, headers={**ALICE, "accept": "text/event-stream"}
        )
        assert second.status_code == 409
        gibberish = await client.post(
            api, json=op("g", "{ hello }"), headers={**headers, "accept": "gibberish"}
        )
        assert gibberish.status_code == 406
        patch = await client.patch(api, headers=headers)
        assert patch.status_code == 405
        assert patch.headers["allow"] == "GET, HEAD, POST, PUT, DELETE"
        # Another user's token reads like an unknown one.
        for method in ("POST", "DELETE"):
            foreign = await client.request(
                method, f"{api}?operationId=x", json=op("x", "{ hello }"),
                headers={**BOB, TOKEN: token},
            )  # fmt: skip
            assert foreign.status_code == 404
            assert foreign.json() == {"errors": [{"message": "Stream not found"}]}
        # The stream is still open and serving after all that.
        ok = await client.post(api, json=op("h", "{ hello }"), headers=headers)
        assert ok.status_code == 202
        assert await events.next() == ("next", {"id": "h", "payload": {"data": {"hello": "world"}}})


async def test_unknown_token_and_plain_put(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        api = f"{server.url}/api"
        unknown = await client.post(
            api, json=op("1", "{ hello }"), headers={**ALICE, TOKEN: "nope"}
        )
        assert unknown.status_code == 404
        # SSE-23: a stream for no reservation is a distinct-mode request.
        distinct = await client.get(
            api,
            params={"token": "nope", "query": "{ hello }"},
            headers={**ALICE, "accept": "text/event-stream"},
        )
        assert distinct.status_code == 200 and b'"hello":"world"' in distinct.content
        # A PUT with a GraphQL body is still GraphQL over HTTP's 405.
        put = await client.put(api, json={"query": "{ hello }"}, headers=ALICE)
        assert put.status_code == 405
        refused = await client.put(api)
        assert refused.status_code == 401  # reserving needs a user too


async def test_operations_posted_before_the_stream_are_buffered(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        token = (await client.put(f"{server.url}/api", headers=ALICE)).text
        headers = {**ALICE, TOKEN: token}
        posted = await client.post(
            f"{server.url}/api", json=op("early", "{ hello }"), headers=headers
        )
        assert posted.status_code == 202
        assert server.metrics.operations_started == 0
        async with client.stream(
            "POST", f"{server.url}/api", headers={**headers, "accept": "text/event-stream"}
        ) as response:
            events = Events(response)
            assert await events.next() == (
                "next",
                {"id": "early", "payload": {"data": {"hello": "world"}}},
            )
            assert await events.next() == ("complete", {"id": "early"})


async def test_disconnect_ends_every_operation_and_frees_the_token(
    server: Server, tracker: Tracker
) -> None:
    registry = reservations_of(server.state)
    async with httpx.AsyncClient() as client:
        async with opened(client, server) as (token, events):
            headers = {**ALICE, TOKEN: token}
            for op_id, query in (("s", "subscription { silent }"), ("t", "subscription { ticks }")):
                posted = await client.post(
                    f"{server.url}/api", json=op(op_id, query), headers=headers
                )
                assert posted.status_code == 202
            assert (await events.next())[1]["id"] == "t"
            assert server.metrics.live_operations == 2
            assert len(registry) == 1
        await all_cleaned_up(server)
        assert sorted(tracker.cleanups) == ["silent", "ticks"]
        assert len(registry) == 0  # SSE-31
        gone = await client.post(f"{server.url}/api", json=op("z", "{ hello }"), headers=headers)
        assert gone.status_code == 404


async def test_reservation_expires_without_a_stream(server: Server) -> None:
    async with httpx.AsyncClient() as client:
        token = (await client.put(f"{server.url}/api", headers=ALICE)).text
        registry = reservations_of(server.state)
        now = trio.current_time()
        assert registry.find(token, "alice", now) is not None
        assert registry.find(token, "bob", now) is None
        assert registry.find(token, "alice", now + RESERVATION_TTL) is None  # expired: dropped
        late = await client.get(
            f"{server.url}/api",
            params={"token": token},
            headers={**ALICE, "accept": "text/event-stream"},
        )
        assert late.status_code == 200  # no reservation: a distinct-mode request
        assert b"Missing query" in late.content


async def test_shutdown_ends_the_stream(server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client, opened(client, server) as (token, events):
        headers = {**ALICE, TOKEN: token}
        await client.post(
            f"{server.url}/api", json=op("t", "subscription { ticks }"), headers=headers
        )
        await events.next()
        server.shutdown()
        with trio.fail_after(5):
            with pytest.raises(StopAsyncIteration):
                while True:
                    await events.next()
    await all_cleaned_up(server)
    assert tracker.cleanups == ["ticks"]


async def test_put_with_a_live_token_is_refused(server: Server) -> None:
    """SSE-22: re-reserving a live token is a client bug; answering 201 with a
    second token would leave the first one waiting for nothing."""
    async with httpx.AsyncClient() as client:
        api = f"{server.url}/api"
        token = (await client.put(api, headers=ALICE)).text
        registered = {"errors": [{"message": "Stream already registered"}]}
        for carried in ({"headers": {**ALICE, TOKEN: token}}, {"params": {"token": token}}):
            kw: dict[str, Any] = {"headers": ALICE, **carried}
            again = await client.put(api, **kw)
            assert again.status_code == 409
            assert again.json() == registered
        # Once its stream is open, the token is still taken.
        async with client.stream(
            "GET", api, params={"token": token}, headers={**ALICE, "accept": "text/event-stream"}
        ) as response:
            assert response.status_code == 200
            opened_put = await client.put(api, headers={**ALICE, TOKEN: token})
            assert opened_put.status_code == 409
            assert opened_put.json() == registered
        # Another user's token reads like an unknown one: a new reservation.
        theirs = (await client.put(api, headers=BOB)).text
        for carried_token in (theirs, "unknown"):
            fresh = await client.put(api, headers={**ALICE, TOKEN: carried_token})
            assert fresh.status_code == 201
            assert fresh.text not in (theirs, carried_token, token)
        plain = await client.put(api, headers=ALICE)
        assert plain.status_code == 201 and plain.text != token
