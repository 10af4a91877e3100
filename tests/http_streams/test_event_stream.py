"""An app route returning an EventStream, over real sockets: each way a stream
ends (source done, client gone, stalled reader, shutdown) exits the route's
``open()`` exactly once; a refusal answers before anything streams."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from meshsub_trio import App, Server
from meshsub_trio._app import (
    EventStream,
    HttpRequest,
    HttpResponse,
    ServerSentEvent,
    StreamRefused,
)
from meshsub_trio._wire._sse import SseParser


class Source:
    """Counts ``open()`` entries and exits; emits what the test sends it."""

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.send, self.receive = trio.open_memory_channel[ServerSentEvent](100)
        self.exited = trio.Event()

    @asynccontextmanager
    async def open(self) -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        self.opened += 1
        try:
            yield self.receive
        finally:
            self.closed += 1
            self.exited.set()


def make_app(source: Source) -> App:
    async def stream(request: HttpRequest) -> HttpResponse | EventStream:
        if request.query.get("refuse"):

            @asynccontextmanager
            async def refused() -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
                raise StreamRefused(HttpResponse(410, b'{"gone":true}'))
                yield source.receive  # pragma: no cover

            return EventStream(refused)
        return EventStream(source.open, keepalive=0, retry_ms=100)

    return App("type Query { ok: Boolean }", http_routes={"/stream": stream})


async def started(start_server: Any, **config: Any) -> tuple[Server, Source]:
    source = Source()
    return await start_server(app=make_app(source), **config), source


async def closed_once(source: Source) -> None:
    with trio.fail_after(5):
        await source.exited.wait()
    assert (source.opened, source.closed) == (1, 1)


async def test_events_then_source_end_ends_the_body(start_server: Any) -> None:
    server, source = await started(start_server)
    for n in range(3):
        source.send.send_nowait(ServerSentEvent(b"line one\nline %d" % n, id=str(n)))
    source.send.close()
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{server.url}/stream")
    assert response.status_code == 200
    parser = SseParser()
    events = parser.receive_data(response.content)
    assert [(e.data, e.id) for e in events] == [(f"line one\nline {n}", str(n)) for n in range(3)]
    assert response.content.startswith(b"retry: 100\n\n")
    await closed_once(source)


async def test_disconnect_closes_once(start_server: Any) -> None:
    server, source = await started(start_server)
    async with (
        httpx.AsyncClient(timeout=5) as http,
        http.stream("GET", f"{server.url}/stream") as response,
    ):
        source.send.send_nowait(ServerSentEvent(b"x", id="1"))
        parser = SseParser()
        async for chunk in response.aiter_raw():
            if parser.receive_data(chunk):
                break
    await closed_once(source)


async def test_shutdown_ends_the_stream(start_server: Any) -> None:
    server, source = await started(start_server)
    async with (
        httpx.AsyncClient(timeout=5) as http,
        http.stream("GET", f"{server.url}/stream") as response,
    ):
        source.send.send_nowait(ServerSentEvent(b"before", id="1"))
        parser = SseParser()
        events = []
        with trio.fail_after(5):
            async for chunk in response.aiter_raw():
                events += parser.receive_data(chunk)
                if events and not server.state.shutting_down:
                    server.shutdown()
        assert [e.data for e in events] == ["before"]  # then the body ended
    await closed_once(source)


async def test_stalled_reader_is_dropped(start_server: Any) -> None:
    server, source = await started(start_server, write_timeout=0.3)
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 4096)
    await stream.send_all(f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
    blob = b"x" * 65536
    with trio.fail_after(10):
        # Fill every queue while the client never reads: the write deadline drops it.
        while not source.exited.is_set():
            try:
                source.send.send_nowait(ServerSentEvent(blob))
            except trio.WouldBlock:
                await source.exited.wait()
    await closed_once(source)
    await stream.aclose()


async def test_refusal_is_a_plain_response(start_server: Any) -> None:
    server, source = await started(start_server)
    async with httpx.AsyncClient(timeout=5) as http:
        response = await http.get(f"{server.url}/stream", params={"refuse": "1"})
    assert response.status_code == 410 and response.json() == {"gone": True}
    assert response.headers["content-type"].startswith("application/json")
    assert source.opened == 0
