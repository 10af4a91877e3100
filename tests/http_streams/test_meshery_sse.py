"""Meshery's SSE routes and the events long-poll, over real sockets with raw httpx.

Streams are parsed by the server's own sans-IO :class:`SseParser`; events are
published through the real model (or the REST route) while clients listen.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import MemoryBroker, Server
from meshsub_trio._decimal import decimal
from meshsub_trio._wire._sse import SseEvent, SseParser
from meshsub_trio.meshery import create_app

SUBSCRIBE = "/api/system/events/subscribe"
CONTROLLERS = "/api/system/controllers/status/subscribe"
EVENTS = "/api/system/events"
TOKENS = {"alice-token": "alice", "bob-token": "bob"}
ALICE = {"authorization": "Bearer alice-token"}
BOB = {"authorization": "Bearer bob-token"}


class Reader:
    """An open SSE response, read event by event (bounded waits, never sleeps)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.parser = SseParser()
        self.pending: list[SseEvent] = []
        self.raw = bytearray()
        self._chunks = response.aiter_raw()

    def _feed(self, chunk: bytes) -> None:
        self.raw += chunk
        self.pending += self.parser.receive_data(chunk)

    async def take(self, count: int, timeout: float = 5.0) -> list[SseEvent]:
        with trio.fail_after(timeout):
            while len(self.pending) < count:
                self._feed(await anext(self._chunks))
        taken, self.pending = self.pending[:count], self.pending[count:]
        return taken

    async def comments_reach(self, count: int, timeout: float = 5.0) -> None:
        with trio.fail_after(timeout):
            while self.parser.comments < count:
                self._feed(await anext(self._chunks))

    async def rest(self, timeout: float = 5.0) -> list[SseEvent]:
        """Everything up to the end of the body (fails if it does not end)."""
        with trio.fail_after(timeout):
            async for chunk in self._chunks:
                self._feed(chunk)
        rest, self.pending = self.pending, []
        return rest


@asynccontextmanager
async def sse(
    http: httpx.AsyncClient, path: str, headers: dict[str, str], **params: str
) -> AsyncIterator[Reader]:
    async with http.stream("GET", path, headers=headers, params=params) as response:
        assert response.status_code == 200, response.status_code
        yield Reader(response)


@pytest.fixture
async def meshery(start_server: Any) -> AsyncIterator[tuple[Server, Any, httpx.AsyncClient]]:
    app = create_app(simulator=False, tokens=TOKENS)
    app.sse.keepalive, app.sse.retry_ms = 0, 250
    server = await start_server(app=app)
    async with httpx.AsyncClient(base_url=server.url, timeout=5, verify=False) as http:
        yield server, app, http


def publish(app: Any, user: str, n: int) -> dict[str, Any]:
    event: dict[str, Any] = app.model.publish_event(
        user, {"severity": "informational", "description": f"event {n}", "category": "test"}
    )
    return event


def described(events: list[SseEvent]) -> list[str]:
    return [json.loads(e.data)["description"] for e in events]


async def readers_of(app: Any, user: str, count: int) -> None:
    """The user's events topic has *count* live log readers (streams attached)."""
    broker = app.model.broker

    def attached() -> int:
        log = broker._logs.get(f"meshery.events.{user}")
        return 0 if log is None else len(log.readers)

    with trio.fail_after(5):
        while attached() != count:
            await trio.sleep(0)  # a poll of in-process state, not timing: ends when it holds


async def test_meshkit_shape_ids_retry_and_headers(meshery: Any) -> None:
    _server, app, http = meshery
    async with sse(http, SUBSCRIBE, ALICE) as stream:
        headers = stream.response.headers
        assert headers["content-type"] == "text/event-stream; charset=utf-8"
        assert headers["cache-control"].startswith("no-cache")
        assert headers["x-accel-buffering"] == "no"
        await readers_of(app, "alice", 1)
        sent = publish(app, "alice", 1)
        [event] = await stream.take(1)
        assert stream.parser.retry_ms == 250
        assert event.event == "message"  # unnamed, as Meshery sends it
        body = json.loads(event.data)
        assert set(body) == {
            "id", "user_id", "system_id", "operation_id", "category", "action", "description",
            "severity", "status", "acted_upon", "metadata", "created_at", "updated_at",
        }  # fmt: skip
        assert body["id"] == sent["id"] and body["user_id"] == "alice"
        assert body["created_at"] == sent["createdAt"] and body["metadata"] == {}
        assert event.id is not None and event.id.isdigit()
    # The REST body keeps the GraphQL shape.
    page = (await http.get(EVENTS, headers=ALICE)).json()
    assert page["events"][0]["userID"] == "alice"


async def test_per_user_another_users_events_never_appear(meshery: Any) -> None:
    _server, app, http = meshery
    async with sse(http, SUBSCRIBE, ALICE) as alice, sse(http, SUBSCRIBE, BOB) as bob:
        await readers_of(app, "alice", 1)
        await readers_of(app, "bob", 1)
        for n in range(3):
            publish(app, "alice", n)
            publish(app, "bob", 100 + n)
        # Through the REST route too (the caller publishes to itself).
        posted = await http.post(
            EVENTS, headers=BOB, json={"severity": "warning", "description": "event 103"}
        )
        assert posted.status_code == 201
        assert described(await alice.take(3)) == ["event 0", "event 1", "event 2"]
        assert described(await bob.take(4)) == [f"event {n}" for n in (100, 101, 102, 103)]
        publish(app, "alice", 3)  # a marker: nothing of Bob's came before it
        assert described(await alice.take(1)) == ["event 3"]
        assert alice.pending == [] and bob.pending == []


async def test_unauthenticated_is_refused(meshery: Any) -> None:
    _server, _app, http = meshery
    response = await http.get(SUBSCRIBE)
    assert response.status_code == 401
    wrong = await http.post(SUBSCRIBE, headers=ALICE)
    assert wrong.status_code == 405 and wrong.headers["allow"] == "GET, HEAD"


async def test_last_event_id_resumes_exactly(meshery: Any) -> None:
    _server, app, http = meshery
    async with sse(http, SUBSCRIBE, ALICE) as first:
        await readers_of(app, "alice", 1)
        for n in range(3):
            publish(app, "alice", n)
        seen = await first.take(3)
    last_id = seen[-1].id
    assert last_id is not None
    await readers_of(app, "alice", 0)  # the first stream's feed was closed
    for n in range(3, 6):  # published while nobody listened
        publish(app, "alice", n)
    publish(app, "bob", 99)
    async with sse(http, SUBSCRIBE, {**ALICE, "last-event-id": seen[1].id or ""}) as again:
        replay = await again.take(4)
        assert described(replay) == [f"event {n}" for n in range(2, 6)]
        ids = [int(e.id or 0) for e in [*seen, *replay]]
        assert ids[3] == ids[2]  # it resumed exactly after the id it was given
        publish(app, "alice", 6)
        assert described(await again.take(1)) == ["event 6"]  # then live, none twice
        assert again.pending == []


async def test_expired_and_invalid_cursors_are_refused(start_server: Any) -> None:
    app = create_app(simulator=False, broker=MemoryBroker(log_capacity=3))
    app.sse.keepalive = 0
    server = await start_server(app=app)
    user = app.authenticator.users()[0].id
    for n in range(6):
        publish(app, user, n)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        expired = await http.get(SUBSCRIBE, headers={"last-event-id": "1"})
        assert expired.status_code == 410
        [error] = expired.json()["errors"]
        assert error["extensions"]["code"] == "CURSOR_EXPIRED"
        oldest = error["extensions"]["oldest"]
        for bad in ("not-a-cursor", "999999"):
            invalid = await http.get(SUBSCRIBE, headers={"last-event-id": bad})
            assert invalid.status_code == 400
            assert invalid.json()["errors"][0]["extensions"]["code"] == "CURSOR_INVALID"
        # The oldest resumable cursor works: every retained event after it.
        async with sse(http, SUBSCRIBE, {"last-event-id": oldest}) as stream:
            assert described(await stream.take(3)) == ["event 3", "event 4", "event 5"]
        polled = await http.get(EVENTS, params={"after": "1", "wait": "0"})
        assert polled.status_code == 410


async def test_keepalive_comments(start_server: Any) -> None:
    app = create_app(simulator=False)
    app.sse.keepalive = 0.05
    server = await start_server(app=app)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=5) as http,
        http.stream("GET", SUBSCRIBE) as response,
    ):
        reader = Reader(response)
        await reader.comments_reach(3)
        assert reader.pending == []
        assert reader.raw.startswith(b"retry: 1000\n\n: keepalive\n\n: keepalive\n\n")


async def test_disconnect_closes_the_feed_and_shutdown_ends_the_stream(meshery: Any) -> None:
    server, app, http = meshery
    async with sse(http, SUBSCRIBE, ALICE):
        await readers_of(app, "alice", 1)
    await readers_of(app, "alice", 0)
    async with sse(http, SUBSCRIBE, ALICE) as stream:
        await readers_of(app, "alice", 1)
        publish(app, "alice", 1)
        await stream.take(1)
        server.shutdown()
        assert await stream.rest() == []  # the body ended cleanly
    await readers_of(app, "alice", 0)


async def test_controllers_status_full_array_per_frame(meshery: Any) -> None:
    _server, app, http = meshery
    model = app.model
    context = model.upsert_context({"name": "a", "server": "https://a"}, owner="alice")
    other = model.upsert_context({"name": "b", "server": "https://b"}, owner="alice")
    wanted = context["connection_id"]
    async with sse(http, CONTROLLERS, ALICE, connectionIds=wanted) as stream:
        [first] = await stream.take(1)
        items = json.loads(first.data)
        assert {i["connectionId"] for i in items} == {wanted}
        assert set(items[0]) == {"connectionId", "controller", "status", "version"}
        new = "UNDEPLOYED" if items[0]["status"] != "UNDEPLOYED" else "DEPLOYED"
        model.set_controller_status(other["connection_id"], items[0]["controller"], new)
        model.set_controller_status(wanted, items[0]["controller"], new)
        [second] = await stream.take(1)
        changed = json.loads(second.data)
        assert len(changed) == len(items)  # the full array again
        assert changed[0]["status"] == new
        assert [i for i in changed[1:]] == items[1:]


async def test_long_poll_misses_nothing_across_polls(meshery: Any) -> None:
    _server, app, http = meshery
    plain = (await http.get(EVENTS, headers=ALICE)).json()
    assert set(plain) == {"events", "page", "page_size", "total_count", "count_by_severity_level"}
    publish(app, "alice", 0)
    got: list[str] = []
    cursors: list[str] = []
    after = "0"
    for n in range(1, 7):
        if n % 2:
            publish(app, "alice", n)  # between polls
            answer = await http.get(EVENTS, headers=ALICE, params={"after": after, "wait": "5"})
        else:
            async with trio.open_nursery() as nursery:  # during a poll that waits

                async def publish_while_waiting(n: int = n) -> None:
                    await readers_of(app, "alice", 1)
                    publish(app, "alice", n)

                nursery.start_soon(publish_while_waiting)
                answer = await http.get(EVENTS, headers=ALICE, params={"after": after, "wait": "5"})
        body = answer.json()
        assert answer.status_code == 200 and body["events"], body
        got += [e["event"]["description"] for e in body["events"]]
        cursors += [e["cursor"] for e in body["events"]]
        assert body["next"] == body["events"][-1]["cursor"]
        after = body["next"]
    assert got == [f"event {n}" for n in range(7)]
    assert [int(c) for c in cursors] == sorted({int(c) for c in cursors})
    with trio.fail_after(5):
        empty = await http.get(EVENTS, headers=ALICE, params={"after": after, "wait": "0.1"})
    assert empty.json() == {"events": [], "next": after}
    for wait in ("31", "-1", "soon"):
        bad = await http.get(EVENTS, headers=ALICE, params={"after": after, "wait": wait})
        assert bad.status_code == 400, wait


async def test_long_poll_with_wait_0_answers_with_what_is_there(meshery: Any) -> None:
    # wait=0 means "answer at once", not "answer empty": events already after
    # the cursor are in the answer (it once came back empty, cancelled before
    # taking them).
    _server, app, http = meshery
    for n in range(3):
        publish(app, "alice", n)
    with trio.fail_after(5):
        answer = await http.get(EVENTS, headers=ALICE, params={"after": "0", "wait": "0"})
    body = answer.json()
    assert [e["event"]["description"] for e in body["events"]] == ["event 0", "event 1", "event 2"]
    assert body["next"] == body["events"][-1]["cursor"]
    with trio.fail_after(5):
        again = await http.get(EVENTS, headers=ALICE, params={"after": body["next"], "wait": "0"})
    assert again.json() == {"events": [], "next": body["next"]}


async def test_a_cursor_ahead_of_the_log_does_not_tell_how_far_the_log_is(meshery: Any) -> None:
    # Security: cursors are one server-wide sequence, so echoing the newest one
    # let a user count and time every other user's writes.
    _server, app, http = meshery
    for n in range(12):
        newest = publish(app, "bob", n)
    last = str(app.model.broker.last_seq)
    assert int(last) >= 12
    for route, params, headers in (
        (EVENTS, {"after": "999999", "wait": "0"}, ALICE),
        (SUBSCRIBE, {}, {**ALICE, "last-event-id": "999999"}),
    ):
        refused = await http.get(route, params=params, headers=headers)
        assert refused.status_code == 400
        [error] = refused.json()["errors"]
        assert error["extensions"] == {"code": "CURSOR_INVALID"}
        assert last not in error["message"], error["message"]
    assert newest["description"] == "event 11"


async def test_cursors_that_are_not_plain_digits_are_invalid_not_internal_errors(
    meshery: Any,
) -> None:
    # "²" passes str.isdigit() and int() refuses it; so do 5,000 digits: each
    # was an internal error (a traceback per request, or a dropped connection).
    _server, _app, http = meshery
    for bad in ("\u00b2", "9" * 5000, "\uff11\uff12"):  # "²", 5,000 digits, fullwidth "12"
        polled = await http.get(EVENTS, headers=ALICE, params={"after": bad, "wait": "0"})
        assert polled.status_code == 400, polled.text
        [error] = polled.json()["errors"]
        assert error["extensions"] == {"code": "CURSOR_INVALID"}
        assert len(error["message"]) < 200
        raw = {**ALICE, "last-event-id": bad.encode("latin-1", "replace")}  # "²" as its byte
        streamed = await http.get(SUBSCRIBE, headers=raw)
        assert streamed.status_code == 400, streamed.text
        assert streamed.json()["errors"][0]["extensions"] == {"code": "CURSOR_INVALID"}


def test_decimal_takes_ascii_digits_only_and_bounded() -> None:
    assert decimal("0") == 0 and decimal("18446744073709551615") == 2**64 - 1
    for bad in ("", "\u00b2", "\uff11", "-1", "+1", " 1", "1_000", "1" * 21):
        assert decimal(bad) is None, bad
