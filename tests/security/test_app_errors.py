"""Application bugs reach clients as a bare "Internal error", never their text.

Issue item 11: ``ticks(everyMs: null)`` sent Python's TypeError text to the
client. An exception that is not a GraphQLError (nor an AuthError), raised by
a resolver, a subscribe resolver or a streamer, now reaches the client as
``Internal error (operation N)`` with a reference, and the server logs the
traceback under that reference with the operation id. Errors an app raises on
purpose (GraphQLError and subclasses, with their extensions) pass unchanged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio
from graphql import GraphQLError

from meshsub_trio import App, AuthError, Server, Streamer
from meshsub_trio.examples.countdown import ticks

from ..wsclient import LEGACY, TRANSPORT, RawClient, open_raw_client
from .conftest import bystander

StartServer = Callable[..., Any]

SOON = 0.5
SECRET = "/srv/app/secret.py: password=hunter2"
REF = re.compile(r"^[0-9a-f]{8}$")


def internal_error_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "meshsub_trio.errors"]


def assert_masked(error: dict[str, Any], label: str) -> str:
    """*error* is the bare internal error for *label*; returns its reference."""
    assert error["message"] == f"Internal error ({label})", error
    assert SECRET not in str(error)
    extensions = error["extensions"]
    assert extensions["code"] == "INTERNAL_SERVER_ERROR"
    assert REF.match(extensions["ref"]), extensions
    return str(extensions["ref"])


def assert_logged(caplog: pytest.LogCaptureFixture, ref: str, label: str, kind: type) -> None:
    """Exactly one log record for *ref*, naming *label*, with the traceback."""
    records = [r for r in internal_error_logs(caplog) if ref in r.getMessage()]
    assert len(records) == 1, [r.getMessage() for r in internal_error_logs(caplog)]
    record = records[0]
    assert label in record.getMessage()
    assert record.exc_info is not None and record.exc_info[0] is kind


async def subscribe(client: RawClient, op_id: str, query: str) -> None:
    kind = "subscribe" if client.subprotocol == TRANSPORT else "start"
    await client.send({"id": op_id, "type": kind, "payload": {"query": query}})


async def receive(client: RawClient) -> dict[str, Any]:
    """The next message that is not a graphql-ws keep-alive."""
    while True:
        message = await client.receive()
        if message["type"] != "ka":
            return message


def first_error(message: dict[str, Any]) -> dict[str, Any]:
    payload = message["payload"]
    error: dict[str, Any] = payload[0] if isinstance(payload, list) else payload
    return error


# ---- the reported case: the countdown example's ticks(everyMs: null) -------------


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_streamer_bug_is_masked_and_logged(
    server: Server, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meshsub_trio.errors")
    async with (
        bystander(server.port),
        open_raw_client(server.port, subprotocols=[protocol]) as client,
    ):
        await client.init()
        with trio.fail_after(SOON):
            await subscribe(client, "3", "subscription { ticks(everyMs: null) }")
            message = await receive(client)
            while message["type"] in ("next", "data"):  # ticks emits before it sleeps
                message = await receive(client)
    assert message["type"] == "error" and message["id"] == "3", message
    assert "NoneType" not in str(message) and "TypeError" not in str(message)
    ref = assert_masked(first_error(message), "operation 3")
    assert_logged(caplog, ref, "operation 3", TypeError)


# ---- an app with bugs and with errors it raises on purpose -----------------------

SCHEMA = """
type Query {
  hello: String
  buggy: String
  refused: String
  badInput: String
  notAllowed: String
}
type Subscription {
  ticks(everyMs: Int = 50): Int!
  brokenSource: Int
  brokenEvent: Event
  shared: Int
}
type Event { ok: Int buggy: String }
"""


class BadInput(GraphQLError):
    """What Meshery's ``_user_errors`` raises: a GraphQLError with a code."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "BAD_USER_INPUT"})


def raise_(error: Exception) -> Callable[..., Any]:
    def resolve(*_: Any, **__: Any) -> Any:
        raise error

    return resolve


class Gate:
    """Lets the shared streamer fail when the test says so."""

    def __init__(self) -> None:
        self.fail = trio.Event()


def buggy_app(gate: Gate) -> App:
    async def broken_source(_root: Any, _info: Any) -> Any:
        raise KeyError(SECRET)
        yield  # an async generator that fails on its first step

    async def events(_root: Any, _info: Any) -> Any:
        for n in range(3):
            yield {"ok": n}

    def buggy_field(event: dict[str, Any], _info: Any) -> str:
        if event["ok"] == 1:
            raise ValueError(SECRET)
        return "fine"

    async def shared(_ctx: Any, _args: Any, emit: Any) -> None:
        emit(1)
        await gate.fail.wait()
        raise RuntimeError(SECRET)

    return App(
        SCHEMA,
        resolvers={
            "Query": {
                "hello": lambda *_: "hi",
                "buggy": raise_(ZeroDivisionError(SECRET)),
                "refused": raise_(GraphQLError("Not today.")),
                "badInput": raise_(BadInput("page must be a number")),
                "notAllowed": raise_(AuthError("Sign in first.")),
            },
            "Subscription": {"brokenSource": broken_source, "brokenEvent": events},
            "Event": {"buggy": buggy_field},
        },
        streamers={"ticks": ticks, "shared": Streamer(shared, share="events")},
    )


@pytest.fixture
def gate() -> Gate:
    return Gate()


@pytest.fixture
async def buggy(start_server: StartServer, gate: Gate) -> Server:
    server: Server = await start_server(app=buggy_app(gate))
    return server


async def test_resolver_bugs_are_masked_over_http(
    buggy: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meshsub_trio.errors")
    query = "{ hello buggy refused badInput notAllowed }"
    async with bystander(buggy.port), httpx.AsyncClient(base_url=buggy.url) as http:
        with trio.fail_after(SOON):
            response = await http.post("/api", json={"query": query})
    body = response.json()
    assert body["data"] == {
        "hello": "hi",
        "buggy": None,
        "refused": None,
        "badInput": None,
        "notAllowed": None,
    }
    errors = {tuple(e["path"]): e for e in body["errors"]}
    masked = errors[("buggy",)]
    ref = assert_masked(masked, "HTTP request")
    assert masked["locations"] == [{"line": 1, "column": 9}]
    assert_logged(caplog, ref, "HTTP request", ZeroDivisionError)
    # What the app raised on purpose passes as it was written.
    assert errors[("refused",)]["message"] == "Not today."
    assert errors[("badInput",)]["message"] == "page must be a number"
    assert errors[("badInput",)]["extensions"] == {"code": "BAD_USER_INPUT"}
    assert errors[("notAllowed",)]["message"] == "Sign in first."
    assert SECRET not in response.text


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_resolver_bugs_are_masked_over_websockets(
    buggy: Server, protocol: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meshsub_trio.errors")
    async with (
        bystander(buggy.port),
        open_raw_client(buggy.port, subprotocols=[protocol]) as client,
    ):
        await client.init()
        with trio.fail_after(SOON):
            await subscribe(client, "q", "{ buggy refused }")
            message = await receive(client)
    assert message["type"] in ("next", "data") and message["id"] == "q"
    errors = {tuple(e["path"]): e for e in message["payload"]["errors"]}
    ref = assert_masked(errors[("buggy",)], "operation q")
    assert errors[("refused",)]["message"] == "Not today."
    assert_logged(caplog, ref, "operation q", ZeroDivisionError)


async def test_a_subscribe_resolver_bug_is_masked(
    buggy: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meshsub_trio.errors")
    async with (
        bystander(buggy.port),
        open_raw_client(buggy.port, subprotocols=[TRANSPORT]) as client,
    ):
        await client.init()
        with trio.fail_after(SOON):
            await subscribe(client, "s", "subscription { brokenSource }")
            message = await receive(client)
    assert message["type"] == "error" and message["id"] == "s", message
    ref = assert_masked(first_error(message), "operation s")
    assert_logged(caplog, ref, "operation s", KeyError)


async def test_an_event_field_bug_is_masked_and_the_stream_goes_on(
    buggy: Server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meshsub_trio.errors")
    async with (
        bystander(buggy.port),
        open_raw_client(buggy.port, subprotocols=[TRANSPORT]) as client,
    ):
        await client.init()
        with trio.fail_after(SOON):
            await subscribe(client, "e", "subscription { brokenEvent { ok buggy } }")
            messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == ["next", "next", "next", "complete"]
    middle = messages[1]["payload"]
    assert middle["data"] == {"brokenEvent": {"ok": 1, "buggy": None}}
    (error,) = middle["errors"]
    assert error["path"] == ["brokenEvent", "buggy"]
    ref = assert_masked(error, "operation e")
    assert_logged(caplog, ref, "operation e", ValueError)


async def test_a_shared_streamer_bug_is_masked_for_every_member_and_logged_once(
    buggy: Server, gate: Gate, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="meshsub_trio.errors")
    async with (
        bystander(buggy.port),
        open_raw_client(buggy.port, subprotocols=[TRANSPORT]) as one,
        open_raw_client(buggy.port, subprotocols=[TRANSPORT]) as two,
    ):
        for client in (one, two):
            await client.init()
            await subscribe(client, "1" if client is one else "2", "subscription { shared }")
        with trio.fail_after(2):
            await buggy.metrics.wait_for(lambda m: m.live_operations == 3)  # + the bystander
        gate.fail.set()
        with trio.fail_after(SOON):
            errors = [await receive_error(one), await receive_error(two)]
    refs = {assert_masked(first_error(e), f"operation {e['id']}") for e in errors}
    assert len(refs) == 1
    assert_logged(caplog, refs.pop(), "operation", RuntimeError)


async def receive_error(client: RawClient) -> dict[str, Any]:
    while True:
        message = await receive(client)
        if message["type"] == "error":
            return message
