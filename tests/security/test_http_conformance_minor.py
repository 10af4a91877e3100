"""Five small HTTP conformance findings, over real sockets on both hosts.

A tester found them in the running server: ``HEAD`` on a GET route got 405
(RFC 9110 §9.3.2: the GET's status and headers, no body); ``/healthz`` and
``/metrics`` answered any method; ``HTTP/9.9`` was served as if it were 1.1
(RFC 9110 §15.6.6: 505); a chunked body with a bad chunk size closed the
connection without an answer (400). Each runs on the native host and under
hypercorn (the ASGI host), where the code path is ours.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from meshsub_trio import (
    App,
    Context,
    EventStream,
    HttpRequest,
    HttpResponse,
    Server,
    ServerSentEvent,
)
from meshsub_trio.meshery import create_app as create_meshery

from ..hypercorn_host import start_hypercorn

StartServer = Callable[..., Awaitable[Server]]
HOSTS = ["native", "asgi"]
SOON = 5.0

SCHEMA = """
type Query { hello: String! }
type Subscription { silent: Int }
"""


@dataclass
class Seen:
    """What the app saw: bodies its recording route got, event streams it opened and closed."""

    bodies: list[bytes]
    opened: int = 0
    closed: int = 0


def make_app(seen: Seen) -> App:
    async def silent(_ctx: Context, _args: dict[str, Any], _emit: Any) -> None:
        await trio.sleep_forever()

    async def items(request: HttpRequest) -> HttpResponse:
        # Like Meshery's routes: a handler that knows GET only.
        if request.method != "GET":
            return HttpResponse(405, b'{"error":"use GET"}', headers=[("allow", "GET")])
        return HttpResponse(200, b'{"items":[1,2,3]}', headers=[("x-items", "3")])

    async def record(request: HttpRequest) -> HttpResponse:
        seen.bodies.append(request.body)
        return HttpResponse(200, b"{}")

    @asynccontextmanager
    async def events() -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        seen.opened += 1

        async def forever() -> AsyncIterator[ServerSentEvent]:
            n = 0
            while True:
                yield ServerSentEvent(str(n).encode())
                n += 1
                await trio.sleep(0.01)

        try:
            yield forever()
        finally:
            seen.closed += 1

    async def feed(_request: HttpRequest) -> EventStream:
        return EventStream(events, keepalive=0)

    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _r, _i: "hi"}},
        streamers={"silent": silent},
        http_routes={"/items": items, "/record": record, "/feed": feed},
    )


@dataclass
class Served:
    """A server on either host, and a way to wait until it serves no request."""

    port: int
    idle: Callable[[], Awaitable[None]]
    live_operations: Callable[[], int]


async def serve_on(
    host: str, start_server: StartServer, nursery: trio.Nursery, app: App, **config: Any
) -> Served:
    if host == "native":
        server = await start_server(app, **config)

        async def native_idle() -> None:
            while server.open_sockets:
                await trio.sleep(0.01)  # polled under the caller's deadline: no event exists

        return Served(server.port, native_idle, lambda: server.metrics.live_operations)
    hosted = await start_hypercorn(nursery, app, **config)

    async def asgi_idle() -> None:
        await hosted.requests.wait_for(0)

    return Served(hosted.port, asgi_idle, lambda: hosted.metrics.live_operations)


@pytest.fixture
def seen() -> Seen:
    return Seen([])


@pytest.fixture(params=HOSTS)
async def served(
    request: pytest.FixtureRequest, start_server: StartServer, nursery: trio.Nursery, seen: Seen
) -> Served:
    return await serve_on(request.param, start_server, nursery, make_app(seen))


# ---- a raw HTTP/1.1 client that knows HEAD --------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Conn:
    """One TCP connection, read one response at a time, framed as RFC 9112 §6.3 says."""

    def __init__(self, stream: trio.SocketStream, port: int) -> None:
        self.stream = stream
        self.port = port
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def request(
        self, method: str, target: str, *fields: str, body: bytes = b"", version: str = "1.1"
    ) -> None:
        lines = [f"{method} {target} HTTP/{version}", f"Host: 127.0.0.1:{self.port}", *fields]
        if body:
            lines.append(f"Content-Length: {len(body)}")
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)

    async def _more(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            assert await self._more(), f"closed mid-line: {self.buffer!r}"
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    async def _exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            assert await self._more(), "closed mid-body"
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    async def response(self, *, head: bool = False) -> Answer:
        """The next response; *head*: it answers a HEAD, so it has no body whatever it says."""
        while b"\r\n\r\n" not in self.buffer:
            assert await self._more(), f"closed without an answer: {self.buffer!r}"
        raw, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = raw.decode("latin-1").split("\r\n")
        assert status_line.startswith("HTTP/1.1 "), status_line
        headers: dict[str, str] = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ", 2)[1])
        if head or status in (204, 304):
            return Answer(status, headers, b"")
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while size := int((await self._line()).split(b";")[0], 16):
                body += await self._exactly(size)
                assert await self._line() == b""
            assert await self._line() == b""  # no trailers
            return Answer(status, headers, body)
        return Answer(status, headers, await self._exactly(int(headers.get("content-length", "0"))))

    async def closed(self) -> bool:
        """Whether the server closes (EOF or reset) without sending anything more."""
        try:
            more = await self._more()
        except trio.BrokenResourceError:
            return True
        return not more and not self.buffer


@asynccontextmanager
async def connect(port: int) -> AsyncIterator[Conn]:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        yield Conn(stream, port)


def comparable(headers: dict[str, str]) -> dict[str, str]:
    """Headers that must match between a GET and a HEAD (``date`` ticks on)."""
    return {name: value for name, value in headers.items() if name != "date"}


# ---- 1. HEAD answers as GET would, without a body ------------------------------------------

HELLO = "/api?query=%7Bhello%7D"


@pytest.mark.parametrize("target", ["/healthz", "/metrics", "/playground", "/items", HELLO])
async def test_head_answers_as_get_would_without_a_body(served: Served, target: str) -> None:
    """Same status, same headers (Content-Length of the GET's body), no body.

    Once 405 on app routes that check for GET (as Meshery's do) and on the
    GraphQL endpoint. The connection is reused after the HEAD: a body sent
    after it would be read as the next response's status line.
    """
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request("GET", target)
            get = await conn.response()
            await conn.request("HEAD", target)
            head = await conn.response(head=True)
            await conn.request("GET", "/healthz")
            after = await conn.response()
    assert get.status == 200, get
    assert head.status == get.status, head
    assert head.headers["content-length"] == str(len(get.body))
    if target == "/metrics":
        # Its body changes between two requests (it counts them); its type does not.
        assert head.headers["content-type"] == get.headers["content-type"]
    else:
        assert comparable(head.headers) == comparable(get.headers)
    assert after.status == 200 and after.body == b'{"status":"ok"}'


@pytest.mark.parametrize(
    "target, fields",
    [
        ("/api?query=subscription%7Bsilent%7D", ("Accept: text/event-stream",)),
        ("/feed", ()),
    ],
    ids=["graphql-sse", "event-stream-route"],
)
async def test_head_on_a_stream_answers_its_head_and_ends(
    served: Served, seen: Seen, target: str, fields: tuple[str, ...]
) -> None:
    """A streaming GET answers HEAD with the head it would stream under, then ends.

    The operation (or the route's stream) the GET would run is started and
    ended at once, exactly once; the connection stays usable.
    """
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request("HEAD", target, *fields)
            head = await conn.response(head=True)
            await conn.request("GET", "/healthz")
            after = await conn.response()
    assert head.status == 200, head
    assert head.headers["content-type"].startswith("text/event-stream")
    assert after.status == 200 and after.body == b'{"status":"ok"}'
    with trio.fail_after(SOON):
        while served.live_operations() or seen.opened != seen.closed:
            await trio.sleep(0.01)  # polled under the deadline: cleanup has no event to wait on
    if target == "/feed":
        assert seen.opened == 1


# ---- 2. /healthz and /metrics: GET and HEAD only ---------------------------------------------


@pytest.mark.parametrize("path", ["/healthz", "/metrics"])
@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
async def test_health_and_metrics_allow_get_and_head_only(
    served: Served, path: str, method: str
) -> None:
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request(method, path, body=b"{}" if method != "OPTIONS" else b"")
            answer = await conn.response()
    assert answer.status == 405, answer
    assert answer.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "method, target", [("PUT", "/api"), ("POST", "/items")], ids=["graphql", "app-route"]
)
async def test_every_allow_naming_get_names_head(served: Served, method: str, target: str) -> None:
    """HEAD is answered wherever GET is: an ``Allow`` that names one names both."""
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request(method, target, "Content-Type: application/json", body=b"{}")
            answer = await conn.response()
    assert answer.status == 405, answer
    allowed = [name.strip() for name in answer.headers["allow"].split(",")]
    assert "GET" in allowed and "HEAD" in allowed, allowed


# ---- 3. HTTP versions other than 1.0 and 1.1: 505 ------------------------------------------------


@pytest.mark.parametrize("version", ["9.9", "2.0", "1.2", "0.9"])
async def test_unsupported_http_version_gets_505_then_close(served: Served, version: str) -> None:
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request("GET", "/healthz", version=version)
            answer = await conn.response()
            assert await conn.closed()
    assert answer.status == 505, answer
    assert answer.headers["connection"].lower() == "close"


async def test_http_1_0_is_still_served(served: Served) -> None:
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request("GET", "/healthz", version="1.0")
            answer = await conn.response()
    assert answer.status == 200 and answer.body == b'{"status":"ok"}'


async def test_upgrade_in_an_unsupported_version_gets_505(start_server: StartServer) -> None:
    """The native host's WebSocket path checks the version first too."""
    port = (await start_server(make_app(Seen([])))).port
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request(
                "GET",
                "/ws",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Protocol: graphql-transport-ws",
                version="9.9",
            )
            answer = await conn.response()
            assert await conn.closed()
    assert answer.status == 505, answer


# ---- 4. A chunked body that breaks its framing: 400, then close --------------------------------

CHUNKED = ("Content-Type: application/json", "Transfer-Encoding: chunked")


async def test_bad_chunk_size_gets_400_with_a_reason_then_close(start_server: StartServer) -> None:
    """The native host answers the framing error itself (h11 found it), then closes."""
    port = (await start_server(make_app(Seen([])))).port
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request("POST", "/api", *CHUNKED)
            await conn.send(b"zz\r\n")
            answer = await conn.response()
            assert await conn.closed()
    assert answer.status == 400, answer
    assert answer.headers["connection"].lower() == "close"
    assert 0 < len(answer.body) < 200 and b"chunk" in answer.body.lower(), answer.body


@pytest.mark.parametrize("bad", [b"zz\r\n", b"5\r\nhelloXY"], ids=["chunk-size", "chunk-end"])
async def test_a_body_cut_by_bad_framing_never_reaches_the_route(
    served: Served, seen: Seen, bad: bytes
) -> None:
    """A whole JSON object in a first chunk, then a framing error: 400, and the
    route never runs with the part that came (it could apply half a change)."""
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request("POST", "/record", *CHUNKED)
            await conn.send(b'7\r\n{"a":1}\r\n' + bad)
            answer = await conn.response()
            assert await conn.closed()
    assert answer.status == 400, answer
    with trio.fail_after(SOON):
        await served.idle()
    assert seen.bodies == []


async def test_a_body_cut_by_the_client_leaving_never_reaches_the_route(
    served: Served, seen: Seen
) -> None:
    """Part of a declared body, then the client stops sending: nothing runs with that part."""
    body = json.dumps({"a": 1}).encode()
    fields = ("Content-Type: application/json", f"Content-Length: {len(body) + 50}")
    async with connect(served.port) as conn:
        await conn.request("POST", "/record", *fields)
        await conn.send(body)
        await conn.stream.send_eof()
        with trio.fail_after(SOON):
            while await conn._more():
                pass  # whatever the server says, until it closes
    with trio.fail_after(SOON):
        await served.idle()
    assert seen.bodies == []


# ---- the same through the real Meshery app ----------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_meshery_get_routes_answer_head(
    host: str, start_server: StartServer, nursery: trio.Nursery
) -> None:
    """The tester's case: Meshery's own GET routes answered HEAD with 405."""
    served = await serve_on(host, start_server, nursery, create_meshery(simulator=False))
    async with connect(served.port) as conn:
        with trio.fail_after(SOON):
            await conn.request("GET", "/api/system/events")
            get = await conn.response()
            await conn.request("HEAD", "/api/system/events")
            head = await conn.response(head=True)
    assert get.status == 200, get
    assert head.status == 200, head
    assert comparable(head.headers) == comparable(get.headers)
