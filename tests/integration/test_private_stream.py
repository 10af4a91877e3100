"""A subscription's own streamer (``share=None``): values executed where they are emitted.

The direct path (execute, encode, write inside ``emit``) must keep every
guarantee of the buffered one: order, async resolvers, errors reported to the
client, and ``emit`` refusing values once the subscription is over.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio
import trio.testing

from meshsub_trio import App, BufferClosed, Context, Streamer

from ..wsclient import TRANSPORT, open_raw_client

SCHEMA = """
scalar Opaque
type Query { hello: String }
type Item { n: Int!, note: String!, raw: Opaque }
type Subscription { items(count: Int!): Item! }
"""


def note(item: dict[str, Any], _info: Any) -> Any:
    """Even items need an await to resolve, odd ones do not."""
    if item["n"] % 2:
        return f"sync {item['n']}"

    async def later() -> str:
        await trio.lowlevel.checkpoint()
        return f"async {item['n']}"

    return later()


def make_app(emits: list[Any]) -> App:
    async def items(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        emits.append(emit)
        for n in range(args["count"]):
            emit({"n": n, "raw": None})  # all at once, no checkpoint between
        await trio.sleep_forever()

    return App(
        SCHEMA,
        resolvers={"Item": {"note": note}},
        streamers={"items": Streamer(items)},
    )


async def _subscribe(client: Any, op_id: str, query: str) -> None:
    await client.send({"id": op_id, "type": "subscribe", "payload": {"query": query}})


async def test_async_and_sync_field_resolvers_arrive_in_emit_order(start_server: Any) -> None:
    """Values whose execution needs an await go through the pump; the ones after
    them must wait their turn, never overtake."""
    server = await start_server(make_app([]))
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        await _subscribe(client, "1", "subscription { items(count: 10) { n note } }")
        got = [await client.receive() for _ in range(10)]
    notes = [m["payload"]["data"]["items"]["note"] for m in got]
    assert notes == [f"{'sync' if n % 2 else 'async'} {n}" for n in range(10)]
    assert {m["id"] for m in got} == {"1"}


async def test_a_value_that_cannot_be_encoded_is_an_error_for_that_subscription(
    start_server: Any,
) -> None:
    """Encoding fails inside ``emit``, called here by a publisher (this test) as
    a broker would: the publisher is not hurt (nothing raised at it), the
    client gets ``error`` for that operation, and the connection serves on."""
    emits: list[Any] = []
    server = await start_server(make_app(emits))
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        for op_id in ("bad", "good"):
            await _subscribe(client, op_id, "subscription { items(count: 0) { n raw } }")
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 2)
            while len(emits) < 2:
                await trio.testing.wait_all_tasks_blocked()
        emits[0]({"n": 0, "raw": object()})  # orjson cannot encode it
        message = await client.receive()
        assert (message["id"], message["type"]) == ("bad", "error")
        emits[1]({"n": 1, "raw": "fine"})
        message = await client.receive()
        assert message == {
            "id": "good",
            "type": "next",
            "payload": {"data": {"items": {"n": 1, "raw": "fine"}}},
        }


async def test_emit_after_the_subscription_ended_raises_buffer_closed(
    start_server: Any,
) -> None:
    """An ``emit`` kept past the end of its subscription refuses values, as a
    buffer would: nothing is executed or sent for a subscription that is gone."""
    emits: list[Any] = []
    server = await start_server(make_app(emits))
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        await _subscribe(client, "1", "subscription { items(count: 1) { n } }")
        await client.receive()
        await client.send({"id": "1", "type": "complete"})
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 0)
    with pytest.raises(BufferClosed):
        emits[0]({"n": 99, "raw": None})


def _frame(message: dict[str, Any]) -> bytes:
    """One masked text frame (a zero key leaves the payload as it is)."""
    payload = json.dumps(message).encode()
    assert len(payload) < 126
    return bytes((0x81, 0x80 | len(payload))) + b"\0\0\0\0" + payload


async def test_a_subscription_completed_before_it_began_does_no_work(start_server: Any) -> None:
    """``subscribe`` and ``complete`` in one read: the streamer never starts,
    nothing is sent for that id, the cleanup still runs once, and the
    connection serves the next subscription."""
    emits: list[Any] = []
    server = await start_server(make_app(emits))
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        query = "subscription { items(count: 1) { n } }"
        both = _frame({"id": "gone", "type": "subscribe", "payload": {"query": query}}) + _frame(
            {"id": "gone", "type": "complete"}
        )
        await client.ws._stream.send_all(both)  # one write, so one read on the server
        await _subscribe(client, "next", query)
        message = await client.receive()
        assert message == {"id": "next", "type": "next", "payload": {"data": {"items": {"n": 0}}}}
        assert len(emits) == 1  # only the second subscription's streamer ran
        assert (server.metrics.operations_started, server.metrics.cleanups_run) == (2, 1)
    with trio.fail_after(2):
        await server.metrics.wait_idle()
    assert server.metrics.cleanups_run == 2
