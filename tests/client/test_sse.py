"""The client over SSE, and ``transport="auto"`` climbing down to it and back up.

Real Meshery servers over real sockets; the middleboxes are the fault kit's
:class:`FaultProxy` (partition, reset) and the tiny HTTP proxy in
``_proxy.py`` (strips ``Upgrade``, or buffers response bodies). The server
sends a ``:`` keep-alive every 0.1 s, well inside the client's silence bound
of ``PING + PONG`` (0.4 s).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from typing import Any

import pytest
import trio

from meshsub_trio.client import (
    Connected,
    CursorLost,
    Disconnect,
    OperationError,
    TransportChanged,
    describe,
    open_client,
)
from meshsub_trio.client._command import add_subscribe_command, subscribe_command
from meshsub_trio.client._ladder import falls_back
from meshsub_trio.client._sse import http_url, is_request_error
from meshsub_trio.testing import open_fault_proxy

from ._kit import EVENTS, PING, PONG, SLACK, SOON, Notices, Reader, assert_exactly, fast, ws_url
from ._proxy import open_http_proxy, strip_upgrade
from .conftest import Meshery

#: The server's keep-alive on HTTP streams (and WebSocket pings), well inside PING + PONG.
KEEPALIVE = 0.1
#: A silent SSE stream (no bytes at all) is dead after this long.
SILENCE_BOUND = PING + PONG


async def sse_meshery(make_meshery: Callable[..., Any]) -> Meshery:
    meshery: Meshery = await make_meshery(config={"keepalive": KEEPALIVE})
    return meshery


async def all_cleaned_up(meshery: Meshery) -> None:
    """Every operation the server started has run its cleanup, and none is live."""
    metrics = meshery.server.metrics
    with trio.fail_after(SOON):
        await metrics.wait_for(
            lambda m: m.live_operations == 0 and m.cleanups_run == m.operations_started
        )
    assert metrics.operations_started > 0


def publish(meshery: Meshery, descriptions: list[str]) -> None:
    for description in descriptions:
        meshery.publish(description)


# ---- sans-IO pieces ----------------------------------------------------------------------


def test_urls_map_to_http_and_bad_ones_are_refused() -> None:
    assert http_url("ws://h:1/api?x=1") == "http://h:1/api?x=1"
    assert http_url("wss://h/api") == "https://h/api"
    assert http_url("https://h") == "https://h/"
    with pytest.raises(ValueError):
        http_url("ftp://h/api")


def test_a_next_without_data_is_the_operations_error() -> None:
    assert is_request_error({"errors": [{"message": "Syntax Error"}]})
    assert not is_request_error({"data": None, "errors": [{"message": "field failed"}]})
    assert not is_request_error({"data": {"x": 1}})


@pytest.mark.parametrize(
    ("status", "acknowledged", "expected"),
    [(400, False, True), (404, False, True), (426, False, True), (200, False, True),
     (501, False, True), (401, False, False), (403, False, False), (429, False, False),
     (503, False, False), (None, False, False), (400, True, False)],
)  # fmt: skip
def test_which_refused_upgrades_climb_down(
    status: int | None, acknowledged: bool, expected: bool
) -> None:
    assert falls_back(Disconnect("u", status=status, acknowledged=acknowledged)) is expected


def test_strip_upgrade_keeps_everything_else() -> None:
    head = b"GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nA: b"
    assert strip_upgrade(head) == b"GET /x HTTP/1.1\r\nHost: h\r\nA: b"


# ---- transport="sse" --------------------------------------------------------------------


async def test_sse_streams_with_cursors_resumes_after_a_reset_and_cleans_up(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    notices = Notices()
    expected = [f"s{n}" for n in range(30)]
    async with (
        open_fault_proxy("127.0.0.1", meshery.server.port) as proxy,
        open_client(ws_url(proxy.port), transport="sse", on_notice=notices, **fast()) as client,
    ):
        async with trio.open_nursery() as nursery:
            reader = Reader()
            await reader.start(nursery, client, EVENTS, cursor="0")
            publish(meshery, expected[:10])
            await reader.wait_count(10)
            assert client.subprotocol == "sse"
            assert reader.cursors() == list(range(1, 11))  # the server sends cursors on SSE
            proxy.reset()
            await notices.wait_lost(1, timeout=SLACK)
            publish(meshery, expected[10:20])  # while the stream is down
            await notices.wait_connected(2)
            publish(meshery, expected[20:])
            await reader.wait_count(len(expected))
            assert_exactly(reader, expected)
            assert reader.stream is not None and reader.stream.resumes == 1
            nursery.cancel_scope.cancel()
        # Leaving the block closed the HTTP stream: the server ran its cleanup.
        await all_cleaned_up(meshery)


async def test_sse_partition_is_detected_within_the_bound_and_resumed_exactly(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    notices = Notices()
    expected = [f"p{n}" for n in range(30)]
    async with (
        open_fault_proxy("127.0.0.1", meshery.server.port) as proxy,
        open_client(ws_url(proxy.port), transport="sse", on_notice=notices, **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, expected[:10])
        await reader.wait_count(10)
        cut = trio.current_time()
        proxy.partition()
        lost_at = await notices.wait_lost(1, timeout=SILENCE_BOUND + SLACK)
        assert lost_at - cut <= SILENCE_BOUND + SLACK
        ((_, lost),) = notices.lost()
        assert lost.disconnect.code == 1006 and "nothing heard" in lost.disconnect.reason
        publish(meshery, expected[10:20])  # while the client is cut off
        proxy.heal()
        publish(meshery, expected[20:])
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        assert reader.stream is not None and reader.stream.resumes >= 1
        nursery.cancel_scope.cancel()


async def test_a_buffering_proxy_makes_the_stream_silent_and_the_heartbeat_notices(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    notices = Notices()
    async with (
        open_http_proxy(meshery.server.port, buffer=True) as proxy,
        open_client(ws_url(proxy.port), transport="sse", on_notice=notices, **fast()) as client,
        client.subscribe(EVENTS),
    ):
        began = await notices.wait_connected(1)
        lost_at = await notices.wait_lost(1, timeout=SILENCE_BOUND + SLACK)
        assert lost_at - began <= SILENCE_BOUND + SLACK
        assert proxy.held > 0  # the server did talk: the proxy kept it
        ((_, lost),) = notices.lost()
        assert "nothing heard within 0.4 s" in lost.disconnect.reason


async def test_request_level_errors_are_typed_and_queries_work(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    async with open_client(meshery.url, transport="sse", **fast()) as client:
        with trio.fail_after(SOON):
            assert await client.execute("{ getAvailableNamespaces { namespace } }") == {
                "getAvailableNamespaces": []
            }
            published = await client.execute(
                'mutation { publishEvent(input: {severity: informational, description: "m"}) '
                "{ description } }"
            )
            assert published == {"publishEvent": {"description": "m"}}
            with pytest.raises(OperationError) as invalid:
                async with client.subscribe("subscription { noSuchField }") as stream:
                    await stream.__anext__()
            assert "noSuchField" in invalid.value.errors[0]["message"]
            with pytest.raises(CursorLost) as lost:
                async with client.subscribe(EVENTS, cursor="not-a-cursor") as stream:
                    await stream.__anext__()
            assert lost.value.code == "CURSOR_INVALID"
    await all_cleaned_up(meshery)


# ---- transport="auto" ---------------------------------------------------------------------


async def test_auto_falls_back_to_sse_behind_a_proxy_that_strips_upgrade(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    notices = Notices()
    expected = [f"a{n}" for n in range(20)]
    async with (
        open_http_proxy(meshery.server.port, strip=True) as stripper,
        open_fault_proxy("127.0.0.1", stripper.port) as faults,
        open_client(ws_url(faults.port), on_notice=notices, **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        await notices.wait_connected(1)
        assert client.subprotocol == "sse" and stripper.stripped == 1
        ((_, changed),) = notices.of(TransportChanged)
        assert changed.transport == "sse" and "HTTP 400" in changed.reason
        assert "now over sse" in describe(changed)
        publish(meshery, expected[:10])
        await reader.wait_count(10)
        # A reconnect within websocket_retry_after goes straight to SSE: no new upgrade.
        faults.reset()
        await notices.wait_connected(2)
        publish(meshery, expected[10:])
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        assert stripper.stripped == 1 and not any("GET" in r for r in stripper.requests[1:])
        nursery.cancel_scope.cancel()


async def test_auto_climbs_back_up_to_websocket_on_a_later_reconnect(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    notices = Notices()
    expected = [f"c{n}" for n in range(20)]
    options = fast(websocket_retry_after=0.0)  # every reconnect tries WebSocket first
    async with (
        open_http_proxy(meshery.server.port, strip=True) as stripper,
        open_fault_proxy("127.0.0.1", stripper.port) as faults,
        open_client(ws_url(faults.port), on_notice=notices, **options) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, expected[:10])
        await reader.wait_count(10)
        assert client.subprotocol == "sse"
        stripper.strip = False  # the middlebox is gone
        faults.reset()
        await notices.wait(lambda n: len(n.of(TransportChanged)) >= 2)
        await notices.wait_connected(2)
        publish(meshery, expected[10:])
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        up = notices.of(TransportChanged)[1][1]
        assert up.transport == "graphql-transport-ws" and "works again" in up.reason
        assert notices.of(Connected)[1][1].subprotocol == "graphql-transport-ws"
        assert client.subprotocol == "graphql-transport-ws"
        nursery.cancel_scope.cancel()


async def test_leaving_a_subscription_closes_its_stream_while_the_client_lives_on(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    metrics = meshery.server.metrics
    async with (
        open_client(meshery.url, transport="sse", **fast()) as client,
        client.subscribe(EVENTS, cursor="0") as kept,
    ):
        async with client.subscribe(EVENTS, cursor="0") as left:
            publish(meshery, ["x"])
            with trio.fail_after(SOON):
                await left.__anext__()
                await kept.__anext__()
        # The other stream keeps the link: only the left one's HTTP stream closed.
        with trio.fail_after(SOON):
            await metrics.wait_for(lambda m: m.cleanups_run == 1)
        assert metrics.operations_started == 2 and metrics.live_operations == 1
        publish(meshery, ["y"])
        with trio.fail_after(SOON):
            assert (await kept.__anext__())["data"]["subscribeEvents"]["description"] == "y"
    await all_cleaned_up(meshery)


async def test_the_command_speaks_sse(make_meshery: Callable[..., Any]) -> None:
    meshery = await sse_meshery(make_meshery)
    publish(meshery, ["k0", "k1", "k2"])
    parser = argparse.ArgumentParser(prog="meshsub-trio")
    add_subscribe_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["subscribe", EVENTS, "--url", meshery.url, "--transport", "sse", "--cursor", "1",
         "--count", "2"]
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(SOON):
        code = await subscribe_command(args, out, err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and err.getvalue() == ""
    assert [line["data"]["subscribeEvents"]["description"] for line in lines] == ["k1", "k2"]
    assert [line["extensions"]["cursor"] for line in lines] == ["2", "3"]
    await all_cleaned_up(meshery)


async def test_the_command_says_on_stderr_when_auto_climbs_down(
    make_meshery: Callable[..., Any],
) -> None:
    meshery = await sse_meshery(make_meshery)
    publish(meshery, ["d0", "d1"])
    parser = argparse.ArgumentParser(prog="meshsub-trio")
    add_subscribe_command(parser.add_subparsers(dest="command", required=True))
    async with open_http_proxy(meshery.server.port, strip=True) as stripper:
        args = parser.parse_args(
            ["subscribe", EVENTS, "--url", ws_url(stripper.port), "--cursor", "0", "--count", "2"]
        )
        out, err = io.StringIO(), io.StringIO()
        with trio.fail_after(SOON):
            code = await subscribe_command(args, out, err)
    assert code == 0 and len(out.getvalue().splitlines()) == 2
    assert "now over sse (the WebSocket upgrade was answered HTTP 400)" in err.getvalue()
