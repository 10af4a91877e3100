"""GraphQL long-poll: the server's poll sink, and the client's ``transport="poll"`` over it.

Real Meshery servers over real sockets. Every wait is on data (an answer,
a payload, a notice), bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio._transports._poll import POLL_MEDIA_TYPE, parse_wait, wants_poll
from meshsub_trio.client import TransportChanged, open_client
from meshsub_trio.client._command import add_subscribe_command, subscribe_command
from meshsub_trio.testing import ResponseHolder, open_buffering_proxy, open_fault_proxy

from ._kit import EVENTS, GRAPHQL, SOON, Notices, Reader, assert_exactly, fast, ws_url
from .conftest import Meshery
from .test_sse import all_cleaned_up, publish

POLL_HEADERS = {"accept": POLL_MEDIA_TYPE}
STATE = (
    'subscription { subscribeK8sContext(selector: {page: "0", pageSize: "10"}) { total_count } }'
)


def http(meshery: Meshery) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{meshery.server.port}", timeout=SOON)


async def poll(
    client: httpx.AsyncClient, query: str, wait: float, **extensions: Any
) -> dict[str, Any]:
    response = await client.post(
        f"{GRAPHQL}?wait={wait:g}",
        json={"query": query, "extensions": extensions},
        headers=POLL_HEADERS,
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def cleaned_up(meshery: Meshery, count: int) -> None:
    metrics = meshery.server.metrics
    with trio.fail_after(SOON):
        await metrics.wait_for(
            lambda m: m.live_operations == 0 and m.cleanups_run == m.operations_started == count
        )


def test_accept_and_wait_parsing() -> None:
    assert wants_poll(f"text/html, {POLL_MEDIA_TYPE}; q=1")
    assert not wants_poll("application/json") and not wants_poll(None)
    assert parse_wait(b"") == 25.0 and parse_wait(b"wait=0.5") == 0.5
    for bad in (b"wait=61", b"wait=-1", b"wait=x"):
        with pytest.raises(ValueError):
            parse_wait(bad)


async def test_a_poll_answers_ready_events_at_once_then_resumes_by_cursor(
    meshery: Meshery,
) -> None:
    for n in range(3):
        meshery.publish(f"e{n}")
    async with http(meshery) as client:
        with trio.fail_after(SOON):
            first = await poll(client, EVENTS, 20, cursor="0")
        got = [p["data"]["subscribeEvents"]["description"] for p in first["payloads"]]
        assert got == ["e0", "e1", "e2"] and first["complete"] is False
        cursor = first["payloads"][-1]["extensions"]["cursor"]
        async with trio.open_nursery() as nursery:
            answers: list[dict[str, Any]] = []

            async def waiting() -> None:
                answers.append(await poll(client, EVENTS, 20, cursor=cursor))

            nursery.start_soon(waiting)
            # The poll waits for the next event, and answers as soon as it is published.
            await meshery.server.metrics.wait_for(lambda m: m.live_operations == 1)
            meshery.publish("e3")
        (second,) = answers
        assert [p["data"]["subscribeEvents"]["description"] for p in second["payloads"]] == ["e3"]
    await cleaned_up(meshery, 2)


async def test_an_empty_wait_answers_empty_and_cleans_up(meshery: Meshery) -> None:
    async with http(meshery) as client:
        began = trio.current_time()
        answer = await poll(client, EVENTS, 0.3)
        assert 0.3 <= trio.current_time() - began < 0.3 + SOON
        assert answer == {"payloads": [], "complete": False, "seen": None}
    await cleaned_up(meshery, 1)


async def test_state_answers_at_once_and_seen_waits_for_a_change(meshery: Meshery) -> None:
    async with http(meshery) as client:
        with trio.fail_after(SOON):
            first = await poll(client, STATE, 20)
        assert len(first["payloads"]) == 1 and first["seen"]
        # The same state again: skipped, so the poll waits (here: its whole 0.3 s).
        again = await poll(client, STATE, 0.3, seen=first["seen"])
        assert again["payloads"] == []
    await cleaned_up(meshery, 2)


async def test_request_errors_are_an_answer_and_bad_requests_are_http_errors(
    meshery: Meshery,
) -> None:
    async with http(meshery) as client:
        invalid = await poll(client, "subscription { nope }", 5)
        assert invalid["complete"] is True and "data" not in invalid["payloads"][0]
        lost = await poll(client, EVENTS, 5, cursor="not-a-cursor")
        assert lost["payloads"][0]["errors"][0]["extensions"]["code"] == "CURSOR_INVALID"
        query = await poll(client, "{ getAvailableNamespaces { namespace } }", 5)
        assert query == {
            "payloads": [{"data": {"getAvailableNamespaces": []}}],
            "complete": True,
            "seen": query["seen"],
        }
        too_long = await client.post(
            f"{GRAPHQL}?wait=99", json={"query": EVENTS}, headers=POLL_HEADERS
        )
        assert too_long.status_code == 400
        get = await client.get(GRAPHQL, params={"query": EVENTS}, headers=POLL_HEADERS)
        assert get.status_code == 405


async def test_a_client_that_leaves_mid_poll_ends_the_operation(meshery: Meshery) -> None:
    async with http(meshery) as client, trio.open_nursery() as nursery:
        nursery.start_soon(poll, client, EVENTS, 30)
        with trio.fail_after(SOON):
            await meshery.server.metrics.wait_for(lambda m: m.live_operations == 1)
        nursery.cancel_scope.cancel()  # closes the connection mid-request
    await cleaned_up(meshery, 1)


# ---- the buffering proxy's sans-IO part ----------------------------------------------------


def test_the_holder_holds_bodies_until_their_response_ends() -> None:
    holder = ResponseHolder(1024)
    head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"
    assert holder.feed(head + b"ab") == head  # the head at once, the body held
    assert holder.feed(b"cde" + head) == b"abcde" + head  # complete: out, with the next head
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
    holder = ResponseHolder(1024)
    assert holder.feed(chunked + b"3\r\n:\n\n\r\n") == chunked  # a keep-alive: held
    assert holder.feed(b"0\r\n") == b""
    assert holder.feed(b"\r\n") == b"3\r\n:\n\n\r\n0\r\n\r\n"
    assert holder.responses == 1


def test_the_holder_flushes_at_its_limit_and_tunnels_after_101() -> None:
    holder = ResponseHolder(4)
    head = b"HTTP/1.1 200 OK\r\n\r\n"  # until close
    assert holder.feed(head + b"abc") == head
    assert holder.feed(b"de") == b"abcde" and holder.flushes == 1
    assert holder.feed(b"f") == b"" and holder.eof() == b"f"
    switching = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n"
    holder = ResponseHolder(1024)
    assert holder.feed(switching + b"\x81\x00") == switching + b"\x81\x00"


# ---- the client's transport="poll" and the ladder down to it -------------------------------


async def test_poll_client_resumes_by_cursor_through_a_reset_and_cleans_up(
    meshery: Meshery,
) -> None:
    notices = Notices()
    expected = [f"q{n}" for n in range(30)]
    async with (
        open_fault_proxy("127.0.0.1", meshery.server.port) as proxy,
        open_client(
            ws_url(proxy.port), transport="poll", on_notice=notices, **fast(poll_wait=1.0)
        ) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, expected[:10])
        await reader.wait_count(10)
        assert client.subprotocol == "poll"
        proxy.reset()
        await notices.wait_lost(1)
        publish(meshery, expected[10:20])  # while no poll is out
        await notices.wait_connected(2)
        publish(meshery, expected[20:])
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        nursery.cancel_scope.cancel()
    await all_cleaned_up(meshery)


async def test_poll_client_gets_a_state_once_and_does_not_spin(meshery: Meshery) -> None:
    metrics = meshery.server.metrics
    async with (
        open_client(meshery.url, transport="poll", **fast(poll_wait=0.2)) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, STATE)
        await reader.wait_count(1)
        # Several more polls, each held its whole wait: the snapshot was not resent.
        with trio.fail_after(SOON):
            await metrics.wait_for(lambda m: m.cleanups_run >= 4)
        assert len(reader.payloads) == 1 and metrics.operations_started <= 5
        nursery.cancel_scope.cancel()


async def test_auto_climbs_down_to_poll_behind_a_buffering_proxy(meshery: Meshery) -> None:
    await _ladder(meshery, climb=False)


async def test_auto_climbs_back_up_to_websocket_when_the_proxy_is_gone(meshery: Meshery) -> None:
    await _ladder(meshery, climb=True)


async def _ladder(meshery: Meshery, *, climb: bool) -> None:
    notices = Notices()
    expected = [f"b{n}" for n in range(20)]
    # Fast heartbeats on the server: its ':' keep-alives would pass a transparent path.
    options = fast(poll_wait=1.0, websocket_retry_after=1.0 if climb else 300.0)
    async with (
        open_buffering_proxy("127.0.0.1", meshery.server.port) as buffering,
        open_client(ws_url(buffering.port), on_notice=notices, **options) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, expected[:10])
        await reader.wait_count(10, timeout=SOON)
        changes = [n.transport for _, n in notices.of(TransportChanged)]
        assert changes == ["sse", "poll"], changes
        assert client.subprotocol == "poll" and buffering.held > 0
        assert "a proxy holds it" in notices.of(TransportChanged)[1][1].reason
        assert notices.lost() == []  # climbing down is the client's decision, not a loss
        if climb:
            buffering.buffering, buffering.websockets = False, True  # the middlebox is gone
            await notices.wait(lambda n: len(n.of(TransportChanged)) >= 3)
            up = notices.of(TransportChanged)[2][1]
            assert up.transport == "graphql-transport-ws" and "works again" in up.reason
        publish(meshery, expected[10:])
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        if climb:
            assert client.subprotocol == "graphql-transport-ws"
        nursery.cancel_scope.cancel()


async def test_the_command_speaks_poll(meshery: Meshery) -> None:
    publish(meshery, ["k0", "k1", "k2"])
    parser = argparse.ArgumentParser(prog="meshsub-trio")
    add_subscribe_command(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["subscribe", EVENTS, "--url", meshery.url, "--transport", "poll", "--cursor", "1",
         "--count", "2", "--poll-wait", "5"]
    )  # fmt: skip
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(SOON):
        code = await subscribe_command(args, out, err)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert code == 0 and err.getvalue() == ""
    assert [line["data"]["subscribeEvents"]["description"] for line in lines] == ["k1", "k2"]
    assert [line["extensions"]["cursor"] for line in lines] == ["2", "3"]
    await all_cleaned_up(meshery)
