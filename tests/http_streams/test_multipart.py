"""Apollo's multipart subscriptions over real sockets (protocols §7, MP-01..09).

Raw httpx requests; the body is split into parts by a reader written from the
RFC 2046 layout (not by the server's code), so boundaries, part headers, the
heartbeat, the error part and the closing delimiter are all checked as bytes.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import Server
from meshsub_trio._wire._multipart import LocalProtocolError, MultipartMachine, wants_multipart

from .conftest import Tracker, all_cleaned_up
from .streams_app import make_stream_app

ACCEPT = 'multipart/mixed;subscriptionSpec="1.0", application/json'
#: What Apollo Client 4 sends for a subscription.
APOLLO_ACCEPT = (
    "multipart/mixed;boundary=graphql;subscriptionSpec=1.0,"
    "application/graphql-response+json,application/json;q=0.9"
)
CONTENT_TYPE = 'multipart/mixed; boundary="graphql"; subscriptionSpec="1.0"'
DELIMITER = b"\r\n--graphql"
PART_HEAD = b"\r\ncontent-type: application/json\r\n\r\n"


class PartReader:
    """Bytes in, complete parts out: a part is complete once its ending delimiter arrived."""

    def __init__(self) -> None:
        self.buffer = b""
        self.started = False
        self.closed = False

    def feed(self, data: bytes) -> list[Any]:
        assert not self.closed, f"bytes after the closing delimiter: {data!r}"
        self.buffer += data
        parts: list[Any] = []
        if not self.started:
            if len(self.buffer) < len(DELIMITER):
                return parts
            assert self.buffer.startswith(DELIMITER), self.buffer[:40]
            self.buffer = self.buffer[len(DELIMITER) :]
            self.started = True
        while True:
            if self.buffer.startswith(b"--"):
                assert self.buffer == b"--\r\n", self.buffer
                self.closed = True
                return parts
            end = self.buffer.find(DELIMITER)
            if end < 0:
                return parts
            part, self.buffer = self.buffer[:end], self.buffer[end + len(DELIMITER) :]
            assert part.startswith(PART_HEAD), part
            parts.append(json.loads(part[len(PART_HEAD) :]))


def url(server: Server, path: str = "/api") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


@pytest.fixture
async def mp_server(start_server: Any, tracker: Tracker) -> Server:
    return await start_server(app=make_stream_app(tracker))


def read_all(body: bytes) -> tuple[list[Any], PartReader]:
    reader = PartReader()
    parts = reader.feed(body)
    return parts, reader


async def test_subscription_exact_bytes(mp_server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url(mp_server),
            json={"query": "subscription { countdown(to: 1) }"},
            headers={"accept": ACCEPT},
        )
    assert response.status_code == 200
    assert response.headers["content-type"] == CONTENT_TYPE
    assert response.headers["cache-control"] == "no-cache, no-transform"
    assert response.content == (
        DELIMITER
        + PART_HEAD
        + b'{"payload":{"data":{"countdown":1}}}'
        + DELIMITER
        + PART_HEAD
        + b'{"payload":{"data":{"countdown":0}}}'
        + DELIMITER
        + b"--\r\n"
    )
    await all_cleaned_up(mp_server)
    assert tracker.cleanups == ["countdown"]


@pytest.mark.parametrize(
    "accept",
    [
        APOLLO_ACCEPT,
        "multipart/mixed; subscriptionSpec=1.0",
        'Multipart/Mixed ; subscriptionSpec = "1.0" ; q=0.5, application/json;q=0.9',
        "application/json, multipart/mixed;deferSpec=20220824;subscriptionSpec=1.0",
    ],
)
@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_accept_variants_and_methods(mp_server: Server, accept: str, method: str) -> None:
    body = {"query": "subscription { countdown(to: 2) }"}
    async with httpx.AsyncClient() as client:
        response = await client.request(
            method,
            url(mp_server, "/graphql"),
            json=body if method == "POST" else None,
            params=body if method == "GET" else None,
            headers={"accept": accept},
        )
    assert response.status_code == 200, response.text
    parts, reader = read_all(response.content)
    assert parts == [{"payload": {"data": {"countdown": n}}} for n in (2, 1, 0)]
    assert reader.closed


def test_wants_multipart() -> None:
    assert wants_multipart('multipart/mixed;subscriptionSpec="1.0"')
    assert wants_multipart("text/html, MULTIPART/MIXED;SUBSCRIPTIONSPEC=1.0;q=0.1")
    assert not wants_multipart("multipart/mixed;subscriptionSpec=1.0;q=0")
    assert not wants_multipart("multipart/mixed;deferSpec=20220824")
    assert not wants_multipart("multipart/mixed;subscriptionSpec=2.0")
    assert not wants_multipart("application/json")
    assert not wants_multipart(None)


def test_machine_states() -> None:
    machine = MultipartMachine()
    with pytest.raises(LocalProtocolError):
        machine.next("1", b"{}")
    assert machine.start() == DELIMITER
    with pytest.raises(LocalProtocolError):
        machine.start()
    assert machine.keepalive() == PART_HEAD + b"{}" + DELIMITER
    assert machine.complete("1") == b"--\r\n"
    assert machine.closed
    assert machine.next("1", b"{}") is None
    assert machine.error("1", [{"message": "late"}]) is None
    assert machine.keepalive() is None


async def test_queries_are_plain_json_unless_only_multipart_is_accepted(mp_server: Server) -> None:
    async with httpx.AsyncClient() as client:
        both = await client.post(
            url(mp_server), json={"query": "{ hello }"}, headers={"accept": ACCEPT}
        )
        assert both.status_code == 200
        assert both.headers["content-type"].startswith("application/json")
        assert both.json() == {"data": {"hello": "world"}}
        only = await client.post(
            url(mp_server),
            json={"query": "{ hello }"},
            headers={"accept": 'multipart/mixed;subscriptionSpec="1.0"'},
        )
        assert only.headers["content-type"] == CONTENT_TYPE
        parts, reader = read_all(only.content)
        assert parts == [{"payload": {"data": {"hello": "world"}}}] and reader.closed


async def test_request_errors_are_http_answers(mp_server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client:
        invalid = await client.post(
            url(mp_server),
            json={"query": "subscription { nope }"},
            headers={"accept": APOLLO_ACCEPT},
        )
        assert invalid.status_code == 400  # graphql-response+json was preferred
        assert "nope" in invalid.json()["errors"][0]["message"]
        bad_json = await client.post(
            url(mp_server),
            content=b"{nope",
            headers={"accept": ACCEPT, "content-type": "application/json"},
        )
        assert bad_json.status_code == 400
        # Neither streaming format accepted: the existing answers stay.
        plain = await client.post(
            url(mp_server), json={"query": "subscription { countdown(to: 1) }"}
        )
        assert plain.status_code == 400
        assert "multipart/mixed" in plain.json()["errors"][0]["message"]
        html = await client.post(
            url(mp_server),
            json={"query": "subscription { countdown(to: 1) }"},
            headers={"accept": "text/html, multipart/mixed;subscriptionSpec=1.0;q=0"},
        )
        assert html.status_code == 406
    assert tracker.cleanups == []
    assert mp_server.metrics.operations_started == 0


async def test_heartbeat_parts_while_idle(start_server: Any, tracker: Tracker) -> None:
    server = await start_server(app=make_stream_app(tracker), keepalive=0.05)
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST",
            url(server),
            json={"query": "subscription { silent }"},
            headers={"accept": ACCEPT},
        ) as response,
    ):
        reader = PartReader()
        heartbeats = 0
        with trio.fail_after(5):
            async for chunk in response.aiter_raw():
                for part in reader.feed(chunk):
                    assert part == {}
                    heartbeats += 1
                if heartbeats >= 3:
                    break
    await all_cleaned_up(server)
    assert tracker.cleanups == ["silent"]


async def test_failing_source_is_a_last_error_part(mp_server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            url(mp_server), json={"query": "subscription { failing }"}, headers={"accept": ACCEPT}
        )
    parts, reader = read_all(response.content)
    assert reader.closed
    assert parts[0] == {"payload": {"data": {"failing": 1}}}
    last = parts[-1]
    assert last["payload"] is None and last["errors"][0]["message"], last
    assert len(parts) == 2
    await all_cleaned_up(mp_server)
    assert tracker.cleanups == ["failing"]


async def test_disconnect_runs_cleanup_once(mp_server: Server, tracker: Tracker) -> None:
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST",
            url(mp_server),
            json={"query": "subscription { ticks }"},
            headers={"accept": ACCEPT},
        ) as response,
    ):
        reader = PartReader()
        seen: list[Any] = []
        async for chunk in response.aiter_raw():
            seen += reader.feed(chunk)
            if len(seen) >= 3:
                break
        assert seen[:3] == [{"payload": {"data": {"ticks": n}}} for n in range(3)]
        assert mp_server.metrics.active_by_protocol("multipart").value == 1
    await all_cleaned_up(mp_server)
    assert mp_server.metrics.operations_started == 1
    assert tracker.cleanups == ["ticks"]
    assert mp_server.metrics.active_by_protocol("multipart").value == 0


async def test_slow_reader_is_dropped(start_server: Any, tracker: Tracker) -> None:
    server = await start_server(app=make_stream_app(tracker), write_timeout=0.3, outbox_size=8)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    body = json.dumps({"query": "subscription { blobs(size: 65536) }"}).encode()
    head = (
        f"POST /api HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Accept: {ACCEPT}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)
    with trio.fail_after(1):
        await server.metrics.wait_for(lambda m: m.operations_started == 1)
    await all_cleaned_up(server, timeout=10)  # never read: the write deadline drops it
    assert tracker.cleanups == ["blobs"]
    await stream.aclose()


async def test_shutdown_ends_with_an_error_part_and_the_close(
    mp_server: Server, tracker: Tracker
) -> None:
    """MP-05/06: a client takes a body without ``--graphql--`` as a network failure,
    so shutdown says why in a last error part, then closes the body properly."""
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST",
            url(mp_server),
            json={"query": "subscription { ticks }"},
            headers={"accept": ACCEPT},
        ) as response,
    ):
        reader = PartReader()
        parts: list[Any] = []
        with trio.fail_after(5):
            async for chunk in response.aiter_raw():
                parts += reader.feed(chunk)
                if len(parts) >= 2 and not mp_server.state.shutting_down:
                    mp_server.shutdown()
    assert reader.closed, reader.buffer
    assert reader.buffer == b"--\r\n"
    *events, last = parts
    assert len(events) >= 2
    assert events == [{"payload": {"data": {"ticks": n}}} for n in range(len(events))]
    assert last == {"payload": None, "errors": [{"message": "Server shutting down"}]}
    await all_cleaned_up(mp_server)
    assert tracker.cleanups == ["ticks"]


async def test_shutdown_of_an_idle_stream_closes_it_too(
    mp_server: Server, tracker: Tracker
) -> None:
    async with (
        httpx.AsyncClient() as client,
        client.stream(
            "POST",
            url(mp_server),
            json={"query": "subscription { silent }"},
            headers={"accept": ACCEPT},
        ) as response,
    ):
        with trio.fail_after(5):
            await mp_server.metrics.wait_for(lambda m: m.live_operations == 1)
            body = b""
            async for chunk in response.aiter_raw():
                body += chunk
                if not mp_server.state.shutting_down:
                    mp_server.shutdown()
    parts, reader = read_all(body)
    assert reader.closed
    assert parts == [{"payload": None, "errors": [{"message": "Server shutting down"}]}]
    await all_cleaned_up(mp_server)
    assert tracker.cleanups == ["silent"]
