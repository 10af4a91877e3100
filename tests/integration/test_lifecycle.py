"""The structured-concurrency promise, over real sockets.

Every way an operation can end (client complete, source completion, source
error, connection loss, dead peer, stalled writes, server shutdown) runs its
cleanup exactly once, and the server's counters return to zero.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from typing import Any

import httpx
import pytest
import trio
import trio.testing
from graphql import GraphQLError

from meshsub_trio import App, Config, Context, serve, shielded_cleanup
from meshsub_trio.examples.countdown import app as countdown_app

from ..rawws import masked_frame, open_raw_websocket
from ..wsclient import LEGACY, TRANSPORT, open_raw_client

SCHEMA = """
type Query { hello: String }
type Subscription {
  forever(tag: String!): Int!
  finite(tag: String!, n: Int!): Int!
  failing(tag: String!): Int!
  slowCleanup(tag: String!): Int!
}
"""


class Tracker:
    """Records which operations started and which cleanups ran."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.cleaned: Counter[str] = Counter()
        self.slow_cleanup_done: list[str] = []


def tracking_app(tracker: Tracker) -> App:
    async def forever(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        tracker.started.append(args["tag"])
        try:
            emit(0)
            await trio.sleep_forever()
        finally:
            tracker.cleaned[args["tag"]] += 1

    async def finite(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        tracker.started.append(args["tag"])
        try:
            for n in range(args["n"]):
                emit(n)
                await trio.sleep(0)
        finally:
            tracker.cleaned[args["tag"]] += 1

    async def failing(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        tracker.started.append(args["tag"])
        try:
            emit(1)
            await trio.sleep(0)
            raise GraphQLError("source exploded")
        finally:
            tracker.cleaned[args["tag"]] += 1

    async def slow_cleanup(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        tracker.started.append(args["tag"])
        try:
            emit(0)
            await trio.sleep_forever()
        finally:
            with shielded_cleanup(2.0):
                await trio.sleep(0.05)  # e.g. releasing a remote resource
                tracker.slow_cleanup_done.append(args["tag"])
            tracker.cleaned[args["tag"]] += 1

    return App(
        SCHEMA,
        streamers={
            "forever": forever,
            "finite": finite,
            "failing": failing,
            "slowCleanup": slow_cleanup,
        },
    )


def sub(op_id: str, query: str, protocol: str = TRANSPORT) -> dict[str, Any]:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    return {"id": op_id, "type": kind, "payload": {"query": query}}


async def first_result(client: Any, protocol: str = TRANSPORT) -> dict[str, Any]:
    """The first ``next``/``data`` message (keep-alives skipped)."""
    return (await client.receive_until("next" if protocol == TRANSPORT else "data"))[-1]


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
async def tracked(start_server: Any, tracker: Tracker) -> Any:
    return await start_server(tracking_app(tracker))


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_client_stop_runs_cleanup_once(tracked: Any, tracker: Tracker, protocol: str) -> None:
    async with open_raw_client(tracked.port, subprotocols=[protocol]) as client:
        await client.init()
        await client.send(sub("1", 'subscription { forever(tag: "a") }', protocol))
        assert (await first_result(client, protocol))["payload"] == {"data": {"forever": 0}}
        await client.send({"id": "1", "type": "complete" if protocol == TRANSPORT else "stop"})
        with trio.fail_after(2):
            await tracked.metrics.wait_for(lambda m: m.cleanups_run == 1)
        assert tracker.cleaned == {"a": 1}
        if protocol == LEGACY:
            assert await client.receive() == {"id": "1", "type": "complete"}
        await client.expect_silence(0.1)


async def test_source_completion_runs_cleanup_once(tracked: Any, tracker: Tracker) -> None:
    async with open_raw_client(tracked.port, subprotocols=[TRANSPORT]) as client:
        await client.init()
        await client.send(sub("1", 'subscription { finite(tag: "b", n: 3) }'))
        messages = await client.receive_until("complete")
        assert [m["payload"]["data"]["finite"] for m in messages[:-1]] == [0, 1, 2]
    with trio.fail_after(2):
        await tracked.metrics.wait_idle()
    assert tracker.cleaned == {"b": 1}


async def test_source_error_sends_error_and_runs_cleanup_once(
    tracked: Any, tracker: Tracker
) -> None:
    async with open_raw_client(tracked.port, subprotocols=[TRANSPORT]) as client:
        await client.init()
        await client.send(sub("1", 'subscription { failing(tag: "c") }'))
        await client.send(sub("2", 'subscription { forever(tag: "sibling") }'))
        messages = await client.receive_until("error")
        assert messages[-1] == {
            "id": "1",
            "type": "error",
            "payload": [{"message": "source exploded"}],
        }
        await client.send({"type": "ping"})
        # The sibling operation and the socket live on.
        assert (await client.receive_until("pong"))[-1] == {"type": "pong"}
        with trio.fail_after(2):
            await tracked.metrics.wait_for(lambda m: m.cleanups_run == 1)
        assert tracker.cleaned == {"c": 1}
        assert tracked.metrics.live_operations == 1


async def test_connection_loss_runs_every_cleanup_once(tracked: Any, tracker: Tracker) -> None:
    raw = await open_raw_websocket(tracked.port)
    assert await raw.init() == {"type": "connection_ack"}
    for n in range(5):
        await raw.send_json(sub(str(n), f'subscription {{ forever(tag: "{n}") }}'))
    with trio.fail_after(2):
        await tracked.metrics.wait_for(lambda m: m.live_operations == 5)
    await raw.aclose()  # no close frame: the TCP connection just goes
    with trio.fail_after(2):
        await tracked.metrics.wait_idle()
    assert tracker.cleaned == {str(n): 1 for n in range(5)}
    assert tracked.metrics.cleanups_run == 5


async def test_cleanup_may_await_inside_shielded_cleanup(tracked: Any, tracker: Tracker) -> None:
    async with open_raw_client(tracked.port, subprotocols=[TRANSPORT]) as client:
        await client.init()
        await client.send(sub("1", 'subscription { slowCleanup(tag: "d") }'))
        await client.receive()
        await client.send({"id": "1", "type": "complete"})
        with trio.fail_after(2):
            await tracked.metrics.wait_for(lambda m: m.cleanups_run == 1)
    assert tracker.slow_cleanup_done == ["d"]


async def test_server_shutdown_closes_1001_and_runs_every_cleanup(tracker: Tracker) -> None:
    config = Config(port=0, keepalive=0, close_timeout=1.0)
    codes: list[int] = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, tracking_app(tracker), config)

        async def client(tag: str, protocol: str, ready: trio.Event) -> None:
            async with open_raw_client(server.port, subprotocols=[protocol]) as ws:
                await ws.init()
                await ws.send(sub("1", f'subscription {{ slowCleanup(tag: "{tag}") }}', protocol))
                await first_result(ws, protocol)
                ready.set()
                codes.append((await ws.expect_close())[0])

        ready = [trio.Event(), trio.Event()]
        nursery.start_soon(client, "t", TRANSPORT, ready[0])
        nursery.start_soon(client, "l", LEGACY, ready[1])
        for event in ready:
            await event.wait()
        server.shutdown()
    assert codes == [1001, 1001]
    assert tracker.cleaned == {"t": 1, "l": 1}
    assert sorted(tracker.slow_cleanup_done) == ["l", "t"]
    assert server.metrics.live_connections == 0 and server.metrics.live_operations == 0


async def test_a_server_cancelled_from_outside_runs_every_cleanup(tracker: Tracker) -> None:
    """Cancelling the scope around ``serve`` (an embedding app's shutdown) is a
    clean exit too: no error escapes, every cleanup runs, the gauges return to 0."""
    config = Config(port=0, keepalive=0, close_timeout=1.0)
    with trio.CancelScope() as outside:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, tracking_app(tracker), config)
            idle = await open_raw_websocket(server.port)
            await idle.init()
            ws = await open_raw_websocket(server.port)
            await ws.init()
            await ws.send_json(sub("1", 'subscription { slowCleanup(tag: "x") }'))
            with trio.fail_after(5):
                await server.metrics.wait_for(lambda m: m.live_operations == 1)
            outside.cancel()
    assert outside.cancelled_caught
    assert tracker.cleaned == {"x": 1}
    assert server.metrics.live_connections == 0 and server.metrics.live_operations == 0
    await ws.aclose()
    await idle.aclose()


async def test_shutdown_returns_in_time_with_a_frozen_client(tracker: Tracker) -> None:
    """A client that reads nothing cannot hold shutdown past close_timeout + grace."""
    config = Config(port=0, keepalive=0, close_timeout=0.5, write_timeout=30, write_buffer_size=4096)
    with trio.fail_after(config.close_timeout + 2.0):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(serve, countdown_app, config)
            frozen = await open_raw_websocket(server.port, receive_buffer=4096)
            await frozen.init()
            await frozen.send_json(sub("1", "subscription { ticks(everyMs: 0) }"))
            await frozen.send_json(sub("2", "subscription { ticks(everyMs: 0) }"))
            # Wait until the server's writes to this socket are stuck.
            with trio.fail_after(5):
                await server.metrics.wait_for(lambda m: m.live_operations == 2)
                while server.state.connections and not any(
                    len(c.delivery) >= config.outbox_size
                    for c in server.state.connections
                ):
                    await trio.testing.wait_all_tasks_blocked()
            server.shutdown()
    assert server.metrics.live_operations == 0
    await frozen.aclose()


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_silent_peer_is_dropped_within_keepalive_bound(
    start_server: Any, protocol: str
) -> None:
    server = await start_server(keepalive=0.2, pong_timeout=0.2)
    bound = server.config.dead_peer_bound
    async with (
        open_raw_client(server.port, subprotocols=[protocol]) as healthy,
        trio.open_nursery() as nursery,
    ):
        await healthy.init()
        await healthy.send(sub("h", "subscription { ticks(everyMs: 20) }", protocol))
        received: list[dict[str, Any]] = []

        async def keep_reading() -> None:
            # A healthy client reads: its library answers pings only while it does.
            while True:
                received.append(await healthy.receive())

        nursery.start_soon(keep_reading)
        silent = await open_raw_websocket(server.port, subprotocol=protocol)
        await silent.init()
        await silent.send_json(sub("s", "subscription { ticks(everyMs: 20) }", protocol))
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 2)
        started = trio.current_time()
        with trio.fail_after(bound + 1.0):
            await server.metrics.wait_for(lambda m: m.live_connections == 1)
        assert trio.current_time() - started <= bound + 0.5
        assert server.metrics.live_operations == 1
        # The healthy client keeps streaming for twice the bound after that.
        seen = len(received)
        with trio.move_on_after(2 * bound):
            await server.metrics.wait_for(lambda m: m.live_connections == 0)
        assert server.metrics.live_connections == 1
        assert len(received) > seen
        nursery.cancel_scope.cancel()
        await silent.aclose()


async def test_stalled_writer_is_dropped_without_stalling_others(start_server: Any) -> None:
    server = await start_server(write_timeout=0.3, outbox_size=8)
    stalled = await open_raw_websocket(server.port, receive_buffer=4096)
    await stalled.init()
    await stalled.send_json(sub("1", "subscription { ticks(everyMs: 0) }"))
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as other:
        await other.init()
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_connections == 1)
        await other.send(sub("1", "subscription { countdown(to: 5) }"))
        messages = await other.receive_until("complete")
        assert len(messages) == 7
    text = server.metrics.render().decode()
    assert 'meshsub_closes_total{code="1008"} 1.0' in text
    await stalled.aclose()


CHILD = textwrap.dedent(
    """
    import json, sys, trio
    from trio_websocket import open_websocket

    async def main(port):
        async with open_websocket("127.0.0.1", port, "/ws", use_ssl=False,
                                  subprotocols=["graphql-transport-ws"]) as ws:
            await ws.send_message(json.dumps({"type": "connection_init"}))
            await ws.get_message()
            await ws.send_message(json.dumps({"id": "1", "type": "subscribe",
                "payload": {"query": "subscription { ticks(everyMs: 10) }"}}))
            await ws.get_message()
            print("subscribed", flush=True)
            await trio.sleep_forever()

    trio.run(main, int(sys.argv[1]))
    """
)


async def test_sigkilled_client_is_cleaned_up_within_keepalive_bound(start_server: Any) -> None:
    server = await start_server(keepalive=0.5)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", CHILD, str(server.port)], stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        with trio.fail_after(10):
            line = await process.stdout.receive_some(64)
        assert line.startswith(b"subscribed")
        assert server.metrics.live_operations == 1
        os.kill(process.pid, signal.SIGKILL)
        with trio.fail_after(server.config.dead_peer_bound + 0.5):
            await server.metrics.wait_idle()
    finally:
        process.kill()
        await process.wait()
        if process.stdout is not None:
            await process.stdout.aclose()
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{server.url}/metrics")).text
    assert "meshsub_connections 0.0" in text
    assert 'meshsub_active_operations{protocol="graphql-transport-ws"} 0.0' in text


async def test_a_close_frame_without_a_code_is_answered_with_1000(start_server: Any) -> None:
    """1005 means "no status received" and must never be sent back on the wire."""
    server = await start_server()
    raw = await open_raw_websocket(server.port)
    try:
        await raw.stream.send_all(masked_frame(b"", opcode=0x8))
        with trio.fail_after(2):
            head = await raw._read_exactly(2)
            payload = await raw._read_exactly(head[1] & 0x7F)
        assert head[0] & 0x0F == 0x8
        assert int.from_bytes(payload[:2], "big") == 1000
    finally:
        await raw.aclose()
