"""Apollo's legacy graphql-ws protocol over a real socket: the LEG-* checklist.

The checklist is ``/work/shared/reference/protocols.md`` section 2, with the
project's decisions from section 6. The test app and the bare-bytes client
come from :mod:`.test_transport_ws`. Items both protocols share are checked
once per protocol in :mod:`.test_both_protocols`; this module keeps what is
legacy only.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import trio

from meshsub_trio import AuthError, Context, Server

from ..wsclient import LEGACY, RawClient
from .test_transport_ws import (
    Connect,
    Probe,
    StartServer,
    bare_upgrade,
    build_app,
    until_close,
)

LEGACY_SERVER_TYPES = {"connection_ack", "connection_error", "ka", "data", "error", "complete"}


async def start(client: RawClient, op_id: str, query: str, **payload: Any) -> None:
    """Send ``start`` for *query* (extra payload keys as given)."""
    await client.send({"id": op_id, "type": "start", "payload": {"query": query, **payload}})


async def receive(client: RawClient, timeout: float = 5.0) -> dict[str, Any]:
    """The next message that is not a ``ka``."""
    with trio.fail_after(timeout):
        while True:
            message = await client.receive(timeout)
            if message["type"] != "ka":
                return message


def data_of(messages: list[dict[str, Any]], op_id: str) -> list[Any]:
    """The payload of every ``data`` for *op_id*."""
    return [m["payload"] for m in messages if m.get("id") == op_id and m["type"] == "data"]


async def legacy_alive(client: RawClient) -> None:
    """The socket still runs operations: a query gets its data and complete."""
    await start(client, "alive", "{ hello }")
    messages = await client.receive_until("complete")
    assert messages == [
        {"id": "alive", "type": "data", "payload": {"data": {"hello": "world"}}},
        {"id": "alive", "type": "complete"},
    ]


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def app_server(start_server: StartServer, probe: Probe) -> Server:
    return await start_server(build_app(probe))


@pytest.fixture
def legacy(connect: Connect, app_server: Server) -> Callable[..., Any]:
    """``async with legacy() as client``: a graphql-ws client of the test app."""

    def _open(target: Server | None = None, **kw: Any) -> Any:
        return connect(subprotocols=[LEGACY], target=target or app_server, **kw)

    return _open


# ---- connection (LEG-02..07, LEG-18) ----------------------------------------


@pytest.mark.parametrize(
    "init",
    [
        {"type": "connection_init"},
        {"type": "connection_init", "payload": None},
        {"type": "connection_init", "payload": {"token": "t"}},
    ],
    ids=["absent", "null", "object"],
)
async def test_leg_02_init_is_acked_then_ka(legacy: Any, init: dict[str, Any]) -> None:
    """``connection_init`` gets exactly ``{"type":"connection_ack"}``, then a ``ka``."""
    async with legacy() as client:
        await client.send(init)
        assert await client.receive() == {"type": "connection_ack"}
        assert await client.receive() == {"type": "ka"}


async def test_leg_03_ka_after_ack_then_periodically(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """With keep-alive on: ``ka`` right after the ack, then one per interval."""
    server = await start_server(build_app(probe), keepalive=0.02)
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await client.send({"type": "connection_init"})
        assert await client.receive() == {"type": "connection_ack"}
        assert await client.receive() == {"type": "ka"}
        with trio.fail_after(2):
            for _ in range(3):
                assert await client.receive() == {"type": "ka"}
        await legacy_alive(client)


async def test_leg_03_ka_interleaves_with_data(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """Keep-alives do not disturb a running subscription."""
    server = await start_server(build_app(probe), keepalive=0.01)
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await client.init()
        await start(client, "1", 'subscription { forever(key: "k") }')
        seen: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while len([m for m in seen if m["type"] == "data"]) < 20:
                seen.append(await client.receive())
        assert {m["type"] for m in seen} <= {"data", "ka"}
        assert [m["payload"]["data"]["forever"] for m in seen if m["type"] == "data"] == list(
            range(20)
        )


async def test_leg_04_on_connect_false_gives_connection_error_and_1011(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """A refused init: ``connection_error``, then close 1011, no ack."""

    async def on_connect(_ctx: Context) -> bool:
        return False

    server = await start_server(build_app(probe, on_connect=on_connect))
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await client.send({"type": "connection_init"})
        seen, code, _ = await until_close(client)
    assert [m["type"] for m in seen] == ["connection_error"]
    assert isinstance(seen[0].get("payload"), dict)
    assert code == 1011


async def test_leg_04_auth_error_gives_connection_error_and_1011(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """authenticate raising AuthError: ``connection_error`` carrying its message, then 1011."""

    async def authenticate(_ctx: Context) -> None:
        raise AuthError("Prohibited connection!")

    server = await start_server(build_app(probe, authenticate=authenticate))
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await client.send({"type": "connection_init", "payload": {"token": "nope"}})
        await start(client, "1", "{ hello }")  # queued start must not run
        seen, code, _ = await until_close(client)
    assert seen == [{"type": "connection_error", "payload": {"message": "Prohibited connection!"}}]
    assert code == 1011


@pytest.mark.parametrize("payload", ["gonna fail", 1, []], ids=["string", "number", "array"])
async def test_leg_05_non_object_init_payload_gives_connection_error_and_close(
    legacy: Any, payload: Any
) -> None:
    """An init payload that is not an object: ``connection_error``, then the socket closes."""
    async with legacy() as client:
        await client.send({"type": "connection_init", "payload": payload})
        seen, code, _ = await until_close(client)
    assert [m["type"] for m in seen] == ["connection_error"]
    assert code != 1006


async def test_leg_06_starts_sent_before_ack_run_after_it(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """init + starts back-to-back (as Apollo does): ack, ka, then the operations' data."""
    server = await start_server(build_app(probe, on_connect=probe.gated_on_connect))
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await client.send({"type": "connection_init", "payload": {"strawberry": "rocks"}})
        await start(client, "p", "subscription { params }")
        await start(client, "c", "subscription { countdown(to: 1) }")
        with trio.fail_after(5):
            await probe.entered["connect"].wait()
        await client.expect_silence(0.05)
        probe.gates["connect"].set()
        first = [await client.receive(), await client.receive()]
        assert first == [{"type": "connection_ack"}, {"type": "ka"}]
        seen: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while len([m for m in seen if m["type"] == "complete"]) < 2:
                seen.append(await receive(client))
    assert data_of(seen, "p") == [{"data": {"params": '{"strawberry": "rocks"}'}}]
    assert data_of(seen, "c") == [{"data": {"countdown": 1}}, {"data": {"countdown": 0}}]


async def test_leg_06_start_right_after_init_without_hooks(legacy: Any) -> None:
    """Without hooks the same back-to-back sequence works: ack first, then data."""
    async with legacy() as client:
        await client.send({"type": "connection_init", "payload": {"a": 1}})
        await start(client, "p", "{ params }")
        assert await client.receive() == {"type": "connection_ack"}
        messages = await client.receive_until("complete")
    assert messages == [
        {"id": "p", "type": "data", "payload": {"data": {"params": '{"a": 1}'}}},
        {"id": "p", "type": "complete"},
    ]


async def test_leg_06_stop_before_ack_cancels_held_start(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """A start stopped before the ack never runs: no ``data`` for it after the ack."""
    server = await start_server(build_app(probe, on_connect=probe.gated_on_connect))
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await client.send({"type": "connection_init"})
        await start(client, "gone", 'subscription { forever(key: "gone") }')
        await client.send({"id": "gone", "type": "stop"})
        with trio.fail_after(5):
            await probe.entered["connect"].wait()
        probe.gates["connect"].set()
        assert await client.receive() == {"type": "connection_ack"}
        seen: list[dict[str, Any]] = []
        with trio.move_on_after(0.1):
            while True:
                seen.append(await client.receive())
    assert data_of(seen, "gone") == [], seen[:3]


async def test_leg_18_connection_terminate_closes(legacy: Any, probe: Probe) -> None:
    """``connection_terminate`` closes the socket normally and ends its operations."""
    async with legacy() as client:
        await client.init()
        await start(client, "1", 'subscription { forever(key: "t") }')
        assert (await receive(client))["type"] == "data"
        await client.send({"type": "connection_terminate"})
        _, code, _ = await until_close(client)
    assert code == 1000
    await probe.wait_cleaned("t")


# ---- operations (LEG-08..17) -------------------------------------------------


async def test_leg_10_validation_error_is_single_error_object(legacy: Any) -> None:
    """A validation failure: one ``error`` whose payload is one error object, no complete."""
    async with legacy() as client:
        await client.init()
        await start(client, "invalid-field", "subscription { notASubscriptionField }")
        message = await receive(client)
        await client.expect_silence(0.05)
        await legacy_alive(client)
    assert message == {
        "id": "invalid-field",
        "type": "error",
        "payload": {
            "message": "Cannot query field 'notASubscriptionField' on type 'Subscription'.",
            "locations": [{"line": 1, "column": 16}],
        },
    }


@pytest.mark.parametrize("field", ["forever", "genForever"], ids=["streamer", "async-generator"])
async def test_leg_15_stop_sends_complete_and_ends_source(
    legacy: Any, probe: Probe, app_server: Server, field: str
) -> None:
    """``stop``: the source's finally runs, a ``complete`` comes, then no more ``data``."""
    async with legacy() as client:
        await client.init()
        await start(client, "1", f'subscription {{ {field}(key: "{field}") }}')
        assert (await receive(client))["type"] == "data"
        await client.send({"id": "1", "type": "stop"})
        messages = await client.receive_until("complete")
        assert messages[-1] == {"id": "1", "type": "complete"}
        assert {m["type"] for m in messages[:-1]} <= {"data"}
        await probe.wait_cleaned(field)
        await client.expect_silence(0.1)
        with trio.fail_after(5):
            await app_server.metrics.wait_for(lambda m: m.live_operations == 0)
        await legacy_alive(client)


async def test_leg_15_stop_ends_only_its_operation(legacy: Any, probe: Probe) -> None:
    """Stopping one operation leaves its sibling running."""
    async with legacy() as client:
        await client.init()
        await start(client, "a", 'subscription { forever(key: "a") }')
        await start(client, "b", 'subscription { forever(key: "b") }')
        await client.send({"id": "a", "type": "stop"})
        await probe.wait_cleaned("a")
        seen: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while not any(m["type"] == "complete" for m in seen):
                seen.append(await receive(client))
            after = [await receive(client) for _ in range(3)]
        assert "b" not in probe.cleaned
    assert seen[-1] == {"id": "a", "type": "complete"}
    assert all(m["id"] == "b" and m["type"] == "data" for m in after)


@pytest.mark.parametrize("op_id", ["never-used", "toString", "__proto__", "constructor"])
async def test_leg_16_stop_for_unknown_id_is_silent(legacy: Any, op_id: str) -> None:
    """``stop`` for an id that is not live (even prototype names) gets no reply."""
    async with legacy() as client:
        await client.init()
        await client.send({"id": op_id, "type": "stop"})
        await client.expect_silence(0.05)
        await legacy_alive(client)


async def test_leg_16_24_stop_for_finished_id_is_silent(legacy: Any) -> None:
    """The client's ``stop`` for an id the server already completed or failed: no reply."""
    async with legacy() as client:
        await client.init()
        await start(client, "done", "{ hello }")
        await client.receive_until("complete")
        await start(client, "failed", "{ nope }")
        assert (await receive(client))["type"] == "error"
        await client.send({"id": "done", "type": "stop"})
        await client.send({"id": "failed", "type": "stop"})
        await client.send({"type": "stop"})
        await client.expect_silence(0.05)
        await legacy_alive(client)


async def test_leg_17_start_reusing_live_id_replaces_operation(
    legacy: Any, probe: Probe, app_server: Server
) -> None:
    """A ``start`` with a live id stops the old operation and runs the new one; no error."""
    async with legacy() as client:
        await client.init()
        await start(client, "same", 'subscription { forever(key: "old") }')
        assert (await receive(client))["payload"]["data"] == {"forever": 0}
        await start(client, "same", "subscription { countdown(to: 1) }")
        await probe.wait_cleaned("old")
        seen: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while data_of(seen, "same")[-2:] != [
                {"data": {"countdown": 1}},
                {"data": {"countdown": 0}},
            ]:
                seen.append(await receive(client))
            seen += await client.receive_until("complete")
        await client.expect_silence(0.05)
        with trio.fail_after(5):
            await app_server.metrics.wait_for(lambda m: m.live_operations == 0)
    assert all(m["type"] in ("data", "complete") for m in seen), seen
    # Old data may still be in flight, but nothing of the old stream after the new one began.
    first_new = next(
        i for i, m in enumerate(seen) if "countdown" in m.get("payload", {}).get("data", {})
    )
    assert all("forever" not in m.get("payload", {}).get("data", {}) for m in seen[first_new:])
    assert seen[-1] == {"id": "same", "type": "complete"}


# ---- framing and malformed input (LEG-19..21, LEG-23) ------------------------


@pytest.mark.parametrize("stage", ["before-init", "after-ack"])
@pytest.mark.parametrize("text", ["HI", '{"type":"start"', "{'single': 'quotes'}"])
async def test_leg_19_invalid_json_gets_connection_error_socket_stays(
    legacy: Any, stage: str, text: str
) -> None:
    """Text that is not JSON: ``connection_error`` with a payload; the session goes on."""
    async with legacy() as client:
        if stage == "after-ack":
            await client.init()
        await client.send(text)
        message = await receive(client)
        assert message["type"] == "connection_error"
        assert isinstance(message["payload"], dict) and message["payload"]["message"]
        if stage == "before-init":
            assert await client.init() == {"type": "connection_ack"}
        await legacy_alive(client)


@pytest.mark.parametrize("stage", ["before-init", "after-ack"])
@pytest.mark.parametrize(
    "message",
    [
        {},
        {"type": "NotAProtocolMessage"},
        {"id": "7", "type": "subscribe", "payload": {"query": "{ hello }"}},
        {"type": "ping"},
        [],
        "text",
        0,
    ],
    ids=[
        "empty-object",
        "unknown-type",
        "transport-ws-subscribe",
        "ping",
        "array",
        "string",
        "zero",
    ],
)
async def test_leg_20_unknown_type_gets_error_socket_stays(
    legacy: Any, stage: str, message: Any
) -> None:
    """Unknown types and non-object JSON get an ``error`` reply; the session goes on."""
    async with legacy() as client:
        if stage == "after-ack":
            await client.init()
        await client.send(json.dumps(message))
        reply = await receive(client)
        assert reply["type"] == "error"
        assert isinstance(reply["payload"], dict) and reply["payload"]["message"]
        if isinstance(message, dict) and "id" in message:
            assert reply["id"] == message["id"]
        if stage == "before-init":
            assert await client.init() == {"type": "connection_ack"}
        await legacy_alive(client)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "start", "payload": {"query": "{ hello }"}},
        {"id": "", "type": "start", "payload": {"query": "{ hello }"}},
        {"id": "1", "type": "start"},
        {"id": "1", "type": "start", "payload": {"query": 5}},
        {"id": "1", "type": "start", "payload": {"query": "{ hello }", "variables": []}},
        {"id": "1", "type": "start", "payload": {"query": "{ hello }", "operationName": 1}},
    ],
    ids=["no-id", "empty-id", "no-payload", "query-number", "variables-array", "name-number"],
)
async def test_leg_20_malformed_start_gets_error_socket_stays(
    legacy: Any, message: dict[str, Any]
) -> None:
    """A ``start`` of the wrong shape gets an ``error`` reply and nothing runs."""
    async with legacy() as client:
        await client.init()
        await client.send(message)
        reply = await receive(client)
        assert reply["type"] == "error"
        assert isinstance(reply["payload"], dict)
        await client.expect_silence(0.05)
        await legacy_alive(client)


@pytest.mark.parametrize("stage", ["before-init", "after-ack"])
async def test_leg_21_binary_frame_closes_1003(legacy: Any, stage: str) -> None:
    """Binary frames close 1003 (project decision), before and after the ack."""
    async with legacy() as client:
        if stage == "after-ack":
            await client.init()
            message = {"id": "1", "type": "start", "payload": {"query": "{ hello }"}}
        else:
            message = {"type": "connection_init"}
        await client.send(json.dumps(message).encode())
        seen, code, _ = await until_close(client)
    assert [m for m in seen if m["type"] != "ka"] == []
    assert code == 1003


async def test_leg_23_only_legacy_message_types_are_sent(
    start_server: StartServer, probe: Probe, connect: Connect
) -> None:
    """A busy session (keep-alive, errors, stops, a client ``ping``) sees only legacy types."""
    server = await start_server(build_app(probe), keepalive=0.01)
    seen: list[dict[str, Any]] = []
    async with connect(subprotocols=[LEGACY], target=server) as client:
        await client.send("not json")
        seen.append(await client.receive())
        await client.send({"type": "connection_init"})
        await client.send({"type": "ping"})
        await start(client, "q", "{ hello fail }")
        await start(client, "s", "subscription { events(to: 3) { n bad } }")
        await start(client, "v", "{ nope }")
        await start(client, "b", "subscription { boom(after: 1) }")
        await start(client, "f", 'subscription { forever(key: "f") }')
        with trio.fail_after(5):
            while True:
                message = await client.receive()
                seen.append(message)
                if message.get("id") == "f" and message["type"] == "data":
                    break
            await client.send({"id": "f", "type": "stop"})
            while not (seen[-1].get("id") == "f" and seen[-1]["type"] == "complete"):
                seen.append(await client.receive())
        with trio.move_on_after(0.05):
            while True:
                seen.append(await client.receive())
    types = {m["type"] for m in seen}
    assert types <= LEGACY_SERVER_TYPES, types
    assert {"connection_ack", "connection_error", "ka", "data", "error", "complete"} <= types


# ---- disconnect and isolation (LEG-22, LEG-27) --------------------------------


async def test_leg_22_client_close_ends_every_operation(
    legacy: Any, probe: Probe, app_server: Server
) -> None:
    """A client close runs every source's finally and leaves nothing alive."""
    async with legacy() as client:
        await client.init()
        await start(client, "s", 'subscription { forever(key: "s") }')
        await start(client, "g", 'subscription { genForever(key: "g") }')
        await start(client, "q", '{ slow(key: "q") }')
        with trio.fail_after(5):
            await probe.entered["q"].wait()
        await app_server.metrics.wait_for(lambda m: m.live_operations == 3)
    await probe.wait_cleaned("s", "g")
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()
    assert probe.cleaned.count("s") == 1 and probe.cleaned.count("g") == 1


async def test_leg_22_abrupt_disconnect_ends_every_operation(
    probe: Probe, app_server: Server
) -> None:
    """A TCP drop with no close frame ends every operation too."""
    async with bare_upgrade(app_server.port, headers=[("Sec-WebSocket-Protocol", LEGACY)]) as bare:
        assert bare.status == 101
        await bare.send_json({"type": "connection_init"})
        for op_id, field in (("s", "forever"), ("g", "genForever")):
            await bare.send_json(
                {
                    "id": op_id,
                    "type": "start",
                    "payload": {"query": f'subscription {{ {field}(key: "{op_id}") }}'},
                }
            )
        assert await bare.receive_json() == {"type": "connection_ack"}
        await app_server.metrics.wait_for(lambda m: m.live_operations == 2)
    await probe.wait_cleaned("s", "g")
    with trio.fail_after(5):
        await app_server.metrics.wait_idle()


async def test_leg_27_results_isolated_per_client_and_operation(legacy: Any) -> None:
    """Two clients and two operations per client each get only their own events."""
    async with legacy() as one, legacy() as two:
        await one.init()
        await two.init()
        await start(one, "x", "subscription($n: Int!) { countdown(to: $n) }", variables={"n": 1})
        await start(one, "y", "subscription { gen(to: 2) }")
        await start(two, "x", "subscription($n: Int!) { countdown(to: $n) }", variables={"n": 3})
        seen_one: list[dict[str, Any]] = []
        with trio.fail_after(5):
            while len([m for m in seen_one if m["type"] == "complete"]) < 2:
                seen_one.append(await receive(one))
        seen_two = await two.receive_until("complete")
        await one.expect_silence(0.05)
        await two.expect_silence(0.05)
    assert [p["data"] for p in data_of(seen_one, "x")] == [{"countdown": 1}, {"countdown": 0}]
    assert [p["data"] for p in data_of(seen_one, "y")] == [{"gen": 0}, {"gen": 1}, {"gen": 2}]
    assert [p["data"] for p in data_of(seen_two, "x")] == [{"countdown": n} for n in (3, 2, 1, 0)]
