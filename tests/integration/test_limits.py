"""Server limits over real sockets, on both protocols.

Message size (1 MiB, close 1009), the per-connection operation cap (TWS-42 /
LEG-26, default 100), the init timeout (TWS-13, close 4408), the query depth
limit and the Origin allow-list for WebSocket upgrades.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from meshsub_trio import Server

from ..wsclient import LEGACY, TRANSPORT, RawClient
from .test_transport_ws import (
    BareSocket,
    Connect,
    Probe,
    StartServer,
    bare_upgrade,
    build_app,
    until_close,
)

MIB = 1 << 20
PROTOCOLS = [TRANSPORT, LEGACY]


async def init(client: RawClient) -> None:
    """connection_init and its ack, whatever the protocol."""
    assert (await client.init())["type"] == "connection_ack"


async def begin(client: RawClient, op_id: str, query: str) -> None:
    """Start an operation in the client's protocol."""
    kind = "subscribe" if client.subprotocol == TRANSPORT else "start"
    await client.send({"id": op_id, "type": kind, "payload": {"query": query}})


async def end(client: RawClient, op_id: str) -> None:
    """Stop an operation in the client's protocol."""
    kind = "complete" if client.subprotocol == TRANSPORT else "stop"
    await client.send({"id": op_id, "type": kind})


async def receive(client: RawClient) -> dict[str, Any]:
    """The next message that is not a ``ka``."""
    while True:
        message = await client.receive()
        if message["type"] != "ka":
            return message


def is_data(message: dict[str, Any]) -> bool:
    return message["type"] in ("next", "data")


def limit_error(client: RawClient, op_id: str) -> dict[str, Any]:
    """The cap's ``error`` message: an array on transport-ws, one object on legacy."""
    error = {"message": "Subscription limit reached"}
    payload: Any = [error] if client.subprotocol == TRANSPORT else error
    return {"id": op_id, "type": "error", "payload": payload}


async def alive(client: RawClient) -> None:
    """The socket still runs operations."""
    await begin(client, "alive", "{ hello }")
    messages: list[dict[str, Any]] = []
    with trio.fail_after(5):
        while not messages or messages[-1]["type"] != "complete":
            message = await receive(client)
            if message.get("id") == "alive":
                messages.append(message)
    assert [m["type"] for m in messages] == [
        "next" if client.subprotocol == TRANSPORT else "data",
        "complete",
    ]


# ---- message size -------------------------------------------------------------


def padded(protocol: str, size: int) -> str:
    """A valid, reply-free message of exactly *size* bytes."""
    if protocol == TRANSPORT:
        shell = {"type": "pong", "payload": {"pad": ""}}
    else:
        shell = {"id": "unknown", "type": "stop", "pad": ""}
    empty = len(json.dumps(shell, separators=(",", ":")))
    text = json.dumps(shell, separators=(",", ":")).replace(
        '"pad":""', f'"pad":"{"a" * (size - empty)}"'
    )
    assert len(text.encode()) == size
    return text


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_limits_message_of_exactly_1_mib_is_accepted(connect: Connect, protocol: str) -> None:
    """A message of exactly the 1 MiB maximum is processed normally."""
    async with connect(subprotocols=[protocol]) as client:
        await init(client)
        await client.send(padded(protocol, MIB))
        await client.expect_silence(0.05)
        await alive(client)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("stage", ["first-message", "after-ack"])
async def test_limits_message_over_1_mib_closes_1009(
    connect: Connect, protocol: str, stage: str
) -> None:
    """One byte over 1 MiB closes the socket with 1009.

    The server refuses from the frame header, before reading the payload, so
    its close may arrive while the client is still sending.
    """
    async with connect(subprotocols=[protocol]) as client:
        if stage == "after-ack":
            await init(client)
        try:
            await client.send(padded(protocol, MIB + 1))
        except ConnectionClosed as closed:
            seen, code = [], closed.reason.code
        else:
            seen, code, _ = await until_close(client)
    assert [m for m in seen if m["type"] != "ka"] == []
    assert code == 1009


async def _send_fragments(bare: BareSocket, parts: list[bytes]) -> None:
    """One text message split over several masked frames."""
    for index, part in enumerate(parts):
        opcode = 0x1 if index == 0 else 0x0
        fin = 0x80 if index == len(parts) - 1 else 0x00
        length = len(part)
        if length < 126:
            header = bytes((fin | opcode, 0x80 | length))
        elif length < 65536:
            header = bytes((fin | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
        else:
            header = bytes((fin | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
        await bare.stream.send_all(header + b"\0\0\0\0" + part)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_limits_fragmented_message_over_1_mib_closes_1009(
    server: Server, protocol: str
) -> None:
    """The limit counts a whole message, not a frame: fragments adding up past 1 MiB close 1009."""
    text = padded(protocol, MIB + 100).encode()
    parts = [text[: MIB // 2], text[MIB // 2 : MIB], text[MIB:]]
    async with bare_upgrade(server.port, headers=[("Sec-WebSocket-Protocol", protocol)]) as bare:
        assert bare.status == 101
        await _send_fragments(bare, parts)
        with trio.fail_after(5):
            while True:
                opcode, payload = await bare.receive_frame()
                if opcode == 0x8:
                    break
        assert int.from_bytes(payload[:2], "big") == 1009


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_limits_configured_message_size(
    start_server: StartServer, connect: Connect, protocol: str
) -> None:
    """``max_message_size`` is configurable: at the limit fine, one byte over closes 1009."""
    server = await start_server(max_message_size=1000)
    async with connect(subprotocols=[protocol], target=server) as client:
        await init(client)
        await client.send(padded(protocol, 1000))
        await client.expect_silence(0.05)
        await client.send(padded(protocol, 1001))
        _, code, _ = await until_close(client)
    assert code == 1009


# ---- operation cap (TWS-42, LEG-26) ---------------------------------------------

TICK = "subscription { ticks(everyMs: 100000) }"  # one event, then quiet for 100 s


async def _fill(client: RawClient, count: int) -> None:
    """Start *count* quiet subscriptions and wait for each one's first event."""
    for n in range(count):
        await begin(client, f"sub{n}", TICK)
    started: set[str] = set()
    with trio.fail_after(10):
        while len(started) < count:
            message = await receive(client)
            assert is_data(message), message
            started.add(message["id"])


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tws_42_leg_26_default_cap_of_100_operations(
    connect: Connect, server: Server, protocol: str
) -> None:
    """The 101st live operation gets ``Subscription limit reached``; the socket stays."""
    async with connect(subprotocols=[protocol]) as client:
        await init(client)
        await _fill(client, 100)
        await begin(client, "sub100", TICK)
        assert await receive(client) == limit_error(client, "sub100")
        await client.expect_silence(0.05)
        assert server.metrics.live_operations == 100
        # Ending one frees a slot.
        await end(client, "sub0")
        if protocol == LEGACY:
            assert await receive(client) == {"id": "sub0", "type": "complete"}
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_operations == 99)
        await begin(client, "sub100", TICK)
        assert is_data(await receive(client))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tws_42_leg_26_configured_cap_and_freed_slots(
    start_server: StartServer, connect: Connect, protocol: str
) -> None:
    """With a cap of 2: the third gets the error, a finished operation frees its slot."""
    server = await start_server(max_operations=2)
    async with connect(subprotocols=[protocol], target=server) as client:
        await init(client)
        await _fill(client, 2)
        await begin(client, "sub2", TICK)
        assert await receive(client) == limit_error(client, "sub2")
        await begin(client, "q", "{ hello }")
        assert await receive(client) == limit_error(client, "q")
        await end(client, "sub1")
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_operations == 1)
        await alive(client)  # a query fits now, and its slot frees again
        await begin(client, "sub3", TICK)
        message = await receive(client)
        assert is_data(message) and message["id"] == "sub3"


async def test_leg_26_reusing_live_id_does_not_count_against_cap(
    start_server: StartServer, connect: Connect
) -> None:
    """Legacy: a ``start`` replacing a live id at the cap is not refused."""
    server = await start_server(max_operations=2)
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await init(client)
        await _fill(client, 2)
        await begin(client, "sub1", "subscription { countdown(to: 1) }")
        messages = await client.receive_until("complete")
    assert [m for m in messages if m["type"] == "error"] == []
    assert [m["payload"]["data"] for m in messages if m["type"] == "data"][-2:] == [
        {"countdown": 1},
        {"countdown": 0},
    ]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tws_42_leg_26_cap_disabled_with_none(
    start_server: StartServer, connect: Connect, protocol: str
) -> None:
    """``max_operations=None``: 150 live operations on one socket are fine."""
    server = await start_server(max_operations=None)
    async with connect(subprotocols=[protocol], target=server) as client:
        await init(client)
        await _fill(client, 150)
        assert server.metrics.live_operations == 150
        await alive(client)


async def test_tws_42_caps_are_per_connection(start_server: StartServer, connect: Connect) -> None:
    """One connection at its cap does not limit another."""
    server = await start_server(max_operations=2)
    async with (
        connect(subprotocols=[TRANSPORT], target=server) as one,
        connect(subprotocols=[LEGACY], target=server) as two,
    ):
        await init(one)
        await init(two)
        await _fill(one, 2)
        await _fill(two, 2)
        assert server.metrics.live_operations == 4


# ---- init timeout (TWS-13) -------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tws_13_no_init_closes_4408(
    start_server: StartServer, connect: Connect, protocol: str
) -> None:
    """No ``connection_init`` within ``init_timeout``: close 4408, both protocols."""
    server = await start_server(init_timeout=0.05)
    async with connect(subprotocols=[protocol], target=server) as client:
        seen, code, reason = await until_close(client, timeout=2)
    assert seen == []
    assert (code, reason) == (4408, "Connection initialisation timeout")


async def test_tws_13_ping_does_not_stop_the_init_timer(
    start_server: StartServer, connect: Connect
) -> None:
    """Pings are answered, but only ``connection_init`` stops the timer."""
    server = await start_server(init_timeout=0.1)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.send({"type": "ping"})
        assert await client.receive() == {"type": "pong"}
        _, code, _ = await until_close(client, timeout=2)
    assert code == 4408


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_tws_13_init_in_time_keeps_socket(
    start_server: StartServer, connect: Connect, protocol: str
) -> None:
    """An init before the timeout: the socket outlives several timeouts."""
    server = await start_server(init_timeout=0.05)
    async with connect(subprotocols=[protocol], target=server) as client:
        await init(client)
        await client.expect_silence(0.2)
        await alive(client)


async def test_tws_13_zero_init_timeout_disables_timer(
    start_server: StartServer, connect: Connect
) -> None:
    """``init_timeout=0`` turns the timer off."""
    server = await start_server(init_timeout=0)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await client.expect_silence(0.1)
        await init(client)


# ---- depth limit -----------------------------------------------------------------


def nested(depth: int, name: str = "") -> str:
    """A query whose deepest field sits *depth* levels down (``node`` counts as one)."""
    inner = "value"
    for _ in range(depth - 2):
        inner = f"child {{ {inner} }}"
    return f"query {name} {{ node {{ {inner} }} }}"


@pytest.fixture
async def nodes(start_server: StartServer) -> Server:
    return await start_server(build_app(Probe()))


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_limits_depth_15_allowed_16_refused(
    nodes: Server, connect: Connect, protocol: str
) -> None:
    """Default max_depth 15: depth 15 runs, depth 16 is an ``error`` naming both numbers."""
    async with connect(subprotocols=[protocol], target=nodes) as client:
        await init(client)
        await begin(client, "ok", nested(15))
        messages = await client.receive_until("complete")
        assert [m["type"] for m in messages] == [
            "next" if protocol == TRANSPORT else "data",
            "complete",
        ]
        await begin(client, "deep", nested(16))
        error = await receive(client)
        await alive(client)
    assert error["type"] == "error" and error["id"] == "deep"
    payload = error["payload"]
    first = payload[0] if protocol == TRANSPORT else payload
    assert first["message"] == "Operation 'anonymous' is 16 levels deep; the limit is 15."


async def test_limits_configured_depth_names_the_operation(
    start_server: StartServer, connect: Connect
) -> None:
    """A configured max_depth applies, also through fragments, and names the operation."""
    server = await start_server(build_app(Probe()), max_depth=3)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await init(client)
        await begin(client, "a", nested(4, "Deep"))
        assert (await receive(client))["payload"][0]["message"] == (
            "Operation 'Deep' is 4 levels deep; the limit is 3."
        )
        await begin(
            client,
            "b",
            "query Frag { node { ...F } } fragment F on Node { child { child { value } } }",
        )
        assert (await receive(client))["payload"][0]["message"] == (
            "Operation 'Frag' is 4 levels deep; the limit is 3."
        )
        await begin(client, "c", nested(3))
        assert (await receive(client))["type"] == "next"


async def test_limits_depth_limit_disabled_with_none(
    start_server: StartServer, connect: Connect
) -> None:
    """``max_depth=None``: a 40-level query runs."""
    server = await start_server(build_app(Probe()), max_depth=None)
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await init(client)
        await begin(client, "1", nested(40))
        messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == ["next", "complete"]


# ---- Origin allow-list -------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/graphql"])
@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://127.0.0.1.evil.example",
        "http://localhost.evil.example",
    ],
)
async def test_limits_foreign_origin_is_refused(connect: Connect, path: str, origin: str) -> None:
    """A browser Origin that is neither this host nor loopback is refused with 403."""
    with pytest.raises(ConnectionRejected) as refused:
        async with connect(
            subprotocols=[TRANSPORT], path=path, extra_headers=[(b"origin", origin.encode())]
        ):
            pass
    assert refused.value.status_code == 403


@pytest.mark.parametrize(
    "origin",
    ["http://localhost:3000", "http://127.0.0.1:8080", "http://[::1]:9000", "https://localhost"],
)
async def test_limits_loopback_origins_are_allowed(connect: Connect, origin: str) -> None:
    """Loopback origins (local dev front ends) may open a socket."""
    async with connect(
        subprotocols=[TRANSPORT], extra_headers=[(b"origin", origin.encode())]
    ) as client:
        await init(client)


@pytest.mark.parametrize(
    "origin", ["http://meshery.example:9081", "https://meshery.example", "http://MESHERY.example"]
)
async def test_limits_same_host_origin_is_allowed(start_server: StartServer, origin: str) -> None:
    """An Origin naming the host the request was sent to is allowed."""
    server = await start_server(allowed_hosts=("meshery.example",))  # a Host it serves
    async with bare_upgrade(
        server.port,
        host_header="meshery.example:9081",
        headers=[("Origin", origin), ("Sec-WebSocket-Protocol", TRANSPORT)],
    ) as bare:
        assert bare.status == 101
        await bare.send_json({"type": "connection_init"})
        with trio.fail_after(5):
            assert await bare.receive_json() == {"type": "connection_ack"}


async def test_limits_other_host_than_request_host_is_refused(start_server: StartServer) -> None:
    """A non-loopback Origin for a different host than the request's Host is refused."""
    server = await start_server(allowed_hosts=("meshery.example",))  # a Host it serves
    async with bare_upgrade(
        server.port,
        host_header="meshery.example:9081",
        headers=[("Origin", "http://other.example"), ("Sec-WebSocket-Protocol", TRANSPORT)],
    ) as bare:
        assert bare.status == 403


async def test_limits_no_origin_is_allowed(connect: Connect) -> None:
    """Non-browser clients send no Origin and are let in."""
    async with connect(subprotocols=[TRANSPORT]) as client:
        await init(client)


async def test_limits_wildcard_allows_every_origin(
    start_server: StartServer, connect: Connect
) -> None:
    """``allowed_origins=("*",)`` allows any Origin."""
    server = await start_server(allowed_origins=("*",))
    for origin in (b"http://evil.example", b"null"):
        async with connect(
            subprotocols=[TRANSPORT], target=server, extra_headers=[(b"origin", origin)]
        ) as client:
            await init(client)


async def test_limits_explicit_allow_list(start_server: StartServer, connect: Connect) -> None:
    """An explicit list allows exactly its origins (loopback gets no special pass)."""
    server = await start_server(allowed_origins=("https://app.example",))
    async with connect(
        subprotocols=[TRANSPORT], target=server, extra_headers=[(b"origin", b"https://app.example")]
    ) as client:
        await init(client)
    for origin in (b"https://evil.example", b"http://localhost:3000", b"https://app.example:444"):
        with pytest.raises(ConnectionRejected) as refused:
            async with connect(
                subprotocols=[TRANSPORT], target=server, extra_headers=[(b"origin", origin)]
            ):
                pass
        assert refused.value.status_code == 403
