"""Subscription interceptors over real sockets: order, refusal, adjustment,
``leave`` exactly once, PerUserLimit across connections, AuditLog lines.

The server runs in the test's own Trio loop, so a recording interceptor's
``leave`` sets a :class:`trio.Event` the test awaits: no sleeps.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Context, Server
from meshsub_trio.interceptors import (
    AuditLog,
    Interceptor,
    OperationInfo,
    OperationOutcome,
    PerUserLimit,
    Refused,
)

from ..wsclient import LEGACY, TRANSPORT, RawClient, open_raw_client

StartServer = Callable[..., Awaitable[Server]]

SCHEMA = """
type Query { hello: String! }
type Subscription { countdown(from: Int!): Int!  forever: Int!  whoami: String! }
"""
COUNT = "subscription Count($n: Int!) { countdown(from: $n) }"
FOREVER = "subscription Forever { forever }"


def build_app(interceptors: list[Interceptor]) -> App:
    """Finite, endless and context-echoing subscriptions; the user is ``connectionParams.user``."""

    async def authenticate(ctx: Context) -> Any:
        return (ctx.connection_params or {}).get("user") or ctx.headers.get("x-user")

    async def countdown(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        for n in range(args["from"], 0, -1):
            emit(n)
            await trio.lowlevel.checkpoint()

    async def forever(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        emit(0)
        await trio.sleep_forever()

    async def whoami(ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        emit(str(ctx.auth))

    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _root, _info: "world"}},
        streamers={"countdown": countdown, "forever": forever, "whoami": whoami},
        authenticate=authenticate,
        interceptors=interceptors,
    )


class Recorder:
    """Appends every enter/leave to a shared journal; ``ended[id]`` is set on leave."""

    def __init__(self, name: str, journal: list[tuple[str, ...]]) -> None:
        self.name = name
        self.journal = journal
        self.ended: defaultdict[str, trio.Event] = defaultdict(trio.Event)
        self.outcomes: dict[str, list[OperationOutcome]] = defaultdict(list)
        self.seen: dict[str, OperationInfo] = {}
        self.infos: list[OperationInfo] = []  # HTTP streams may share an id

    async def enter(self, op: OperationInfo) -> None:
        self.seen[op.id] = op
        self.infos.append(op)
        self.journal.append(("enter", self.name, op.id))

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        self.journal.append(("leave", self.name, op.id, outcome.reason))
        self.outcomes[op.id].append(outcome)
        self.ended[op.id].set()

    async def wait_ended(self, op_id: str) -> OperationOutcome:
        with trio.fail_after(5):
            await self.ended[op_id].wait()
        return self.outcomes[op_id][-1]


class Adjust:
    """Halves ``$n`` and marks the user: both must reach the streamers."""

    async def enter(self, op: OperationInfo) -> None:
        if "n" in op.variables:
            op.variables["n"] = op.variables["n"] // 2
        op.context = replace(op.context, auth=f"adjusted:{op.context.auth}")

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        pass


class RefuseNamed:
    """Refuses operations named ``Forbidden``."""

    async def enter(self, op: OperationInfo) -> None:
        if op.operation_name == "Forbidden":
            raise Refused("not for you", code="FORBIDDEN_OPERATION")

    def leave(self, op: OperationInfo, outcome: OperationOutcome) -> None:
        assert op.operation_name != "Forbidden", "leave must not run when enter refused"


@asynccontextmanager
async def client(
    server: Server, user: str = "alice", protocol: str = TRANSPORT
) -> AsyncIterator[RawClient]:
    async with open_raw_client(server.port, subprotocols=[protocol]) as ws:
        ack = await ws.init({"user": user})
        assert ack["type"] == "connection_ack"
        yield ws


async def subscribe(
    ws: RawClient, op_id: str, query: str, variables: dict[str, Any] | None = None
) -> None:
    kind = "subscribe" if ws.subprotocol == TRANSPORT else "start"
    payload: dict[str, Any] = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    await ws.send({"id": op_id, "type": kind, "payload": payload})


async def first_reply(ws: RawClient, op_id: str) -> dict[str, Any]:
    """The first non-keepalive message for *op_id*."""
    while True:
        message = await ws.receive()
        if message.get("id") == op_id:
            return message


async def test_enter_in_order_leave_in_reverse_and_adjustments_reach_the_streamer(
    start_server: StartServer,
) -> None:
    journal: list[tuple[str, ...]] = []
    first, second = Recorder("first", journal), Recorder("second", journal)
    server = await start_server(build_app([first, Adjust(), second]))
    async with client(server) as ws:
        await subscribe(ws, "c", COUNT, {"n": 6})
        messages = await ws.receive_until("complete")
        assert [m["payload"]["data"]["countdown"] for m in messages if m["type"] == "next"] == [
            3,
            2,
            1,
        ]
        outcome = await first.wait_ended("c")
        assert journal == [
            ("enter", "first", "c"),
            ("enter", "second", "c"),
            ("leave", "second", "c", "complete"),
            ("leave", "first", "c", "complete"),
        ]
        assert outcome.sent == 4  # three next, one complete
        info = second.seen["c"]
        assert (info.kind, info.protocol, info.transport) == ("subscription", TRANSPORT, "ws")
        assert (info.operation_name, info.document) == ("Count", COUNT)

        await subscribe(ws, "w", "subscription { whoami }")
        messages = await ws.receive_until("complete")
        assert messages[0]["payload"] == {"data": {"whoami": "adjusted:alice"}}
        # The adjustment was the operation's own: the connection's user is unchanged.
        await subscribe(ws, "w2", "subscription { whoami }")
        messages = await ws.receive_until("complete")
        assert messages[0]["payload"] == {"data": {"whoami": "adjusted:alice"}}


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_a_refusal_is_the_error_a_validation_error_gets(
    start_server: StartServer, protocol: str
) -> None:
    journal: list[tuple[str, ...]] = []
    outer = Recorder("outer", journal)
    server = await start_server(build_app([outer, RefuseNamed()]))
    async with client(server, protocol=protocol) as ws:
        await subscribe(ws, "bad", "subscription { nope }")
        invalid = await first_reply(ws, "bad")
        await subscribe(ws, "r", "subscription Forbidden { forever }")
        refused = await first_reply(ws, "r")
        assert refused["type"] == invalid["type"] == "error"
        assert isinstance(invalid["payload"], list) is isinstance(refused["payload"], list)
        errors = refused["payload"] if isinstance(refused["payload"], list) else [refused["payload"]]
        assert errors[0]["message"] == "not for you"
        assert errors[0]["extensions"] == {"code": "FORBIDDEN_OPERATION"}
        outcome = await outer.wait_ended("r")
        assert outcome.reason == "refused"
        # An invalid document never reached the chain; the socket still serves.
        assert [entry[2] for entry in journal] == ["r", "r"]
        await subscribe(ws, "ok", FOREVER)
        assert (await first_reply(ws, "ok"))["type"] in ("next", "data")


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_leave_runs_once_on_complete_client_stop_and_connection_drop(
    start_server: StartServer, protocol: str
) -> None:
    journal: list[tuple[str, ...]] = []
    recorder = Recorder("r", journal)
    server = await start_server(build_app([recorder]))
    stop = "complete" if protocol == TRANSPORT else "stop"
    async with client(server, protocol=protocol) as ws:
        await subscribe(ws, "done", COUNT, {"n": 1})
        assert (await recorder.wait_ended("done")).reason == "complete"
        await subscribe(ws, "stopped", FOREVER)
        await first_reply(ws, "stopped")
        await ws.send({"id": "stopped", "type": stop})
        assert (await recorder.wait_ended("stopped")).reason == "stopped"
        await subscribe(ws, "dropped", FOREVER)
        await first_reply(ws, "dropped")
    assert (await recorder.wait_ended("dropped")).reason == "closed"
    assert {key: len(value) for key, value in recorder.outcomes.items()} == {
        "done": 1,
        "stopped": 1,
        "dropped": 1,
    }


async def test_per_user_limit_counts_across_connections(start_server: StartServer) -> None:
    journal: list[tuple[str, ...]] = []
    recorder = Recorder("r", journal)  # first: its leave runs after the limit's
    limit = PerUserLimit(max_active=2)
    server = await start_server(build_app([recorder, limit]))
    async with client(server, "alice") as one, client(server, "alice") as two:
        await subscribe(one, "a1", FOREVER)
        await first_reply(one, "a1")
        await subscribe(two, "a2", FOREVER)
        await first_reply(two, "a2")
        await subscribe(two, "a3", FOREVER)
        refused = await first_reply(two, "a3")
        assert refused["type"] == "error"
        error = refused["payload"][0]
        assert "at most 2 per user" in error["message"]
        assert error["extensions"] == {"code": "SUBSCRIPTION_LIMIT", "limit": "max_active", "max": 2}
        # Queries are not subscriptions: they pass.
        await subscribe(two, "q", "{ hello }")
        assert (await first_reply(two, "q"))["type"] == "next"
        async with client(server, "bob") as bob:
            await subscribe(bob, "b1", FOREVER)
            assert (await first_reply(bob, "b1"))["type"] == "next"
        assert limit.active("alice") == 2
        await one.send({"id": "a1", "type": "complete"})
        await recorder.wait_ended("a1")
        assert limit.active("alice") == 1
        await subscribe(two, "a4", FOREVER)
        assert (await first_reply(two, "a4"))["type"] == "next"
    await recorder.wait_ended("a4")
    await recorder.wait_ended("a2")
    assert limit.active("alice") == 0


async def test_per_user_limit_caps_the_subscribe_rate(start_server: StartServer) -> None:
    recorder = Recorder("r", [])
    limit = PerUserLimit(max_per_minute=2)
    server = await start_server(build_app([recorder, limit]))
    async with client(server) as ws:
        for op_id in ("s1", "s2"):
            await subscribe(ws, op_id, COUNT, {"n": 1})
            assert (await recorder.wait_ended(op_id)).reason == "complete"
        await subscribe(ws, "s3", COUNT, {"n": 1})
        refused = await first_reply(ws, "s3")
        assert refused["payload"][0]["extensions"]["limit"] == "max_per_minute"
    async with client(server, "bob") as bob:
        await subscribe(bob, "b", COUNT, {"n": 1})
        assert (await first_reply(bob, "b"))["type"] == "next"


async def test_audit_log_writes_one_line_at_start_and_one_at_end(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="test.audit")
    recorder = Recorder("r", [])
    audit = AuditLog(logging.getLogger("test.audit"))
    server = await start_server(build_app([recorder, audit, RefuseNamed()]))
    async with client(server) as ws:
        await subscribe(ws, "c", COUNT, {"n": 2})
        await recorder.wait_ended("c")
        await subscribe(ws, "r", "subscription Forbidden { forever }")
        await recorder.wait_ended("r")
    lines = [r for r in caplog.records if r.name == "test.audit"]
    assert [r.getMessage().split(":")[0] for r in lines] == [
        "operation started",
        "operation ended",
        "operation started",
        "operation ended",
    ]
    started, ended = lines[0], lines[1]
    assert started.levelno == ended.levelno == logging.INFO
    assert "user=alice name=Count id=c" in started.getMessage()
    assert (ended.__dict__["user"], ended.__dict__["operation_name"]) == ("alice", "Count")
    assert ended.__dict__["reason"] == "complete" and ended.__dict__["sent"] == 3
    assert ended.__dict__["duration_s"] >= 0
    assert "reason=refused" in lines[3].getMessage()


async def test_http_streams_go_through_the_chain(start_server: StartServer) -> None:
    recorder = Recorder("r", [])
    server = await start_server(build_app([recorder, Adjust(), RefuseNamed()]))
    headers = {"accept": "text/event-stream", "x-user": "carol"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        body = {"query": COUNT, "variables": {"n": 4}}
        response = await http.post("/api", json=body, headers=headers)
        assert response.status_code == 200, response.text
        assert response.text.count("event: next") == 2  # $n halved
        body = {"query": "subscription Forbidden { forever }"}
        response = await http.post("/api", json=body, headers=headers)
        assert "not for you" in response.text
    infos = recorder.infos
    assert [(i.transport, i.protocol) for i in infos] == [("sse", "sse"), ("sse", "sse")]
    assert infos[0].context.auth == "adjusted:carol"
    await recorder.wait_ended(infos[0].id)
    outcomes = recorder.outcomes[infos[0].id]
    with trio.fail_after(5):
        while len(outcomes) < 2:  # both streams share an id: wait for the second leave
            recorder.ended[infos[0].id] = trio.Event()
            await recorder.ended[infos[0].id].wait()
    assert [o.reason for o in outcomes] == ["complete", "refused"]
