"""Bounds on graphql-sse single connection mode: what one client may make the
server hold before it opens a stream (reservations, and operations posted to them)."""

from __future__ import annotations

from typing import Any, cast

import httpx
import pytest
import trio

from meshsub_trio import Config, Server
from meshsub_trio._transports._asgi import ASGIApp
from meshsub_trio._transports._reservations import (
    MAX_PENDING,
    MAX_WAITING_PER_OWNER,
    RESERVATION_TTL,
    ReservationRefused,
    Reservations,
    reservations_of,
)

from .conftest import Tracker, all_cleaned_up
from .streams_app import make_stream_app

TOKEN = "x-graphql-event-stream-token"
ALICE = {"authorization": "Bearer alice"}
BOB = {"authorization": "Bearer bob"}
EVENT_STREAM = {"accept": "text/event-stream"}
LIMIT = {"errors": [{"message": "Subscription limit reached"}]}


def op(op_id: str, query: str) -> dict[str, Any]:
    return {"query": query, "extensions": {"operationId": op_id}}


@pytest.fixture
async def server(start_server: Any, tracker: Tracker) -> Server:
    return await start_server(app=make_stream_app(tracker, users=True))


async def test_unopened_reservations_per_user_are_capped(server: Server) -> None:
    api = f"{server.url}/api"
    async with httpx.AsyncClient() as client:
        tokens = []
        for _ in range(MAX_WAITING_PER_OWNER):
            reserved = await client.put(api, headers=ALICE)
            assert reserved.status_code == 201
            tokens.append(reserved.text)
        refused = await client.put(api, headers=ALICE)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == str(int(RESERVATION_TTL))
        assert refused.json() == {"errors": [{"message": "Too many reservations waiting"}]}
        assert (await client.put(api, headers=BOB)).status_code == 201  # per user
        # A reservation whose stream opens no longer waits: its slot is free.
        async with client.stream(
            "GET", api, params={"token": tokens[0]}, headers={**ALICE, **EVENT_STREAM}
        ) as response:
            assert response.status_code == 200
            assert (await client.put(api, headers=ALICE)).status_code == 201
            assert (await client.put(api, headers=ALICE)).status_code == 429


async def test_unopened_reservations_per_server_are_capped(server: Server) -> None:
    registry = reservations_of(server.state)
    registry.max_waiting = 2
    api = f"{server.url}/api"
    async with httpx.AsyncClient() as client:
        assert (await client.put(api, headers=ALICE)).status_code == 201
        assert (await client.put(api, headers=BOB)).status_code == 201
        refused = await client.put(api, headers={"authorization": "Bearer carol"})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == str(int(RESERVATION_TTL))
        assert refused.json() == {"errors": [{"message": "Too many streams being reserved"}]}
    assert registry.waiting == 2


async def test_anonymous_reservations_have_only_the_server_cap(
    start_server: Any, tracker: Tracker
) -> None:
    """Without ``authenticate`` every client is the same owner (None): a per-owner
    cap would let one client lock every other out, so only the server-wide one holds."""
    server = await start_server(app=make_stream_app(tracker))
    async with httpx.AsyncClient() as client:
        for _ in range(MAX_WAITING_PER_OWNER + 1):
            assert (await client.put(f"{server.url}/api")).status_code == 201
    assert reservations_of(server.state).waiting == MAX_WAITING_PER_OWNER + 1


def test_expired_and_opened_reservations_give_their_slots_back() -> None:
    """The counts behind the caps stay exact however a reservation stops waiting."""
    registry = Reservations(ttl=10, max_waiting=3, max_waiting_per_owner=2)
    first = registry.reserve("alice", 0)
    second = registry.reserve("alice", 1)
    with pytest.raises(ReservationRefused) as per_owner:
        registry.reserve("alice", 2)
    assert per_owner.value.status == 429
    registry.reserve("bob", 2)
    with pytest.raises(ReservationRefused) as per_server:
        registry.reserve("carol", 3)
    assert per_server.value.status == 503
    assert registry.waiting == 3
    # Found expired (removed there), then swept by the next PUT: counted back once.
    assert registry.find(first.token, "alice", 10) is None
    assert registry.waiting == 2
    registry.reserve("carol", 10)
    assert registry.waiting == 3
    # Its stream opened: it no longer waits, so alice may reserve again.
    registry.open(second, cast(Any, object()))
    assert registry.waiting == 2
    registry.reserve("alice", 10)
    registry.drop(second)  # the stream closed: nothing more to give back
    assert registry.waiting == 3
    # Once all have expired, every slot is free, per owner too.
    for owner in ("alice", "alice", "bob"):
        registry.reserve(owner, 100)
    assert registry.waiting == 3
    assert len(registry) == 3


async def test_operations_of_a_reservation_are_capped(start_server: Any, tracker: Tracker) -> None:
    """Held before the stream opens or running on it, a reservation's operations
    count against ``max_operations``, as a WebSocket connection's do."""
    server = await start_server(app=make_stream_app(tracker, users=True), max_operations=2)
    api = f"{server.url}/api"
    silent = "subscription { silent }"
    async with httpx.AsyncClient() as client:
        token = (await client.put(api, headers=ALICE)).text
        headers = {**ALICE, TOKEN: token}
        for op_id in ("a", "b"):
            posted = await client.post(api, json=op(op_id, silent), headers=headers)
            assert posted.status_code == 202
        refused = await client.post(api, json=op("c", silent), headers=headers)
        assert refused.status_code == 429
        assert refused.json() == LIMIT
        held = reservations_of(server.state).find(token, "alice", trio.current_time())
        assert held is not None and len(held.pending) == 2
        stopped = await client.delete(f"{api}?operationId=a", headers=headers)
        assert stopped.status_code == 200
        assert (await client.post(api, json=op("c", silent), headers=headers)).status_code == 202
        async with client.stream("GET", api, headers={**headers, **EVENT_STREAM}) as response:
            assert response.status_code == 200
            with trio.fail_after(5):
                await server.metrics.wait_for(lambda m: m.live_operations == 2)
            refused = await client.post(api, json=op("d", silent), headers=headers)
            assert refused.status_code == 429
            assert refused.json() == LIMIT
            assert (await client.delete(f"{api}?operationId=b", headers=headers)).status_code == 200
            with trio.fail_after(5):
                await server.metrics.wait_for(lambda m: m.live_operations == 1)
            posted = await client.post(api, json=op("d", silent), headers=headers)
            assert posted.status_code == 202
    await all_cleaned_up(server)
    assert sorted(tracker.cleanups) == ["silent"] * 3


async def test_operations_held_before_the_stream_opens_are_capped_even_unlimited(
    start_server: Any, tracker: Tracker
) -> None:
    """Until its stream opens a reservation holds at most ``MAX_PENDING``
    operations, whatever ``max_operations`` is (without it, ``None`` let one
    token hold any number of parsed operations, times every waiting token)."""
    server = await start_server(app=make_stream_app(tracker, users=True), max_operations=None)
    api = f"{server.url}/api"
    silent = "subscription { silent }"
    async with httpx.AsyncClient() as client:
        token = (await client.put(api, headers=ALICE)).text
        headers = {**ALICE, TOKEN: token}
        for n in range(MAX_PENDING):
            posted = await client.post(api, json=op(str(n), silent), headers=headers)
            assert posted.status_code == 202
        refused = await client.post(api, json=op("over", silent), headers=headers)
        assert refused.status_code == 429
        assert refused.json() == {
            "errors": [{"message": "Too many operations before the stream opened"}]
        }
        async with client.stream("GET", api, headers={**headers, **EVENT_STREAM}) as response:
            assert response.status_code == 200
            with trio.fail_after(5):
                await server.metrics.wait_for(lambda m: m.live_operations == MAX_PENDING)
            # Once the stream is open only max_operations (here none) bounds them.
            for n in range(MAX_PENDING, MAX_PENDING + 4):
                posted = await client.post(api, json=op(str(n), silent), headers=headers)
                assert posted.status_code == 202
            with trio.fail_after(5):
                await server.metrics.wait_for(lambda m: m.live_operations == MAX_PENDING + 4)
    await all_cleaned_up(server)


async def test_a_stream_whose_client_resets_before_the_headers_gives_its_reservation_back(
    tracker: Tracker,
) -> None:
    """A client that resets as its event stream opens (the first send fails) must
    not leave the reservation marked open: nothing would ever sweep it."""
    asgi = ASGIApp(make_stream_app(tracker, users=True), Config(port=0, keepalive=0))
    registry = reservations_of(asgi.state)

    async def request(method: str, query: bytes, headers: dict[str, str], send: Any) -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        scope = {
            "type": "http",
            "method": method,
            "path": "/api",
            "query_string": query,
            "headers": [(k.encode(), v.encode()) for k, v in {**ALICE, **headers}.items()],
            "client": ("127.0.0.1", 1),
        }
        await asgi(scope, receive, send)

    sent: list[dict[str, Any]] = []

    async def keep(message: dict[str, Any]) -> None:
        sent.append(message)

    async def reset(message: dict[str, Any]) -> None:
        raise ConnectionResetError("peer reset")

    with trio.fail_after(5):
        async with asgi.state.running():
            await request("PUT", b"", {}, keep)
            assert sent[0]["status"] == 201
            token = sent[1]["body"].decode()
            await request("GET", f"token={token}".encode(), EVENT_STREAM, reset)
            assert [r for r in registry._by_token.values() if r.stream is not None] == []
            assert len(registry) == 0
            assert asgi.state.http_streams == set()


async def test_request_bytes_held_before_the_stream_opens_are_capped(
    start_server: Any, tracker: Tracker
) -> None:
    """Sixteen posts of a 1 MiB body on each of 64 tokens parked about a gigabyte
    until they expired: now a reservation holds ``MAX_PENDING_BYTES`` of them,
    the server ``MAX_PARKED_BYTES``, and an opened stream gives its bytes back."""
    server = await start_server(app=make_stream_app(tracker, users=True))
    registry = reservations_of(server.state)
    api = f"{server.url}/api"
    big = {**op("big", "subscription { silent }"), "variables": {"pad": "x" * 200_000}}
    async with httpx.AsyncClient() as client:
        token = (await client.put(api, headers=ALICE)).text
        headers = {**ALICE, TOKEN: token}
        first = await client.post(api, json=big, headers=headers)
        assert first.status_code == 202 and registry.parked_bytes > 200_000
        again = {**big, "extensions": {"operationId": "big2"}}
        second = await client.post(api, json=again, headers=headers)
        assert second.status_code == 429
        assert second.json() == {
            "errors": [{"message": "Too many operation bytes before the stream opened"}]
        }
        other = (await client.put(api, headers=BOB)).text
        registry.max_parked_bytes = registry.parked_bytes + 1000  # the server's bound, reached
        refused = await client.post(api, json=big, headers={**BOB, TOKEN: other})
        assert refused.status_code == 503
        async with client.stream("GET", api, headers={**headers, **EVENT_STREAM}) as response:
            assert response.status_code == 200
            with trio.fail_after(5):
                await server.metrics.wait_for(lambda m: m.live_operations == 1)
            assert registry.parked_bytes == 0  # the opened stream holds them now, not the cap
    await all_cleaned_up(server)
