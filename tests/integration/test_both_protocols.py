"""Behaviour both GraphQL WebSocket protocols share, checked once per protocol.

These items were written twice, once in the LEG-* suite (:mod:`.test_legacy_ws`)
and once in the TWS-* suite (:mod:`.test_transport_ws`); each test here names
both checklist items. Only the message names and the error payload's shape
differ between the protocols (one error object on legacy graphql-ws, a list
on graphql-transport-ws): :class:`Protocol` spells those out, so each
assertion is written once. What only one protocol does stays in its suite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from meshsub_trio import Context, Server

from ..wsclient import LEGACY, TRANSPORT, RawClient
from .test_legacy_ws import legacy_alive
from .test_legacy_ws import receive as receive_skipping_ka
from .test_transport_ws import (
    Connect,
    Probe,
    StartServer,
    bare_upgrade,
    build_app,
    still_open,
    until_close,
)


@dataclass(frozen=True)
class Protocol:
    """What one protocol calls things: the rest of a shared test is the same."""

    subprotocol: str
    #: The client's "run this operation" message type.
    start: str
    #: The server's message type for one result.
    data: str
    #: The client's "stop this operation" message type.
    stop: str

    async def start_op(self, client: RawClient, op_id: str, query: str, **payload: Any) -> None:
        await client.send({"id": op_id, "type": self.start, "payload": {"query": query, **payload}})

    async def receive(self, client: RawClient) -> dict[str, Any]:
        """The next message (legacy keep-alives skipped: legacy sends one after the ack)."""
        if self.subprotocol == LEGACY:
            return await receive_skipping_ka(client)
        return await client.receive()

    def result(self, data: Any, op_id: str = "1") -> dict[str, Any]:
        """The message carrying one result with *data*."""
        return {"id": op_id, "type": self.data, "payload": {"data": data}}

    def results(self, messages: list[dict[str, Any]], op_id: str) -> list[Any]:
        """The ``data`` of every result message for *op_id*."""
        return [
            m["payload"]["data"]
            for m in messages
            if m.get("id") == op_id and m["type"] == self.data
        ]

    def error_payload(self, message: str) -> Any:
        """The payload of an ``error`` carrying one error with *message*."""
        error = {"message": message}
        return error if self.subprotocol == LEGACY else [error]

    def errors(self, payload: Any) -> list[dict[str, Any]]:
        """An ``error`` payload as a list, checking its protocol's shape on the way."""
        if self.subprotocol == LEGACY:
            assert isinstance(payload, dict), payload
            return [payload]
        assert isinstance(payload, list), payload
        return payload

    async def alive(self, client: RawClient) -> None:
        """The socket still works (legacy: a query runs; transport: a ping is answered)."""
        if self.subprotocol == LEGACY:
            await legacy_alive(client)
        else:
            await still_open(client)


LEGACY_WS = Protocol(LEGACY, start="start", data="data", stop="stop")
TRANSPORT_WS = Protocol(TRANSPORT, start="subscribe", data="next", stop="complete")


@pytest.fixture(params=[LEGACY_WS, TRANSPORT_WS], ids=["legacy", "transport"])
def proto(request: pytest.FixtureRequest) -> Protocol:
    param: Protocol = request.param
    return param


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def app_server(start_server: StartServer, probe: Probe) -> Server:
    return await start_server(build_app(probe))


@pytest.fixture
def client_of(connect: Connect, app_server: Server, proto: Protocol) -> Callable[..., Any]:
    """``async with client_of() as client``: a client of the test app speaking *proto*."""

    def _open(target: Server | None = None, **kw: Any) -> Any:
        return connect(subprotocols=[proto.subprotocol], target=target or app_server, **kw)

    return _open


# ---- connection (LEG-02/TWS-11, LEG-06/TWS-15, LEG-07/TWS-24, LEG-21/TWS-04) --


async def test_on_connect_dict_is_ack_payload(
    start_server: StartServer, probe: Probe, connect: Connect, proto: Protocol
) -> None:
    """LEG-02, TWS-11: a dict returned by on_connect is sent as the ack payload."""

    async def on_connect(_ctx: Context) -> dict[str, Any]:
        return {"itsa": "me"}

    server = await start_server(build_app(probe, on_connect=on_connect))
    async with connect(subprotocols=[proto.subprotocol], target=server) as client:
        assert await client.init() == {"type": "connection_ack", "payload": {"itsa": "me"}}


async def test_second_init_after_ack_closes_4429(client_of: Any) -> None:
    """LEG-06, TWS-15: a second ``connection_init`` after the ack closes 4429."""
    async with client_of() as client:
        await client.init()
        await client.send({"type": "connection_init"})
        seen, code, reason = await until_close(client)
    assert [m for m in seen if m["type"] != "ka"] == []
    assert (code, reason) == (4429, "Too many initialisation requests")


async def test_start_before_init_closes_4401(
    client_of: Any, app_server: Server, proto: Protocol
) -> None:
    """LEG-07, TWS-24: an operation sent without ``connection_init`` closes 4401, runs nothing."""
    async with client_of() as client:
        await proto.start_op(client, "1", "{ hello }")
        seen, code, reason = await until_close(client)
    assert seen == []
    assert (code, reason) == (4401, "Unauthorized")
    assert app_server.metrics.operations_started == 0


async def test_invalid_utf8_text_frame_closes_1007(app_server: Server, proto: Protocol) -> None:
    """LEG-21, TWS-04: a text frame that is not UTF-8 closes 1007 (RFC 6455)."""
    async with bare_upgrade(
        app_server.port, headers=[("Sec-WebSocket-Protocol", proto.subprotocol)]
    ) as bare:
        payload = b'{"type":"\xff\xfe"}'
        await bare.stream.send_all(bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
        with trio.fail_after(5):
            opcode, body = await bare.receive_frame()
        assert opcode == 0x8
        assert int.from_bytes(body[:2], "big") == 1007
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()


# ---- results (LEG-08/TWS-27, LEG-09/TWS-28, LEG-12/TWS-35, LEG-13/TWS-32) ----


@pytest.mark.parametrize(
    ("query", "field", "values"),
    [
        ("subscription { countdown(to: 2) }", "countdown", [2, 1, 0]),
        ("subscription { gen(to: 2) }", "gen", [0, 1, 2]),
        ("subscription { countdown(to: 4) }", "countdown", [4, 3, 2, 1, 0]),
        ("subscription { gen(to: 4) }", "gen", [0, 1, 2, 3, 4]),
    ],
    ids=["streamer-2", "async-generator-2", "streamer-4", "async-generator-4"],
)
async def test_subscription_events_then_complete(
    client_of: Any, proto: Protocol, query: str, field: str, values: list[int]
) -> None:
    """LEG-08, TWS-27: each source event is one result; the end of the source is ``complete``."""
    async with client_of() as client:
        await client.init()
        await proto.start_op(client, "1", query)
        messages = await client.receive_until("complete")
        await client.expect_silence(0.05)
    assert messages == [
        *(proto.result({field: v}) for v in values),
        {"id": "1", "type": "complete"},
    ]


@pytest.mark.parametrize(
    ("query", "data"),
    [
        ("{ hello }", {"hello": "world"}),
        ("query TestString { hello }", {"hello": "world"}),
        ("mutation { bump }", {"bump": 1}),
    ],
    ids=["query", "named-query", "mutation"],
)
async def test_single_result_then_complete(
    client_of: Any, proto: Protocol, query: str, data: dict[str, Any]
) -> None:
    """LEG-09, TWS-28: a query or mutation gets exactly one result and then ``complete``."""
    async with client_of() as client:
        await client.init()
        await proto.start_op(client, "1", query)
        messages = await client.receive_until("complete")
        await client.expect_silence(0.05)
    assert messages == [proto.result(data), {"id": "1", "type": "complete"}]


@pytest.mark.parametrize(
    ("operation_name", "data"),
    [("A", {"hello": "world"}), ("B", {"fast": "fast"})],
)
async def test_operation_selected_by_name(
    client_of: Any, proto: Protocol, operation_name: str, data: dict[str, Any]
) -> None:
    """LEG-12, TWS-35: operationName picks its operation from a document with several."""
    async with client_of() as client:
        await client.init()
        await proto.start_op(
            client, "1", "query A { hello } query B { fast }", operationName=operation_name
        )
        messages = await client.receive_until("complete")
    assert proto.results(messages, "1") == [data]


async def test_field_errors_in_results_and_stream_continues(
    client_of: Any, proto: Protocol
) -> None:
    """LEG-13, TWS-32: a resolver error rides in the result's errors (with path) beside
    partial data; later events and ``complete`` follow."""
    async with client_of() as client:
        await client.init()
        await proto.start_op(client, "1", "subscription { events(to: 2) { n bad } }")
        messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == [proto.data, proto.data, proto.data, "complete"]
    assert messages[0]["payload"] == {"data": {"events": {"n": 0, "bad": "even"}}}
    middle = messages[1]["payload"]
    assert middle["data"] == {"events": {"n": 1, "bad": None}}
    assert [(e["message"], e["path"]) for e in middle["errors"]] == [("odd 1", ["events", "bad"])]
    assert messages[2]["payload"] == {"data": {"events": {"n": 2, "bad": "even"}}}


# ---- errors (LEG-10/TWS-31, LEG-11/TWS-34, LEG-12/TWS-35, LEG-14/TWS-33) ------


@pytest.mark.parametrize(
    "variables", [None, {}, {"n": "three"}, {"n": None}], ids=["absent", "missing", "wrong", "null"]
)
async def test_bad_required_variable_is_error(
    client_of: Any, proto: Protocol, variables: dict[str, Any] | None
) -> None:
    """LEG-10, TWS-31: a missing, null or mistyped required variable is an ``error``
    for that operation; the socket goes on."""
    async with client_of() as client:
        await client.init()
        query = "subscription($n: Int!) { countdown(to: $n) }"
        await proto.start_op(client, "1", query, variables=variables)
        message = await proto.receive(client)
        assert message["type"] == "error" and message["id"] == "1"
        assert "$n" in proto.errors(message["payload"])[0]["message"]
        await proto.alive(client)


@pytest.mark.parametrize(
    ("query", "locations"),
    [
        ("subscription { countdown(", [{"line": 1, "column": 26}]),
        ("notaquery", [{"line": 1, "column": 1}]),
    ],
    ids=["unfinished", "not-a-query"],
)
async def test_syntax_error_is_error_and_others_live_on(
    client_of: Any, probe: Probe, proto: Protocol, query: str, locations: list[Any]
) -> None:
    """LEG-11, TWS-34: a syntax error is an ``error`` (message and locations) for that
    operation; a running subscription continues."""
    async with client_of() as client:
        await client.init()
        await proto.start_op(client, "live", 'subscription { forever(key: "live") }')
        assert (await proto.receive(client))["id"] == "live"
        await proto.start_op(client, "bad", query)
        error = None
        with trio.fail_after(5):
            while error is None:
                message = await proto.receive(client)
                if message["id"] == "bad":
                    error = message
        assert error["type"] == "error"
        first = proto.errors(error["payload"])[0]
        assert first["message"].startswith("Syntax Error")
        assert first["locations"] == locations
        later = [await proto.receive(client) for _ in range(3)]
        assert all(m["id"] == "live" and m["type"] == proto.data for m in later)
        await client.send({"id": "live", "type": proto.stop})
        await probe.wait_cleaned("live")


@pytest.mark.parametrize(
    ("query", "operation_name"),
    [
        ("query A { hello } query B { fast }", "C"),
        ("query A { hello } query B { fast }", ""),
        ("query A { hello } query B { fast }", None),
        ("fragment F on Query { hello }", None),
    ],
    ids=["unknown-name", "empty-name", "ambiguous", "fragments-only"],
)
async def test_undeterminable_operation_is_error(
    client_of: Any, proto: Protocol, query: str, operation_name: str | None
) -> None:
    """LEG-12, TWS-35: unknown or empty operationName, several unnamed choices, fragments
    only: an ``error`` for that operation; the socket lives."""
    async with client_of() as client:
        await client.init()
        await proto.start_op(client, "1", query, operationName=operation_name)
        message = await proto.receive(client)
        await client.expect_silence(0.05)
        await proto.alive(client)
    assert message["type"] == "error" and message["id"] == "1"
    errors = proto.errors(message["payload"])
    assert errors and all(e["message"] for e in errors)


@pytest.mark.parametrize(
    ("query", "values", "message"),
    [
        ("subscription { boom(after: 2) }", [{"boom": 0}, {"boom": 1}], "Kaboom"),
        ("subscription { genBoom }", [{"genBoom": 1}], "Generator kaboom"),
    ],
    ids=["streamer", "async-generator"],
)
async def test_source_raising_gives_error_without_complete(
    client_of: Any, proto: Protocol, query: str, values: list[Any], message: str
) -> None:
    """LEG-14, TWS-33: events before the failure arrive, then ``error`` (no ``complete``);
    the socket lives."""
    async with client_of() as client:
        await client.init()
        await proto.start_op(client, "1", query)
        messages = await client.receive_until("error")
        await client.expect_silence(0.05)
        await proto.alive(client)
    assert proto.results(messages, "1") == values
    assert messages[-1] == {"id": "1", "type": "error", "payload": proto.error_payload(message)}
