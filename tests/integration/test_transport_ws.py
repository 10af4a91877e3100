"""graphql-transport-ws over a real socket: the TWS-* checklist, item by item.

The checklist is ``/work/shared/reference/protocols.md`` section 1, with the
project's decisions from section 6. Every wait is bounded; "nothing arrives"
is checked with short ``expect_silence`` windows, never with sleeps.

This module also holds the small test app (:func:`build_app`), its
:class:`Probe` and a bare-bytes WebSocket client (:class:`BareSocket`); the
legacy, subprotocol and limits modules reuse them. Items both protocols
share are checked once per protocol in :mod:`.test_both_protocols`.
"""

from __future__ import annotations

import base64
import json
import os
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from graphql import GraphQLError
from trio_websocket import ConnectionClosed

from meshsub_trio import App, AuthError, Context, Server, shielded_cleanup

from ..wsclient import TRANSPORT, RawClient

StartServer = Callable[..., Awaitable[Server]]
Connect = Callable[..., Any]

SCHEMA = """
type Query {
  hello: String!
  slow(key: String!): String!
  fast: String!
  params: String
  fail: String
  pair: Pair!
  node: Node!
}
type Mutation { bump: Int! }
type Pair { left: String! right: String! }
type Node { value: Int! child: Node! }
type Event { n: Int! bad: String }
type Subscription {
  countdown(to: Int!): Int!
  forever(key: String!): Int!
  boom(after: Int!): Int!
  gen(to: Int!): Int!
  genForever(key: String!): Int!
  genBoom: Int!
  events(to: Int!): Event!
  stalled(key: String!): Int!
  stuck(key: String!): Int!
  brokenCleanup(key: String!): Int!
  params: String
}
"""


class Probe:
    """Gates and records shared by a test and the resolvers of its app."""

    def __init__(self) -> None:
        self.gates: defaultdict[str, trio.Event] = defaultdict(trio.Event)
        self.entered: defaultdict[str, trio.Event] = defaultdict(trio.Event)
        self.cleaned: list[str] = []
        #: The last value each ``forever`` source emitted, by key.
        self.emitted: dict[str, int] = {}
        self.bumps = 0
        self._changed = trio.Event()

    def record(self, name: str) -> None:
        """Note that *name*'s cleanup ran."""
        self.cleaned.append(name)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_cleaned(self, *names: str, timeout: float = 5.0) -> None:
        """Wait until every cleanup in *names* has run."""
        with trio.fail_after(timeout):
            while not all(name in self.cleaned for name in names):
                await self._changed.wait()

    async def gated_on_connect(self, _ctx: Context) -> None:
        """An on_connect hook that holds the init until ``gates["connect"]`` is set."""
        self.entered["connect"].set()
        await self.gates["connect"].wait()


def build_app(
    probe: Probe,
    *,
    on_connect: Callable[[Context], Awaitable[Any]] | None = None,
    authenticate: Callable[[Context], Awaitable[Any]] | None = None,
) -> App:
    """A schema with every behaviour the protocol tests need, steered by *probe*."""

    async def slow(_root: Any, _info: Any, key: str) -> str:
        probe.entered[key].set()
        await probe.gates[key].wait()
        return key

    async def left(_root: Any, _info: Any) -> str:
        probe.entered["left"].set()
        await probe.entered["right"].wait()
        return "L"

    async def right(_root: Any, _info: Any) -> str:
        probe.entered["right"].set()
        await probe.entered["left"].wait()
        return "R"

    def fail(_root: Any, _info: Any) -> str:
        raise GraphQLError("field failed")

    def params(_root: Any, info: Any) -> str:
        return json.dumps(info.context.connection_params, sort_keys=True)

    def bump(_root: Any, _info: Any) -> int:
        probe.bumps += 1
        return probe.bumps

    def bad(event: dict[str, int], _info: Any) -> str:
        if event["n"] % 2:
            raise GraphQLError(f"odd {event['n']}")
        return "even"

    async def countdown(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        for n in range(args["to"], -1, -1):
            emit(n)
            await trio.sleep(0)

    async def forever(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        n = 0
        try:
            while True:
                emit(n)
                probe.emitted[args["key"]] = n
                n += 1
                await trio.sleep(0.005)
        finally:
            probe.record(args["key"])

    async def boom(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        for n in range(args["after"]):
            emit(n)
            await trio.sleep(0)
        raise GraphQLError("Kaboom")

    async def params_stream(ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        emit(json.dumps(ctx.connection_params, sort_keys=True))

    async def gen(_root: Any, _info: Any, to: int) -> AsyncIterator[int]:
        for n in range(to + 1):
            yield n

    async def gen_forever(_root: Any, _info: Any, key: str) -> AsyncIterator[int]:
        n = 0
        try:
            while True:
                yield n
                n += 1
                await trio.sleep(0.005)
        finally:
            probe.record(key)

    async def gen_boom(_root: Any, _info: Any) -> AsyncIterator[int]:
        yield 1
        raise GraphQLError("Generator kaboom")

    async def events(_root: Any, _info: Any, to: int) -> AsyncIterator[dict[str, int]]:
        for n in range(to + 1):
            yield {"n": n}

    async def stalled(_root: Any, info: Any, key: str) -> AsyncIterator[int]:
        probe.entered[key].set()
        await probe.gates[key].wait()
        return gen_forever(None, info, key)

    async def stuck(_root: Any, _info: Any, key: str) -> AsyncIterator[int]:
        try:
            yield 0
            await trio.sleep_forever()
        finally:
            with shielded_cleanup(5.0):
                probe.entered[f"{key}-cleanup"].set()
                await probe.gates[key].wait()
                probe.record(key)

    async def broken_cleanup(_root: Any, _info: Any, key: str) -> AsyncIterator[int]:
        try:
            yield 0
            await trio.sleep_forever()
        finally:
            probe.record(key)
            raise RuntimeError("cleanup failed")

    return App(
        SCHEMA,
        resolvers={
            "Query": {
                "hello": lambda _root, _info: "world",
                "slow": slow,
                "fast": lambda _root, _info: "fast",
                "params": params,
                "fail": fail,
                "pair": lambda _root, _info: {},
                "node": lambda _root, _info: {"value": 0},
            },
            "Mutation": {"bump": bump},
            "Pair": {"left": left, "right": right},
            "Node": {"child": lambda node, _info: {"value": node["value"] + 1}},
            "Event": {"bad": bad},
            "Subscription": {
                "gen": gen,
                "genForever": gen_forever,
                "genBoom": gen_boom,
                "events": events,
                "stalled": stalled,
                "stuck": stuck,
                "brokenCleanup": broken_cleanup,
            },
        },
        streamers={
            "countdown": countdown,
            "forever": forever,
            "boom": boom,
            "params": params_stream,
        },
        on_connect=on_connect,
        authenticate=authenticate,
    )


# ---- a bare-bytes WebSocket client ---------------------------------------


class BareSocket:
    """A WebSocket client written on raw TCP: any handshake, no automatic pongs."""

    def __init__(self, stream: trio.SocketStream, status: int, headers: dict[str, str]) -> None:
        self.stream = stream
        self.status = status
        self.headers = headers
        self._buffer = bytearray()

    async def send_text(self, text: str) -> None:
        """One masked text frame (a zero mask key leaves the payload as it is)."""
        payload = text.encode()
        length = len(payload)
        if length < 126:
            header = bytes((0x81, 0x80 | length))
        elif length < 65536:
            header = bytes((0x81, 0x80 | 126)) + length.to_bytes(2, "big")
        else:
            header = bytes((0x81, 0x80 | 127)) + length.to_bytes(8, "big")
        await self.stream.send_all(header + b"\0\0\0\0" + payload)

    async def send_json(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def _fill(self, count: int) -> None:
        while len(self._buffer) < count:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("server dropped the TCP connection")
            self._buffer += data

    async def _take(self, count: int) -> bytes:
        await self._fill(count)
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        return chunk

    async def receive_frame(self) -> tuple[int, bytes]:
        """The next (opcode, payload) from the server (unmasked, unfragmented)."""
        first, second = await self._take(2)
        length = second & 0x7F
        if length == 126:
            length = int.from_bytes(await self._take(2), "big")
        elif length == 127:
            length = int.from_bytes(await self._take(8), "big")
        return first & 0x0F, await self._take(length)

    async def receive_json(self) -> dict[str, Any]:
        """The next text message, skipping transport pings (left unanswered)."""
        while True:
            opcode, payload = await self.receive_frame()
            if opcode == 0x1:
                return json.loads(payload)
            if opcode == 0x8:
                raise EOFError(f"close frame {payload!r}")

    async def wait_dropped(self) -> list[int]:
        """Read until the server drops TCP; return the opcodes seen on the way."""
        opcodes: list[int] = []
        try:
            while True:
                opcode, _ = await self.receive_frame()
                opcodes.append(opcode)
        except (EOFError, trio.BrokenResourceError):
            return opcodes


@asynccontextmanager
async def bare_upgrade(
    port: int,
    *,
    path: str = "/ws",
    host_header: str | None = None,
    headers: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> AsyncIterator[BareSocket]:
    """Send a hand-written upgrade request; yield the socket whatever the answer."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host_header or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers),
    ]
    async with stream:
        await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
        raw = bytearray()
        with trio.fail_after(5):
            while b"\r\n\r\n" not in raw:
                data = await stream.receive_some(65536)
                if not data:
                    break
                raw += data
        head, _, rest = bytes(raw).partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        response_headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            response_headers[name.strip().lower()] = value.strip()
        socket = BareSocket(stream, int(status_line.split()[1]), response_headers)
        socket._buffer += rest
        yield socket


# ---- helpers ---------------------------------------------------------------


async def subscribe(client: RawClient, op_id: str, query: str, **payload: Any) -> None:
    """Send ``subscribe`` for *query* (extra payload keys as given)."""
    await client.send({"id": op_id, "type": "subscribe", "payload": {"query": query, **payload}})


async def until_close(client: RawClient, timeout: float = 5.0) -> tuple[list[Any], int, str]:
    """Every message until the server closes, then the close code and reason."""
    seen: list[Any] = []
    with trio.fail_after(timeout):
        try:
            while True:
                seen.append(json.loads(await client.ws.get_message()))
        except ConnectionClosed as closed:
            return seen, closed.reason.code, closed.reason.reason or ""


async def still_open(client: RawClient) -> None:
    """The socket is alive: a ping is answered by a pong."""
    await client.send({"type": "ping"})
    assert await client.receive() == {"type": "pong"}


def nexts(messages: list[dict[str, Any]], op_id: str) -> list[Any]:
    """The ``data`` of every ``next`` for *op_id*."""
    return [m["payload"]["data"] for m in messages if m.get("id") == op_id and m["type"] == "next"]


_SERVER_TYPES = {"connection_ack", "ping", "pong", "next", "error", "complete"}


def assert_valid_server_message(message: Any) -> None:
    """What the reference client's validation accepts (TWS-05)."""
    assert isinstance(message, dict), message
    kind = message.get("type")
    assert kind in _SERVER_TYPES, message
    if kind in ("connection_ack", "ping", "pong"):
        assert set(message) <= {"type", "payload"}, message
        assert isinstance(message.get("payload", {}), dict), message
        return
    assert isinstance(message.get("id"), str) and message["id"], message
    if kind == "next":
        assert isinstance(message["payload"], dict), message
        assert set(message["payload"]) <= {"data", "errors", "extensions", "hasNext"}, message
    elif kind == "error":
        errors = message["payload"]
        assert isinstance(errors, list) and errors, message
        assert all(isinstance(e, dict) and isinstance(e.get("message"), str) for e in errors)
    else:
        assert set(message) == {"id", "type"}, message


# ---- fixtures --------------------------------------------------------------


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def app_server(start_server: StartServer, probe: Probe) -> Server:
    """The test app on a free port (keep-alive off, default limits)."""
    return await start_server(build_app(probe))


@pytest.fixture
def tws(connect: Connect, app_server: Server) -> Callable[..., Any]:
    """``async with tws() as client``: a graphql-transport-ws client of the test app."""

    def _open(target: Server | None = None, **kw: Any) -> Any:
        return connect(subprotocols=[TRANSPORT], target=target or app_server, **kw)

    return _open


# ---- framing and validation (TWS-04..09) -----------------------------------


async def test_tws_04_text_json_frames_and_extra_properties_ignored(tws: Any) -> None:
    """Server frames are JSON text; unknown extra properties in client messages are ignored."""
    async with tws() as client:
        await client.send({"type": "connection_init", "payload": {}, "extra": [1, 2]})
        raw = await client.ws.get_message()
        assert isinstance(raw, str)
        assert json.loads(raw) == {"type": "connection_ack"}
        await client.send(
            {
                "id": "1",
                "type": "subscribe",
                "payload": {"query": "{ hello }", "unknownKey": True},
                "extra": {"x": 1},
            }
        )
        frame = await client.ws.get_message()
        assert isinstance(frame, str)
        assert json.loads(frame) == {
            "id": "1",
            "type": "next",
            "payload": {"data": {"hello": "world"}},
        }
        assert await client.receive() == {"id": "1", "type": "complete"}
        await client.send({"type": "ping", "whatever": 1})
        assert await client.receive() == {"type": "pong"}


async def test_tws_05_every_server_message_passes_client_validation(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """Ack with payload, pong, next (with and without errors), error and complete all validate."""

    async def ack_payload(_ctx: Context) -> dict[str, Any]:
        return {"itsa": "me"}

    server = await start_server(build_app(probe, on_connect=ack_payload))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        seen = [await client.init()]
        await client.send({"type": "ping", "payload": {"p": 1}})
        seen.append(await client.receive())
        await subscribe(client, "q", "{ hello fail }")
        seen += await client.receive_until("complete")
        await subscribe(client, "s", "subscription { events(to: 2) { n bad } }")
        seen += await client.receive_until("complete")
        await subscribe(client, "v", "{ nope }")
        seen += await client.receive_until("error")
        await subscribe(client, "b", "subscription { boom(after: 1) }")
        seen += await client.receive_until("error")
    kinds = {m["type"] for m in seen}
    assert kinds == {"connection_ack", "pong", "next", "complete", "error"}
    for message in seen:
        assert_valid_server_message(message)


_SUB = {"query": "{ hello }"}
INVALID_MESSAGES: list[tuple[str, str]] = [
    ("not-json", "not json at all"),
    ("truncated-json", '{"type":"ping"'),
    ("json-string", '""'),
    ("json-zero", "0"),
    ("json-nine", "9"),
    ("json-array", "[]"),
    ("json-null", "null"),
    ("no-type", "{}"),
    ("not-type", '{"notType":null}'),
    ("empty-type", '{"type":""}'),
    ("numeric-type", '{"type":0}'),
    ("unknown-type", '{"type":"nuxt"}'),
    ("init-payload-string", '{"type":"connection_init","payload":""}'),
    ("init-payload-zero", '{"type":"connection_init","payload":0}'),
    ("init-payload-array", '{"type":"connection_init","payload":[]}'),
    ("init-payload-text", '{"type":"connection_init","payload":"invalid value"}'),
    ("init-payload-one", '{"type":"connection_init","payload":1}'),
    ("ping-payload-string", '{"type":"ping","payload":""}'),
    ("ping-payload-zero", '{"type":"ping","payload":0}'),
    ("pong-payload-string", '{"type":"pong","payload":""}'),
    ("pong-payload-zero", '{"type":"pong","payload":0}'),
    ("subscribe-id-missing", json.dumps({"type": "subscribe", "payload": _SUB})),
    ("subscribe-id-empty", json.dumps({"id": "", "type": "subscribe", "payload": _SUB})),
    ("subscribe-id-zero", json.dumps({"id": 0, "type": "subscribe", "payload": _SUB})),
    ("subscribe-payload-missing", '{"id":"1","type":"subscribe"}'),
    ("subscribe-payload-string", '{"id":"1","type":"subscribe","payload":""}'),
    ("subscribe-payload-array", '{"id":"1","type":"subscribe","payload":[]}'),
    ("subscribe-query-missing", '{"id":"1","type":"subscribe","payload":{}}'),
    ("subscribe-query-object", '{"id":"1","type":"subscribe","payload":{"query":{}}}'),
    ("subscribe-query-zero", '{"id":"1","type":"subscribe","payload":{"query":0}}'),
    (
        "subscribe-variables-string",
        json.dumps({"id": "1", "type": "subscribe", "payload": {**_SUB, "variables": ""}}),
    ),
    (
        "subscribe-variables-array",
        json.dumps({"id": "1", "type": "subscribe", "payload": {**_SUB, "variables": []}}),
    ),
    (
        "subscribe-operation-name-object",
        json.dumps({"id": "1", "type": "subscribe", "payload": {**_SUB, "operationName": {}}}),
    ),
    (
        "subscribe-operation-name-zero",
        json.dumps({"id": "1", "type": "subscribe", "payload": {**_SUB, "operationName": 0}}),
    ),
    (
        "subscribe-extensions-string",
        json.dumps({"id": "1", "type": "subscribe", "payload": {**_SUB, "extensions": ""}}),
    ),
    (
        "subscribe-extensions-zero",
        json.dumps({"id": "1", "type": "subscribe", "payload": {**_SUB, "extensions": 0}}),
    ),
    ("complete-id-missing", '{"type":"complete"}'),
    ("complete-id-empty", '{"id":"","type":"complete"}'),
    ("complete-id-zero", '{"id":0,"type":"complete"}'),
    ("subscribe-not-payload", '{"type":"subscribe","notPayload":null}'),
    ("subscribe-not-payload-with-id", '{"id":"1","type":"subscribe","notPayload":null}'),
]


@pytest.mark.parametrize("stage", ["first-message", "after-ack"])
@pytest.mark.parametrize(
    "text", [text for _, text in INVALID_MESSAGES], ids=[name for name, _ in INVALID_MESSAGES]
)
async def test_tws_06_invalid_message_closes_4400(tws: Any, stage: str, text: str) -> None:
    """Each malformed message closes the socket at once with 4400, before or after the ack."""
    async with tws() as client:
        if stage == "after-ack":
            assert await client.init() == {"type": "connection_ack"}
        await client.send(text)
        seen, code, reason = await until_close(client)
    assert seen == []
    assert code == 4400
    assert len(reason.encode()) <= 123


@pytest.mark.parametrize("stage", ["first-message", "after-ack"])
@pytest.mark.parametrize(
    "message",
    [
        {"id": "1", "type": "next", "payload": {}},
        {"type": "connection_ack"},
        {"id": "1", "type": "error", "payload": [{"message": "x"}]},
    ],
    ids=["next", "connection_ack", "error"],
)
async def test_tws_07_client_sent_server_only_type_closes_4400(
    tws: Any, stage: str, message: dict[str, Any]
) -> None:
    """A well-formed message of a server-only type closes 4400 (project decision)."""
    async with tws() as client:
        if stage == "after-ack":
            assert await client.init() == {"type": "connection_ack"}
        await client.send(message)
        seen, code, _ = await until_close(client)
    assert seen == []
    assert code == 4400


@pytest.mark.parametrize("stage", ["first-message", "after-ack"])
async def test_tws_08_binary_frame_closes_4400(tws: Any, stage: str) -> None:
    """Binary frames close 4400 even when they hold a valid message (project decision)."""
    async with tws() as client:
        if stage == "after-ack":
            assert await client.init() == {"type": "connection_ack"}
            message = {"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}}
        else:
            message = {"type": "connection_init"}
        await client.send(json.dumps(message).encode())
        seen, code, _ = await until_close(client)
    assert seen == []
    assert code == 4400


@pytest.mark.parametrize(
    "op_id", ["x" * 128, "é" * 100, "漢" * 60], ids=["ascii", "two-byte", "three-byte"]
)
async def test_tws_09_close_reason_fits_123_bytes(tws: Any, op_id: str) -> None:
    """A 4409 whose reason would quote a long id still sends a reason of at most 123 bytes."""
    async with tws() as client:
        await client.init()
        query = "subscription($k: String!) { forever(key: $k) }"
        await subscribe(client, op_id, query, variables={"k": "a"})
        await subscribe(client, op_id, query, variables={"k": "b"})
        _, code, reason = await until_close(client)
    assert code == 4409
    assert len(reason.encode()) <= 123


async def test_tws_09_long_refusal_reason_fits_123_bytes(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """An AuthError with a long message still closes with a short enough reason."""

    async def refuse(_ctx: Context) -> None:
        raise AuthError("no " * 100)

    server = await start_server(build_app(probe, authenticate=refuse))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init"})
        seen, code, reason = await until_close(client)
    assert seen == []
    assert code == 4403
    assert len(reason.encode()) <= 123


# ---- connection initialisation (TWS-10..18) --------------------------------


@pytest.mark.parametrize(
    ("init", "params"),
    [
        ({"type": "connection_init"}, {}),
        ({"type": "connection_init", "payload": None}, {}),
        ({"type": "connection_init", "payload": {"token": "t", "n": 1}}, {"n": 1, "token": "t"}),
    ],
    ids=["absent", "null", "object"],
)
async def test_tws_10_init_payload_absent_null_or_object_is_acked(
    tws: Any, init: dict[str, Any], params: dict[str, Any]
) -> None:
    """Init with no payload, null or an object is acked; the object reaches resolvers."""
    async with tws() as client:
        await client.send(init)
        assert await client.receive() == {"type": "connection_ack"}
        await subscribe(client, "p", "{ params }")
        messages = await client.receive_until("complete")
    assert nexts(messages, "p") == [{"params": json.dumps(params, sort_keys=True)}]


async def test_tws_10_connection_params_reach_streamers(tws: Any) -> None:
    """The init payload is the streamer's ``ctx.connection_params`` too."""
    async with tws() as client:
        await client.init({"auth": "secret"})
        await subscribe(client, "p", "subscription { params }")
        messages = await client.receive_until("complete")
    assert nexts(messages, "p") == [{"params": '{"auth": "secret"}'}]


async def test_tws_11_ack_without_payload_is_bare(tws: Any) -> None:
    """With nothing to say the ack is exactly ``{"type":"connection_ack"}``."""
    async with tws() as client:
        await client.send({"type": "connection_init", "payload": {"a": 1}})
        assert json.loads(await client.ws.get_message()) == {"type": "connection_ack"}


@pytest.mark.parametrize("returned", [True, None], ids=["true", "none"])
async def test_tws_11_on_connect_true_or_none_acks(
    start_server: StartServer, probe: Probe, connect: Connect, returned: Any
) -> None:
    """on_connect returning True or nothing accepts with a bare ack."""

    async def on_connect(_ctx: Context) -> Any:
        return returned

    server = await start_server(build_app(probe, on_connect=on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        assert await client.init() == {"type": "connection_ack"}


async def test_tws_12_on_connect_false_closes_4403_without_ack(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """on_connect returning False: close 4403 Forbidden, no ack."""

    async def on_connect(_ctx: Context) -> bool:
        return False

    server = await start_server(build_app(probe, on_connect=on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init"})
        seen, code, reason = await until_close(client)
    assert seen == []
    assert (code, reason) == (4403, "Forbidden")


@pytest.mark.parametrize("error", [AuthError(), AuthError("bad token")], ids=["bare", "message"])
async def test_tws_12_authenticate_auth_error_closes_4403(
    start_server: StartServer, probe: Probe, connect: Connect, error: AuthError
) -> None:
    """authenticate raising AuthError: close 4403, no ack, params were seen by the hook."""
    seen_params: list[Any] = []

    async def authenticate(ctx: Context) -> None:
        seen_params.append(ctx.connection_params)
        raise error

    server = await start_server(build_app(probe, authenticate=authenticate))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init", "payload": {"token": "x"}})
        seen, code, reason = await until_close(client)
    assert seen == []
    assert code == 4403
    if not str(error):
        assert reason == "Forbidden"
    assert seen_params == [{"token": "x"}]


async def test_tws_12_authenticate_result_becomes_ctx_auth(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """What authenticate returns is ``ctx.auth``, visible to on_connect."""
    verdicts: list[Any] = []

    async def authenticate(ctx: Context) -> str:
        return f"user:{(ctx.connection_params or {}).get('token')}"

    async def on_connect(ctx: Context) -> None:
        verdicts.append(ctx.auth)

    server = await start_server(build_app(probe, authenticate=authenticate, on_connect=on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        assert await client.init({"token": "abc"}) == {"type": "connection_ack"}
    assert verdicts == ["user:abc"]


async def test_tws_14_init_timer_stops_when_init_arrives(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """Init in time but a hook slower than init_timeout: no 4408, the ack still comes."""
    server = await start_server(
        build_app(probe, on_connect=probe.gated_on_connect), init_timeout=0.05
    )
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init"})
        with trio.fail_after(5):
            await probe.entered["connect"].wait()
        await client.expect_silence(0.2)  # four init timeouts pass while the hook runs
        probe.gates["connect"].set()
        assert await client.receive() == {"type": "connection_ack"}
        await client.expect_silence(0.1)
        await still_open(client)


async def test_tws_15_second_init_while_first_pending_closes_4429(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """A second connection_init while the hook still runs closes 4429, and no ack follows."""
    server = await start_server(build_app(probe, on_connect=probe.gated_on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init"})
        with trio.fail_after(5):
            await probe.entered["connect"].wait()
        await client.send({"type": "connection_init"})
        seen, code, _ = await until_close(client)
        probe.gates["connect"].set()
    assert seen == []
    assert code == 4429


async def test_tws_16_nothing_but_pong_before_the_single_ack(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """While init is processed only pongs come; then exactly one ack."""
    server = await start_server(build_app(probe, on_connect=probe.gated_on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init"})
        with trio.fail_after(5):
            await probe.entered["connect"].wait()
        await client.expect_silence(0.05)
        await still_open(client)
        probe.gates["connect"].set()
        assert await client.receive() == {"type": "connection_ack"}
        await subscribe(client, "1", "{ hello }")
        messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == ["next", "complete"]


async def test_tws_17_subscribe_right_after_ack_is_accepted(tws: Any) -> None:
    """A subscribe sent the moment the ack arrives is not refused with 4401."""
    for _ in range(20):
        async with tws() as client:
            await client.send({"type": "connection_init"})
            assert await client.receive() == {"type": "connection_ack"}
            await subscribe(client, "1", "{ hello }")
            assert await client.receive() == {
                "id": "1",
                "type": "next",
                "payload": {"data": {"hello": "world"}},
            }


async def test_tws_18_init_hook_crash_closes_4500(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """An unexpected exception in the init hook closes 4500 and sends no ack."""

    async def on_connect(_ctx: Context) -> None:
        raise RuntimeError("hook exploded")

    server = await start_server(build_app(probe, on_connect=on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init"})
        seen, code, reason = await until_close(client)
    assert seen == []
    assert code == 4500
    assert reason
    # The server itself survives.
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await still_open(client)


# ---- ping and pong (TWS-19..23) --------------------------------------------


async def test_tws_19_ping_answered_before_init_before_ack_and_after_ack(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """``ping`` gets ``pong`` at every stage, and the socket stays open."""
    server = await start_server(build_app(probe, on_connect=probe.gated_on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await still_open(client)  # before init
        await client.send({"type": "connection_init"})
        with trio.fail_after(5):
            await probe.entered["connect"].wait()
        await still_open(client)  # init received, not acked
        probe.gates["connect"].set()
        assert await client.receive() == {"type": "connection_ack"}
        await still_open(client)  # after ack


async def test_tws_20_ping_payload_is_echoed(tws: Any) -> None:
    """The pong carries the ping's payload (project decision)."""
    async with tws() as client:
        await client.send({"type": "ping", "payload": {"iCome": "back"}})
        assert await client.receive() == {"type": "pong", "payload": {"iCome": "back"}}
        await client.send({"type": "ping", "payload": None})
        assert await client.receive() == {"type": "pong"}


@pytest.mark.parametrize("payload", [None, {"beat": 1}], ids=["bare", "payload"])
async def test_tws_21_pong_gets_no_reply_and_keeps_socket(
    tws: Any, payload: dict[str, Any] | None
) -> None:
    """An unsolicited ``pong`` is ignored, before init and after the ack."""
    message: dict[str, Any] = {"type": "pong"}
    if payload is not None:
        message["payload"] = payload
    async with tws() as client:
        await client.send(message)
        await client.expect_silence(0.05)
        await client.init()
        await client.send(message)
        await client.expect_silence(0.05)
        await still_open(client)


async def test_tws_22_client_pongs_accepted_while_keepalive_runs(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """With keep-alive on, a stream is delivered whole; protocol pings are answered by pongs."""
    server = await start_server(build_app(probe), keepalive=0.02)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.init()
        await subscribe(client, "s", 'subscription { genForever(key: "k") }')
        values: list[int] = []
        with trio.fail_after(5):
            while len(values) < 30:  # about 150 ms of stream: several keep-alive rounds
                message = json.loads(await client.ws.get_message())
                if message["type"] == "ping":
                    await client.send({"type": "pong"})
                    continue
                assert message["type"] == "next", message
                values.append(message["payload"]["data"]["genForever"])
                await client.send({"type": "pong", "payload": {"n": len(values)}})
        assert values == list(range(30))
        await client.send({"id": "s", "type": "complete"})
        await probe.wait_cleaned("k")


async def test_tws_23_transport_ping_frames_are_answered(tws: Any) -> None:
    """A client's WebSocket ping frame gets its pong frame, apart from protocol pings."""
    async with tws() as client:
        with trio.fail_after(5):
            await client.ws.ping(b"are you there")
        await client.expect_silence(0.05)
        assert await client.init() == {"type": "connection_ack"}


async def test_tws_23_keepalive_drops_a_peer_that_never_answers(
    start_server: StartServer, probe: Probe
) -> None:
    """A peer that never answers the keep-alive ping is dropped (no close handshake)."""
    server = await start_server(build_app(probe), keepalive=0.05, pong_timeout=0.05)
    async with bare_upgrade(server.port, headers=[("Sec-WebSocket-Protocol", TRANSPORT)]) as bare:
        assert bare.status == 101
        await server.metrics.wait_for(lambda m: m.live_connections == 1)
        with trio.fail_after(3):
            opcodes = await bare.wait_dropped()
        assert 0x9 in opcodes  # it was pinged first
        assert 0x1 not in opcodes
    with trio.fail_after(3):
        await server.metrics.wait_idle()


async def test_tws_23_keepalive_keeps_a_live_peer(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """A peer that answers pings (trio-websocket does) outlives many pong deadlines."""
    server = await start_server(build_app(probe), keepalive=0.02, pong_timeout=0.02)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.init()
        await subscribe(client, "s", 'subscription { forever(key: "live") }')
        with trio.fail_after(5):
            for n in range(40):  # about 200 ms: ten keep-alive rounds
                message = await client.receive()
                assert message == {"id": "s", "type": "next", "payload": {"data": {"forever": n}}}
        await still_open(client)


# ---- subscribe and execution (TWS-24..42) -----------------------------------


async def test_tws_24_subscribe_while_init_pending_closes_4401(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """A subscribe while the init hook still runs closes 4401, and no ack or data follows."""
    server = await start_server(build_app(probe, on_connect=probe.gated_on_connect))
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "connection_init"})
        with trio.fail_after(5):
            await probe.entered["connect"].wait()
        await subscribe(client, "1", "{ hello }")
        seen, code, _ = await until_close(client)
        probe.gates["connect"].set()
    assert seen == []
    assert code == 4401


async def test_tws_25_duplicate_live_subscription_id_closes_4409(tws: Any) -> None:
    """A subscribe reusing a running subscription's id closes 4409 with the id in the reason."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "not-unique", 'subscription { forever(key: "a") }')
        assert (await client.receive())["type"] == "next"
        await subscribe(client, "not-unique", 'subscription { forever(key: "b") }')
        _, code, reason = await until_close(client)
    assert (code, reason) == (4409, "Subscriber for not-unique already exists")


async def test_tws_25_duplicate_id_of_running_query_closes_4409(tws: Any, probe: Probe) -> None:
    """Queries share the id namespace: reusing a still-executing query's id closes 4409."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "q", '{ slow(key: "q") }')
        with trio.fail_after(5):
            await probe.entered["q"].wait()
        await subscribe(client, "q", "subscription { countdown(to: 1) }")
        seen, code, _ = await until_close(client)
    assert seen == []
    assert code == 4409


async def test_tws_25_duplicate_id_of_preparing_subscription_closes_4409(
    tws: Any, probe: Probe, app_server: Server
) -> None:
    """An operation still being set up (subscribe resolver stalled) holds its id: 4409."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "p", 'subscription { stalled(key: "p") }')
        with trio.fail_after(5):
            await probe.entered["p"].wait()
        await subscribe(client, "p", "{ hello }")
        seen, code, _ = await until_close(client)
    assert seen == []
    assert code == 4409
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()


async def test_tws_26_id_reusable_after_server_complete(tws: Any) -> None:
    """Once ``complete`` was sent, the same id may start a new operation at once."""
    async with tws() as client:
        await client.init()
        for _ in range(3):
            await subscribe(client, "r", "subscription { countdown(to: 0) }")
            messages = await client.receive_until("complete")
            assert nexts(messages, "r") == [{"countdown": 0}]
            await subscribe(client, "r", "{ hello }")
            messages = await client.receive_until("complete")
            assert nexts(messages, "r") == [{"hello": "world"}]


async def test_tws_26_id_reusable_after_error(tws: Any) -> None:
    """Once ``error`` was sent (validation or source failure), the id is free again."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "r", "{ nope }")
        assert (await client.receive())["type"] == "error"
        await subscribe(client, "r", "subscription { boom(after: 0) }")
        assert (await client.receive())["type"] == "error"
        await subscribe(client, "r", "{ hello }")
        messages = await client.receive_until("complete")
    assert nexts(messages, "r") == [{"hello": "world"}]


async def test_tws_26_id_reusable_right_after_client_complete(tws: Any, probe: Probe) -> None:
    """Right after the client's ``complete`` the id may be subscribed again, with no 4409."""
    async with tws() as client:
        await client.init()
        for round_ in range(5):
            await subscribe(client, "r", f'subscription {{ forever(key: "k{round_}") }}')
            assert (await client.receive())["type"] == "next"
            await client.send({"id": "r", "type": "complete"})
            await subscribe(client, "r", "{ hello }")
            messages = await client.receive_until("complete")
            assert {"hello": "world"} in nexts(messages, "r")
            assert all(m["id"] == "r" for m in messages)
        await probe.wait_cleaned(*(f"k{n}" for n in range(5)))


async def test_tws_27_named_subscription_with_variables(tws: Any) -> None:
    """A named subscription with variables and operationName runs like an anonymous one."""
    async with tws() as client:
        await client.init()
        await subscribe(
            client,
            "1",
            "subscription Greetings($n: Int!) { countdown(to: $n) }",
            variables={"n": 2},
            operationName="Greetings",
        )
        messages = await client.receive_until("complete")
    assert nexts(messages, "1") == [{"countdown": 2}, {"countdown": 1}, {"countdown": 0}]


async def test_tws_28_operations_run_concurrently(tws: Any, probe: Probe) -> None:
    """A fast query sent after a slow one is answered first; the slow one follows."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "sub1", '{ slow(key: "sub1") }')
        with trio.fail_after(5):
            await probe.entered["sub1"].wait()
        await subscribe(client, "sub2", "{ fast }")
        first = await client.receive_until("complete")
        assert first == [
            {"id": "sub2", "type": "next", "payload": {"data": {"fast": "fast"}}},
            {"id": "sub2", "type": "complete"},
        ]
        probe.gates["sub1"].set()
        second = await client.receive_until("complete")
    assert second == [
        {"id": "sub1", "type": "next", "payload": {"data": {"slow": "sub1"}}},
        {"id": "sub1", "type": "complete"},
    ]


async def test_tws_28_sibling_async_resolvers_run_concurrently(tws: Any) -> None:
    """Two sibling async resolvers that wait for each other both finish (Trio gather)."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", "{ pair { left right } }")
        messages = await client.receive_until("complete")
    assert nexts(messages, "1") == [{"pair": {"left": "L", "right": "R"}}]


async def test_tws_29_deferred_query_is_answered_without_closing(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """A query using @defer ends in ``next``s + ``complete`` or an ``error``; the socket lives.

    Incremental delivery is a SHOULD; what must not happen is a close or silence.
    """
    deferring = App(
        "directive @defer(if: Boolean! = true, label: String) on FRAGMENT_SPREAD | INLINE_FRAGMENT\n"
        "type Query { hello: String! }",
        resolvers={"Query": {"hello": lambda _root, _info: "world"}},
    )
    server = await start_server(deferring)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.init()
        await subscribe(client, "d", "{ hello ... @defer { fast: hello } }")
        messages: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while not messages or messages[-1]["type"] not in ("complete", "error"):
                messages.append(await client.receive())
        for message in messages:
            assert_valid_server_message(message)
        if messages[-1]["type"] == "complete":
            assert [m["type"] for m in messages[:-1]] == ["next"] * (len(messages) - 1)
            assert len(messages) >= 2
        await still_open(client)


async def test_tws_30_next_payload_has_only_data_when_no_errors(tws: Any) -> None:
    """``next.payload`` leaves out ``errors`` and ``extensions`` when there are none."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", "{ hello }", extensions={"example": "example"}, variables=None)
        query_messages = await client.receive_until("complete")
        await subscribe(client, "2", "subscription { countdown(to: 1) }")
        sub_messages = await client.receive_until("complete")
    for message in [*query_messages, *sub_messages]:
        if message["type"] == "next":
            assert list(message["payload"]) == ["data"], message


async def test_tws_31_validation_error_is_error_message_and_socket_lives(tws: Any) -> None:
    """Unknown fields: one ``error`` carrying every error with locations, no ``complete``."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", "query {\n  testNumber\n  testBoolean\n}")
        message = await client.receive()
        await client.expect_silence(0.05)
        await still_open(client)
    assert message == {
        "id": "1",
        "type": "error",
        "payload": [
            {
                "message": "Cannot query field 'testNumber' on type 'Query'.",
                "locations": [{"line": 2, "column": 3}],
            },
            {
                "message": "Cannot query field 'testBoolean' on type 'Query'.",
                "locations": [{"line": 3, "column": 3}],
            },
        ],
    }


async def test_tws_32_field_error_in_query_is_next_with_errors(tws: Any) -> None:
    """A failing field of a query gives ``next`` with null field, errors with path, then complete."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", "{ hello fail }")
        messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == ["next", "complete"]
    payload = messages[0]["payload"]
    assert payload["data"] == {"hello": "world", "fail": None}
    assert [(e["message"], e["path"]) for e in payload["errors"]] == [("field failed", ["fail"])]


async def test_tws_35_null_operation_name_means_absent(tws: Any) -> None:
    """``operationName: null`` with a single operation runs it."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", "query Only { hello }", operationName=None)
        messages = await client.receive_until("complete")
    assert nexts(messages, "1") == [{"hello": "world"}]


@pytest.mark.parametrize("field", ["forever", "genForever"], ids=["streamer", "async-generator"])
async def test_tws_36_client_complete_stops_source_without_echo(
    tws: Any, probe: Probe, app_server: Server, field: str
) -> None:
    """The client's ``complete`` runs the source's finally; nothing more, no echoed complete."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", f'subscription {{ {field}(key: "{field}") }}')
        assert (await client.receive())["type"] == "next"
        await client.send({"id": "1", "type": "complete"})
        await probe.wait_cleaned(field)
        # Anything already queued must not leak out either.
        await client.expect_silence(0.1)
        with trio.fail_after(5):
            await app_server.metrics.wait_for(lambda m: m.live_operations == 0)
        await still_open(client)


async def test_tws_36_complete_stops_only_its_own_operation(tws: Any, probe: Probe) -> None:
    """Completing one subscription leaves a sibling running."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "a", 'subscription { forever(key: "a") }')
        await subscribe(client, "b", 'subscription { forever(key: "b") }')
        await client.send({"id": "a", "type": "complete"})
        await probe.wait_cleaned("a")
        assert "b" not in probe.cleaned
        # Frames of both already in flight may still arrive, interleaved in any
        # proportion; what follows is judged by each operation's own values.
        last_a = probe.emitted["a"]
        b_at_stop = probe.emitted["b"]
        later: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while len([v for v in nexts(later, "b") if v["forever"] > b_at_stop]) < 3:
                later.append(await client.receive())
        # b kept running: three events emitted after a stopped.
        first_b_after = next(
            i for i, m in enumerate(later) if m["id"] == "b" and m["payload"]["data"]["forever"] > b_at_stop
        )
        # a sent nothing it emitted after its stop, and nothing after b's later events.
        assert all(v["forever"] <= last_a for v in nexts(later, "a"))
        assert all(m["id"] == "b" for m in later[first_b_after:])


async def test_tws_37_complete_during_query_suppresses_result(
    tws: Any, probe: Probe, app_server: Server
) -> None:
    """A query completed by the client while running sends neither ``next`` nor ``complete``."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", '{ slow(key: "s") }')
        with trio.fail_after(5):
            await probe.entered["s"].wait()
        await client.send({"id": "1", "type": "complete"})
        with trio.fail_after(5):
            await app_server.metrics.wait_for(lambda m: m.live_operations == 0)
        probe.gates["s"].set()
        await client.expect_silence(0.1)
        await still_open(client)


async def test_tws_38_complete_during_setup_delivers_nothing(
    tws: Any, probe: Probe, app_server: Server
) -> None:
    """A ``complete`` while the subscribe resolver is stalled: nothing is ever delivered."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", 'subscription { stalled(key: "st") }')
        with trio.fail_after(5):
            await probe.entered["st"].wait()
        await client.send({"id": "1", "type": "complete"})
        probe.gates["st"].set()
        with trio.fail_after(5):
            await app_server.metrics.wait_for(lambda m: m.live_operations == 0)
        await client.expect_silence(0.1)
        await still_open(client)


async def test_tws_39_complete_for_unknown_or_finished_id_is_ignored(tws: Any) -> None:
    """``complete`` for ids never used or already finished: no reply, no close."""
    async with tws() as client:
        await client.init()
        await client.send({"id": "never", "type": "complete"})
        await client.send({"id": "toString", "type": "complete"})
        await client.send({"id": "__proto__", "type": "complete"})
        await subscribe(client, "done", "{ hello }")
        await client.receive_until("complete")
        await client.send({"id": "done", "type": "complete"})
        await client.expect_silence(0.05)
        await still_open(client)
        # and the finished id is still free to use
        await subscribe(client, "done", "{ hello }")
        assert nexts(await client.receive_until("complete"), "done") == [{"hello": "world"}]


async def test_tws_39_complete_before_ack_for_unknown_id_is_ignored(tws: Any) -> None:
    """``complete`` for an unknown id before init does not close the socket."""
    async with tws() as client:
        await client.send({"id": "x", "type": "complete"})
        await client.expect_silence(0.05)
        assert await client.init() == {"type": "connection_ack"}


async def test_tws_40_nothing_after_complete_or_error(tws: Any) -> None:
    """After ``complete`` or ``error`` for an id, nothing more arrives for it."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "c", "subscription { countdown(to: 3) }")
        await subscribe(client, "e", "subscription { boom(after: 3) }")
        await subscribe(client, "v", "{ nope }")
        finished: dict[str, str] = {}
        with trio.fail_after(5):
            while len(finished) < 3:
                message = await client.receive()
                assert message["id"] not in finished, message
                if message["type"] in ("complete", "error"):
                    finished[message["id"]] = message["type"]
        await client.expect_silence(0.1)
    assert finished == {"c": "complete", "e": "error", "v": "error"}


async def test_tws_41_subscribe_resolver_raising_is_error_message(
    start_server: StartServer, connect: Connect
) -> None:
    """A subscribe resolver that raises before returning a source: ``error``, socket lives."""

    def explode(_root: Any, _info: Any) -> Any:
        raise GraphQLError("no source today")

    app = App(
        "type Query { a: Int } type Subscription { s: Int }",
        resolvers={"Subscription": {"s": explode}},
    )
    server = await start_server(app)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.init()
        await subscribe(client, "1", "subscription { s }")
        message = await client.receive()
        await client.expect_silence(0.05)
        await still_open(client)
    assert message["type"] == "error" and message["id"] == "1"
    assert message["payload"][0]["message"] == "no source today"


# ---- disconnect and cleanup (TWS-43..46) ------------------------------------


async def _start_four(client: RawClient, probe: Probe) -> None:
    """A streamer, a generator, a running query and a stalled setup, all live."""
    await client.init()
    await subscribe(client, "s", 'subscription { forever(key: "s") }')
    await subscribe(client, "g", 'subscription { genForever(key: "g") }')
    await subscribe(client, "q", '{ slow(key: "q") }')
    await subscribe(client, "p", 'subscription { stalled(key: "p") }')
    with trio.fail_after(5):
        await probe.entered["q"].wait()
        await probe.entered["p"].wait()


async def test_tws_43_client_close_cleans_every_operation(
    tws: Any, probe: Probe, app_server: Server
) -> None:
    """A clean client close ends every operation and runs every source's finally."""
    async with tws() as client:
        await _start_four(client, probe)
        await app_server.metrics.wait_for(lambda m: m.live_operations == 4)
    await probe.wait_cleaned("s", "g")
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()
    probe.gates["p"].set()  # setup finishing after the close starts nothing
    assert probe.cleaned.count("s") == 1 and probe.cleaned.count("g") == 1


async def test_tws_43_abrupt_tcp_drop_cleans_every_operation(
    probe: Probe, app_server: Server
) -> None:
    """A TCP drop without a close frame ends every operation too."""
    async with bare_upgrade(
        app_server.port, headers=[("Sec-WebSocket-Protocol", TRANSPORT)]
    ) as bare:
        assert bare.status == 101
        await bare.send_json({"type": "connection_init"})
        assert await bare.receive_json() == {"type": "connection_ack"}
        for op_id, field in (("s", "forever"), ("g", "genForever")):
            await bare.send_json(
                {
                    "id": op_id,
                    "type": "subscribe",
                    "payload": {"query": f'subscription {{ {field}(key: "{op_id}") }}'},
                }
            )
        await app_server.metrics.wait_for(lambda m: m.live_operations == 2)
    await probe.wait_cleaned("s", "g")
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()


async def test_tws_43_slow_cleanup_does_not_block_others(
    tws: Any, probe: Probe, app_server: Server
) -> None:
    """One source stuck in its finally does not hold up the others' cleanup."""
    async with tws() as client, trio.open_nursery() as nursery:
        await client.init()
        await subscribe(client, "stuck", 'subscription { stuck(key: "stuck") }')
        assert (await client.receive())["id"] == "stuck"
        await subscribe(client, "s", 'subscription { forever(key: "s") }')
        await subscribe(client, "g", 'subscription { genForever(key: "g") }')
        await app_server.metrics.wait_for(lambda m: m.live_operations == 3)
        # The close handshake itself waits for the cleanups, so close in the background.
        nursery.start_soon(client.ws.aclose)
        with trio.fail_after(5):
            await probe.entered["stuck-cleanup"].wait()
        await probe.wait_cleaned("s", "g")
        assert "stuck" not in probe.cleaned
        probe.gates["stuck"].set()
        await probe.wait_cleaned("stuck")
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()


async def test_tws_43_slow_finalizer_does_not_hold_up_the_socket(tws: Any, probe: Probe) -> None:
    """While a completed source's finally is still running, other operations are served."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "stuck", 'subscription { stuck(key: "stuck") }')
        assert (await client.receive())["id"] == "stuck"
        await client.send({"id": "stuck", "type": "complete"})
        with trio.fail_after(5):
            await probe.entered["stuck-cleanup"].wait()
        await subscribe(client, "q", "{ hello }")
        assert nexts(await client.receive_until("complete"), "q") == [{"hello": "world"}]
        assert "stuck" not in probe.cleaned
        probe.gates["stuck"].set()
        await probe.wait_cleaned("stuck")
        await client.expect_silence(0.05)


async def test_tws_43_failing_cleanup_does_not_break_others_or_server(
    tws: Any, probe: Probe, app_server: Server
) -> None:
    """A source whose finally raises: the others still clean up and the server keeps serving."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "b", 'subscription { brokenCleanup(key: "b") }')
        assert (await client.receive())["id"] == "b"
        await subscribe(client, "s", 'subscription { forever(key: "s") }')
        await app_server.metrics.wait_for(lambda m: m.live_operations == 2)
    await probe.wait_cleaned("b", "s")
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()
    async with tws() as client:
        await client.init()
        await subscribe(client, "1", "{ hello }")
        assert nexts(await client.receive_until("complete"), "1") == [{"hello": "world"}]


async def test_tws_43_failing_cleanup_on_client_complete_keeps_socket(
    tws: Any, probe: Probe
) -> None:
    """A source whose finally raises on the client's ``complete``: the socket stays usable."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "b", 'subscription { brokenCleanup(key: "b") }')
        assert (await client.receive())["id"] == "b"
        await client.send({"id": "b", "type": "complete"})
        await probe.wait_cleaned("b")
        await client.expect_silence(0.05)
        await still_open(client)


async def test_tws_44_nothing_sent_after_server_close(
    tws: Any, probe: Probe, app_server: Server
) -> None:
    """After a protocol close, results that become ready later are dropped; the server is fine."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "q", '{ slow(key: "q") }')
        await subscribe(client, "p", 'subscription { stalled(key: "p") }')
        with trio.fail_after(5):
            await probe.entered["q"].wait()
            await probe.entered["p"].wait()
        await client.send("garbage")
        seen, code, _ = await until_close(client)
        probe.gates["q"].set()
        probe.gates["p"].set()
    assert seen == []
    assert code == 4400
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()


async def test_tws_44_setup_finishing_after_client_close_sends_nothing(
    probe: Probe, app_server: Server
) -> None:
    """A setup that finishes after the client vanished produces no traffic and no leak."""
    async with bare_upgrade(
        app_server.port, headers=[("Sec-WebSocket-Protocol", TRANSPORT)]
    ) as bare:
        await bare.send_json({"type": "connection_init"})
        assert await bare.receive_json() == {"type": "connection_ack"}
        await bare.send_json(
            {
                "id": "p",
                "type": "subscribe",
                "payload": {"query": 'subscription { stalled(key: "p") }'},
            }
        )
        with trio.fail_after(5):
            await probe.entered["p"].wait()
        await bare.stream.send_eof()  # half-close: the server sees the peer vanish
        with trio.fail_after(5):
            opcodes = await bare.wait_dropped()
        probe.gates["p"].set()
    assert 0x1 not in opcodes
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()


async def test_tws_45_shutdown_closes_1001_and_cleans_up(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """Server shutdown closes every client with 1001 Going away after their cleanups."""
    server = await start_server(build_app(probe))
    async with (
        connect(subprotocols=[TRANSPORT], target=server) as first,
        connect(subprotocols=[TRANSPORT], target=server) as second,
    ):
        for client, key in ((first, "one"), (second, "two")):
            await client.init()
            await subscribe(client, "1", f'subscription {{ forever(key: "{key}") }}')
            assert (await client.receive())["type"] == "next"
        server.shutdown()
        _, code1, reason1 = await until_close(first)
        _, code2, reason2 = await until_close(second)
    assert (code1, reason1) == (1001, "Going away")
    assert (code2, reason2) == (1001, "Going away")
    await probe.wait_cleaned("one", "two")
    with trio.fail_after(5):
        await server.metrics.wait_idle()


@pytest.mark.parametrize("code", [1000, 4504, 4004, 4005, 4321])
async def test_tws_46_client_close_codes_clean_up(
    tws: Any, probe: Probe, app_server: Server, code: int
) -> None:
    """Whatever code the client closes with, every operation is cleaned up."""
    async with tws() as client:
        await client.init()
        await subscribe(client, "s", 'subscription { forever(key: "s") }')
        await subscribe(client, "g", 'subscription { genForever(key: "g") }')
        await app_server.metrics.wait_for(lambda m: m.live_operations == 2)
        await client.ws.aclose(code=code, reason="Byebye")
    await probe.wait_cleaned("s", "g")
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()
