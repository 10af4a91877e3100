"""graphql-sse distinct connections mode over real sockets (protocols §3, §6).

Raw httpx streams, parsed by the server's own sans-IO parser; the lifecycle
tests count cleanups on the server's metrics (cleanups_run == operations_started)
and in the streamers' own ``finally``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from meshsub_trio import Server
from meshsub_trio._wire._sse import SseEvent, SseParser

from .conftest import EVENT_STREAM, Tracker, all_cleaned_up

PATHS = ("/api", "/graphql")


def url(server: Server, path: str = "/api") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def read_stream(response: httpx.Response) -> tuple[list[SseEvent], SseParser]:
    parser = SseParser()
    events: list[SseEvent] = []
    async for chunk in response.aiter_raw():
        events += parser.receive_data(chunk)
    return events, parser


def payloads(events: list[SseEvent]) -> list[Any]:
    assert [e.event for e in events[:-1]] == ["next"] * (len(events) - 1)
    assert events[-1] == SseEvent("", "complete")
    return [json.loads(e.data) for e in events[:-1]]


async def test_subscription_over_post_and_get_on_both_paths(sse_server: Server) -> None:
    query = "subscription { countdown(to: 2) }"
    async with httpx.AsyncClient() as client:
        for path in PATHS:
            for method in ("POST", "GET"):
                body = {"query": query}
                request = client.build_request(
                    method,
                    url(sse_server, path),
                    headers=EVENT_STREAM,
                    json=body if method == "POST" else None,
                    params=body if method == "GET" else None,
                )
                response = await client.send(request, stream=True)
                try:
                    assert response.status_code == 200
                    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
                    assert response.headers["cache-control"] == "no-cache, no-transform"
                    events, parser = await read_stream(response)
                finally:
                    await response.aclose()
                assert payloads(events) == [{"data": {"countdown": n}} for n in (2, 1, 0)]
                assert parser.comments == 1  # the first chunk, flushing the headers
                assert parser.last_event_id is None  # SSE-04: no ids
    await all_cleaned_up(sse_server)
    assert sse_server.metrics.operations_started == 4


async def test_exact_bytes_of_a_query(sse_server: Server) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(
            url(sse_server), params={"query": "{ hello }"}, headers=EVENT_STREAM
        )
    assert response.status_code == 200
    assert response.content == (
        b':\n\nevent: next\ndata: {"data":{"hello":"world"}}\n\nevent: complete\ndata:\n\n'
    )


async def test_request_level_errors_are_streamed(sse_server: Server) -> None:
    cases = {
        "{ notExists }": "Cannot query field 'notExists' on type 'Query'.",
        "{ hello ": "Syntax Error",
    }
    async with httpx.AsyncClient() as client:
        for query, message in cases.items():
            response = await client.post(
                url(sse_server), json={"query": query}, headers=EVENT_STREAM
            )
            assert response.status_code == 200
            events = SseParser().receive_data(response.content)
            [payload] = payloads(events)
            assert message in payload["errors"][0]["message"], payload
        response = await client.post(url(sse_server), json={}, headers=EVENT_STREAM)
        assert response.status_code == 200
        [payload] = payloads(SseParser().receive_data(response.content))
        assert payload == {"errors": [{"message": "Missing query"}]}


async def test_unreadable_requests_are_http_errors(sse_server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client:
        bad_json = await client.post(
            url(sse_server),
            content=b"{nope",
            headers={**EVENT_STREAM, "content-type": "application/json"},
        )
        assert bad_json.status_code == 400
        wrong_type = await client.post(
            url(sse_server), json={"query": "{ hello }", "variables": []}, headers=EVENT_STREAM
        )
        assert wrong_type.status_code == 400
        mutation_get = await client.get(
            url(sse_server), params={"query": "mutation { bump }"}, headers=EVENT_STREAM
        )
        assert mutation_get.status_code == 405
        assert mutation_get.headers["allow"] == "POST"
        assert tracker.bumps == 0
        mutation_post = await client.post(
            url(sse_server), json={"query": "mutation { bump }"}, headers=EVENT_STREAM
        )
        assert payloads(SseParser().receive_data(mutation_post.content)) == [
            {"data": {"bump": 1}}
        ]


async def test_accept_variants_and_plain_json_unchanged(sse_server: Server) -> None:
    async with httpx.AsyncClient() as client:
        for accept in ("Text/Event-Stream; charset=utf-8", "application/json, text/event-stream"):
            response = await client.get(
                url(sse_server), params={"query": "{ hello }"}, headers={"accept": accept}
            )
            assert response.headers["content-type"].startswith("text/event-stream")
        plain = await client.get(url(sse_server), params={"query": "{ hello }"})
        assert plain.json() == {"data": {"hello": "world"}}


async def test_disconnect_runs_cleanup_once(sse_server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client, client.stream(
        "POST",
        url(sse_server),
        json={"query": "subscription { ticks }"},
        headers=EVENT_STREAM,
    ) as response:
        parser = SseParser()
        seen: list[SseEvent] = []
        async for chunk in response.aiter_raw():
            seen += parser.receive_data(chunk)
            if len(seen) >= 3:
                break
        assert sse_server.metrics.active_by_protocol("sse").value == 1
    await all_cleaned_up(sse_server)
    assert sse_server.metrics.operations_started == 1
    assert tracker.cleanups == ["ticks"]
    text = sse_server.metrics.render().decode()
    assert 'meshsub_active_operations{protocol="sse"} 0.0' in text


async def test_keepalive_comments_while_idle(start_server: Any, tracker: Tracker) -> None:
    from .conftest import make_app

    server = await start_server(app=make_app(tracker), keepalive=0.05)
    async with httpx.AsyncClient() as client, client.stream(
        "GET", url(server), params={"query": "subscription { silent }"}, headers=EVENT_STREAM
    ) as response:
        parser = SseParser()
        async for chunk in response.aiter_raw():
            assert parser.receive_data(chunk) == []  # comments only
            if parser.comments >= 3:
                break
    await all_cleaned_up(server)
    assert tracker.cleanups == ["silent"]


async def test_shutdown_ends_the_stream(sse_server: Server, tracker: Tracker) -> None:
    async with httpx.AsyncClient() as client, client.stream(
        "POST", url(sse_server), json={"query": "subscription { ticks }"}, headers=EVENT_STREAM
    ) as response:
        parser = SseParser()
        events: list[SseEvent] = []
        raw = b""
        with trio.fail_after(5):
            async for chunk in response.aiter_raw():
                raw += chunk
                events += parser.receive_data(chunk)
                if len(events) == 2:
                    sse_server.shutdown()
        # The response ended cleanly (the chunked body finished) after a whole
        # event, without ``complete``: the client reconnects instead of believing
        # the subscription is over.
        assert len(events) >= 2
        assert all(e.event == "next" for e in events)
        assert raw.endswith(b"\n\n")
    await all_cleaned_up(sse_server)
    assert tracker.cleanups == ["ticks"]


async def test_slow_reader_is_dropped(start_server: Any, tracker: Tracker) -> None:
    from .conftest import make_app

    server = await start_server(app=make_app(tracker), write_timeout=0.3, outbox_size=8)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    body = json.dumps({"query": "subscription { blobs(size: 65536) }"}).encode()
    head = (
        f"POST /api HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
        f"Accept: text/event-stream\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    await stream.send_all(head.encode() + body)
    with trio.fail_after(1):
        await server.metrics.wait_for(lambda m: m.operations_started == 1)
    # Never read: the server's writes stall, and the write deadline drops it.
    await all_cleaned_up(server, timeout=10)
    assert tracker.cleanups == ["blobs"]
    await stream.aclose()


async def test_disconnect_of_an_idle_stream_is_noticed(sse_server: Server, tracker: Tracker) -> None:
    """Nothing is written (no events, keep-alive off): only ``http.disconnect`` can end it."""
    async with httpx.AsyncClient() as client, client.stream(
        "GET", url(sse_server), params={"query": "subscription { silent }"}, headers=EVENT_STREAM
    ) as response:
        async for chunk in response.aiter_raw():
            assert chunk == b":\n\n"
            break
        assert sse_server.metrics.live_operations == 1
    await all_cleaned_up(sse_server)
    assert tracker.cleanups == ["silent"]
