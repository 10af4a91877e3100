"""Protocol fuzzing with Hypothesis: random frames and message sequences on both protocols.

One server takes every example, with two bystanders (one per protocol)
streaming beside it the whole time. Each example opens a connection, sends a
random sequence (valid-ish messages, arbitrary JSON, garbage text, binary
frames, raw frames with random opcodes, fragmented messages, bytes that are
not WebSocket at all), then a sentinel whose answer proves the server is
still talking, and checks every reply: a message type the protocol
specifies, in the shape it specifies, or a close code from the specified set.

pytest-trio would run each Hypothesis example in a fresh Trio run (a fresh
server), so Hypothesis runs in a worker thread and each example calls back
into the test's Trio loop.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from wsproto import WSConnection
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage

from meshsub_trio import Server
from meshsub_trio.testing import LEGACY_WS, TRANSPORT_WS, GraphQLWSClient, open_graphql_ws

from . import PROTOCOLS, SLACK, data_type, first_data, handshake, tag_number

MAX_EXAMPLES = 100
#: Close codes each protocol specifies (plus RFC 6455's for broken framing).
#: Never 1006 (closing without a close frame) and never 1011/4500 (a crash).
WS_LEVEL = {1000, 1002, 1007, 1009}
CLOSE_CODES = {
    TRANSPORT_WS: WS_LEVEL | {4400, 4401, 4403, 4408, 4409, 4429},
    LEGACY_WS: WS_LEVEL | {1003, 4401, 4408, 4429},
}
REPLY_TYPES = {
    TRANSPORT_WS: {"connection_ack", "next", "error", "complete", "ping", "pong"},
    LEGACY_WS: {"connection_ack", "connection_error", "ka", "data", "error", "complete"},
}
QUERIES = [
    "{ hello }",
    "subscription { countdown(to: 2) }",
    "subscription { ticks(everyMs: 5) }",
    'subscription { stream(tag: "fuzz", everyMs: 5, cleanupMs: 0) }',
    "subscription { nope }",
    "subscription {",
    "subscription S { countdown(to: 1) } subscription T { countdown(to: 1) }",
    "subscription ($n: Int!) { countdown(to: $n) }",
    "{ __typename }",
]
TYPES = [
    "connection_init", "ping", "pong", "subscribe", "complete", "next", "error",
    "connection_ack", "start", "stop", "connection_terminate", "data", "ka", "connection_error",
]  # fmt: skip

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
    max_leaves=8,
)
op_ids = st.sampled_from(["1", "2", "3"]) | st.text(max_size=4) | json_values
payloads = (
    st.fixed_dictionaries(
        {"query": st.sampled_from(QUERIES)},
        optional={
            "variables": st.none() | st.just({"n": 1}) | json_values,
            "operationName": st.none() | st.sampled_from(["S", "T", "X"]) | json_values,
            "extensions": st.none() | json_values,
        },
    )
    | json_values
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values},
    optional={"id": op_ids, "payload": payloads},
)
small_ids = st.sampled_from(["1", "2", "3"])
valid_payloads = st.fixed_dictionaries(
    {"query": st.sampled_from(QUERIES)},
    optional={"variables": st.sampled_from([None, {}, {"n": 1}, {"n": "x"}])},
)


def valid_messages(protocol: str) -> st.SearchStrategy[dict[str, Any]]:
    """Messages the protocol defines, with plausible fields: the fuzz's way deeper in."""
    start, stop = ("subscribe", "complete") if protocol == TRANSPORT_WS else ("start", "stop")
    common = [
        st.fixed_dictionaries({"type": st.just(start), "id": small_ids, "payload": valid_payloads}),
        st.fixed_dictionaries({"type": st.just(stop), "id": small_ids}),
        st.just({"type": "connection_init", "payload": {}}),
    ]
    if protocol == TRANSPORT_WS:
        common += [st.just({"type": "ping"}), st.just({"type": "pong"})]
    else:
        common += [st.just({"type": "connection_terminate"})]
    return st.one_of(common)


opcodes = st.sampled_from([0x0, 0x1, 0x2, 0x3, 0x8, 0x9, 0xA, 0xB])
chaos_items = st.one_of(
    st.tuples(st.just("message"), messages),
    st.tuples(st.just("json"), json_values),
    st.tuples(st.just("text"), st.text(max_size=40)),
    st.tuples(st.just("binary"), st.binary(max_size=40)),
    st.tuples(st.just("frame"), st.tuples(opcodes, st.binary(max_size=40), st.booleans())),
    st.tuples(st.just("fragmented"), messages),
    st.tuples(st.just("raw"), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("close"), st.tuples(st.integers(0, 5000), st.text(max_size=10))),
)


def conversations(protocol: str) -> st.SearchStrategy[list[tuple[str, Any]]]:
    """Sequences of seven well-formed items in eight (some fragmented), one in eight chaos.

    About half the sequences stay well-formed to the end and reach deep
    states (live operations, duplicate ids, stops); the rest break somewhere.
    """
    valid = valid_messages(protocol)
    well_formed = [st.tuples(st.just("message"), valid)] * 5 + [
        st.tuples(st.just("fragmented"), valid)
    ] * 2
    return st.lists(st.one_of(*well_formed, chaos_items), min_size=1, max_size=10)


def frame(payload: bytes, opcode: int = 0x1, *, fin: bool = True) -> bytes:
    """One masked client frame (any opcode, FIN or not)."""
    mask = os.urandom(4)
    length = len(payload)
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        header = bytes((first, 0x80 | length))
    elif length < 65536:
        header = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def encode(kind: str, value: Any) -> tuple[bytes, set[str], int | None]:
    """The bytes for one fuzz item, the ids it names, and the close code it sends (if any)."""
    if kind in ("message", "fragmented"):
        ids = {value["id"]} if isinstance(value.get("id"), str) else set()
        data = json.dumps(value).encode()
        if kind == "message":
            return frame(data), ids, None
        cut = max(1, len(data) // 3)
        parts = [data[:cut], data[cut : 2 * cut], data[2 * cut :]]
        return (
            frame(parts[0], 0x1, fin=False) + frame(parts[1], 0x0, fin=False) + frame(parts[2], 0x0)
        ), ids, None
    if kind == "json":
        return frame(json.dumps(value).encode()), set(), None
    if kind == "text":
        return frame(value.encode("utf-8", "surrogatepass")), set(), None
    if kind == "binary":
        return frame(value, 0x2), set(), None
    if kind == "frame":
        opcode, payload, fin = value
        if opcode in (0x8, 0x9, 0xA):
            payload = payload[:125]
        return frame(payload, opcode, fin=fin), set(), None
    if kind == "raw":
        return value, set(), None
    code, reason = value
    body = code.to_bytes(2, "big") + reason.encode("utf-8", "surrogatepass")[:100]
    return frame(body, 0x8), set(), code


def sentinel(protocol: str) -> tuple[bytes, dict[str, Any]]:
    """A message any state answers, and its answer: proof the server still talks."""
    if protocol == TRANSPORT_WS:
        return frame(b'{"type":"ping","payload":{"sentinel":1}}'), {
            "type": "pong",
            "payload": {"sentinel": 1},
        }
    return frame(b'{"type":"sentinel","id":"sentinel"}'), {
        "type": "error",
        "id": "sentinel",
        "payload": {"message": "Invalid message type!"},
    }


def check_reply(protocol: str, message: Any, ids: set[str]) -> None:
    """A reply must be a message the protocol specifies, shaped as specified."""
    assert isinstance(message, dict), message
    kind = message.get("type")
    assert kind in REPLY_TYPES[protocol], message
    if kind in ("next", "data", "complete"):
        assert message.get("id") in ids, f"{kind} for an id never started: {message}"
    if kind in ("next", "data"):
        assert isinstance(message.get("payload"), dict), message
        assert set(message["payload"]) <= {"data", "errors", "extensions"}, message
    if kind == "error":
        payload = message.get("payload")
        if protocol == TRANSPORT_WS:
            assert message.get("id") in ids, message
            assert isinstance(payload, list) and payload, message
            assert all(isinstance(e, dict) and "message" in e for e in payload), message
        else:
            assert isinstance(payload, dict) and "message" in payload, message
    if kind == "connection_error":
        assert isinstance(message.get("payload"), dict), message


async def converse(
    port: int, protocol: str, sequence: list[tuple[str, Any]], *, init: bool = False
) -> None:
    """One example: send the sequence and the sentinel, check every reply and the close.

    With *init* the conversation opens with ``connection_init``; on
    graphql-transport-ws it then waits for the ack, as a real client must
    (a subscribe before the ack is closed with 4401).
    """
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        ws = await handshake(stream, "127.0.0.1", port, "/ws", protocol)
        ids: set[str] = set()
        client_codes: set[int] = set()
        probe, answer = sentinel(protocol)
        if init:
            await stream.send_all(frame(b'{"type":"connection_init"}'))
            if protocol == TRANSPORT_WS:
                ack = {"type": "connection_ack"}
                assert await read_replies(stream, ws, protocol, ids, ack) is None, "no ack"
        with trio.move_on_after(2):  # the server may close and stop reading mid-sequence
            try:
                for kind, value in sequence:
                    data, named, code = encode(kind, value)
                    ids |= named
                    if code is not None:
                        client_codes.add(code)
                    await stream.send_all(data)
                await stream.send_all(probe)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        close_code = await read_replies(stream, ws, protocol, ids, answer)
        if close_code is None:  # still open: a clean close must be echoed
            await stream.send_all(frame((1000).to_bytes(2, "big"), 0x8))
            close_code = await read_replies(stream, ws, protocol, ids, None)
        assert close_code is not None, "the server neither answered the sentinel nor closed"
        allowed = CLOSE_CODES[protocol] | client_codes
        assert close_code in allowed, f"close {close_code} is not one {protocol} specifies"
    finally:
        await trio.aclose_forcefully(stream)


async def read_replies(
    stream: trio.SocketStream,
    ws: WSConnection,
    protocol: str,
    ids: set[str],
    answer: dict[str, Any] | None,
) -> int | None:
    """Check replies until *answer* arrives (None returned) or the server closes (its code)."""
    with trio.fail_after(3):
        while True:
            try:
                data = await stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            assert data, "the server dropped the connection without a close frame (1006)"
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, CloseConnection):
                    return int(event.code)
                if isinstance(event, Ping):
                    await stream.send_all(frame(event.payload, 0xA))
                assert not isinstance(event, BytesMessage), "the server sent a binary frame"
                if isinstance(event, TextMessage):
                    assert event.message_finished  # the server never fragments
                    message = json.loads(event.data)
                    if answer is not None and message == answer:
                        return None
                    check_reply(protocol, message, ids)


class Bystander:
    """A client streaming all along; its sequence must stay complete and in order."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.values: list[int] = []
        self.arrivals: list[float] = []

    async def run(self, port: int, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with open_graphql_ws("127.0.0.1", port, protocol=self.protocol) as client:
            await self.stream(client, task_status)

    async def stream(self, client: GraphQLWSClient, task_status: Any) -> None:
        await client.init()
        tag = f"bystander-{self.protocol}"
        op = await client.start(f'subscription {{ stream(tag: "{tag}", everyMs: 5) }}')
        self.values.append(tag_number(await first_data(client, op))[1])
        task_status.started()
        while True:
            message = await client.receive()
            assert message.get("id") == op and message["type"] == data_type(self.protocol), message
            self.values.append(tag_number(message)[1])
            self.arrivals.append(trio.current_time())


async def test_fuzzed_frames_and_sequences_get_only_specified_replies_and_spare_a_bystander(
    meshsub_server: Server, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """100 random conversations (both protocols) against one server.

    Bounds: every reply is a specified message type for its protocol, every
    close code is in the protocol's set, each connection is released within
    2 s; nothing is logged at ERROR; the bystanders' sequences stay complete
    and in order, never pausing over 0.5 s; the example run takes < 20 s.
    """
    server = meshsub_server
    caplog.set_level(logging.ERROR)
    bystanders = [Bystander(protocol) for protocol in PROTOCOLS]
    for bystander in bystanders:
        await nursery.start(bystander.run, server.port)
    token = trio.lowlevel.current_trio_token()
    began = trio.current_time()

    async def example_in_trio(protocol: str, sequence: list[tuple[str, Any]], init: bool) -> None:
        await converse(server.port, protocol, sequence, init=init)
        with trio.fail_after(2):
            await server.metrics.wait_for(
                lambda m: m.live_connections == len(bystanders)
                and m.live_operations == len(bystanders)
            )

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(protocol=st.sampled_from(PROTOCOLS), opening=st.integers(0, 3), data=st.data())
    def fuzz(protocol: str, opening: int, data: st.DataObject) -> None:
        sequence = data.draw(conversations(protocol), label="sequence")
        init = opening > 0  # three in four conversations get past the handshake
        trio.from_thread.run(example_in_trio, protocol, sequence, init, trio_token=token)

    await trio.to_thread.run_sync(fuzz)
    assert trio.current_time() - began < 20
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() + (r.exc_text or "") for r in errors][:3]
    for bystander in bystanders:
        values = bystander.values
        assert len(values) > 50, "the bystander stopped streaming"
        assert values == list(range(values[0], values[0] + len(values))), bystander.protocol
        worst = max(b - a for a, b in zip(bystander.arrivals, bystander.arrivals[1:], strict=False))
        assert worst <= SLACK, f"{bystander.protocol} paused {worst:.2f}s"
