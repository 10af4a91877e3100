"""The HTTP edge of the native host: deadlines, auth before the body, one head limit.

Found from outside: a POST whose body never came was held forever, before
any authentication; a head trickled in was only bounded by a fixed 10 s; a
100 KB head passed the 64 KB limit when it arrived in one read; an idle
WebSocket kept its whole upgrade head. Each attack runs beside a bystander
who must keep streaming.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import h11
import pytest
import trio

from meshsub_trio import App, AuthError, Context, HttpRequest, HttpResponse, Server
from meshsub_trio._transports._native_http import _more_chunks
from meshsub_trio.examples.countdown import countdown, ticks

from ..hypercorn_host import start_hypercorn
from ..integration.test_transport_ws import bare_upgrade
from .conftest import bystander

StartServer = Callable[..., Awaitable[Server]]
SLACK = 1.5  # scheduling allowance on top of a configured deadline (2 shared cores)

SCHEMA = """
type Query { hello: String!, seen: [String!]!, cookies: [String!]! }
type Subscription {
  countdown(to: Int!): Int!
  ticks(everyMs: Int = 50): Int!
}
"""


async def authenticate(ctx: Context) -> str:
    """Token mode in miniature: a bearer token, or a token cookie on sockets."""
    if ctx.headers.get("authorization") == "Bearer good" or ctx.cookies.get("token") == "good":
        return "alice"
    raise AuthError("missing token")


async def echo(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, json.dumps({"len": len(request.body)}).encode())


def make_app(*, auth: bool) -> App:
    return App(
        SCHEMA,
        resolvers={
            "Query": {
                "hello": lambda _r, _i: "hi",
                "seen": lambda _r, info: sorted(info.context.headers),
                "cookies": lambda _r, info: sorted(info.context.cookies),
            }
        },
        streamers={"countdown": countdown, "ticks": ticks},
        http_routes={"/echo": echo},
        authenticate=authenticate if auth else None,
    )


AUTH = [(b"authorization", b"Bearer good")]
#: Where the app-level rules (auth before the body, the body deadline) are checked.
HOSTS = ["native", "asgi"]


async def serve_on(
    host: str, start_server: StartServer, nursery: trio.Nursery, app: App, **config: Any
) -> int:
    """Serve *app* on the native host or under hypercorn; the port."""
    if host == "native":
        return (await start_server(app, **config)).port
    return (await start_hypercorn(nursery, app, **config)).port


# ---- a raw HTTP/1.1 client --------------------------------------------------------------


class Wire:
    """One TCP connection, read response by response."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> bool:
        data = await self.stream.receive_some(65536)
        self.buffer += data
        return bool(data)

    async def response(self) -> tuple[int, dict[str, str], bytes]:
        """The next response: status, headers, body (by Content-Length)."""
        while b"\r\n\r\n" not in self.buffer:
            assert await self._more(), f"closed without an answer: {self.buffer!r}"
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            assert await self._more(), "closed mid-body"
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split(" ", 2)[1]), headers, body

    async def closed(self) -> bool:
        """Whether the server closes (EOF) without sending anything more."""
        try:
            more = await self._more()
        except trio.BrokenResourceError:
            return True  # reset: closed as well
        return not more and not self.buffer


@asynccontextmanager
async def wire(port: int) -> AsyncIterator[Wire]:
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        yield Wire(stream)


def request(method: str, path: str, port: int, *fields: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", *fields]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def padded_head(port: int, size: int, *, upgrade: bool) -> bytes:
    """A GET head (upgrade or plain) of exactly *size* bytes, blank line included."""
    fields = [f"Host: 127.0.0.1:{port}"]
    if upgrade:
        fields += [
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            "Sec-WebSocket-Protocol: graphql-transport-ws",
        ]
    base = "\r\n".join([f"GET {'/ws' if upgrade else '/healthz'} HTTP/1.1", *fields, "X-Pad: "])
    pad = size - len(base) - 4
    assert pad >= 0
    head = (base + "p" * pad + "\r\n\r\n").encode()
    assert len(head) == size
    return head


async def send_in_pieces(stream: Wire, data: bytes, piece: int) -> None:
    for start in range(0, len(data), piece):
        await stream.send(data[start : start + piece])


# ---- head deadline ------------------------------------------------------------------------


async def trickle(stream: Wire, data: bytes, every: float) -> None:
    """The slowloris: a byte at a time, until the server hangs up."""
    try:
        for byte in data:
            await stream.send(bytes((byte,)))
            await trio.sleep(every)  # pacing the attack, not synchronising with it
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@pytest.mark.parametrize("keep_alive", [False, True], ids=["first", "after-a-request"])
async def test_trickled_head_gets_408_within_head_timeout(
    start_server: StartServer, keep_alive: bool
) -> None:
    """One deadline for the whole head, however it trickles: 408, then the close."""
    server = await start_server(head_timeout=0.5)
    port = server.port
    async with bystander(port), wire(port) as conn, trio.open_nursery() as nursery:
        if keep_alive:
            await conn.send(request("GET", "/healthz", port))
            assert (await conn.response())[0] == 200
        started = trio.current_time()
        nursery.start_soon(
            trickle, conn, request("GET", "/healthz", port, "X-A: " + "a" * 500), 0.02
        )
        with trio.fail_after(0.5 + SLACK):
            status, headers, _ = await conn.response()
            assert await conn.closed()
        nursery.cancel_scope.cancel()
    assert status == 408 and headers["connection"] == "close"
    assert trio.current_time() - started < 0.5 + SLACK


async def test_idle_connections_each_cost_only_their_deadline(start_server: StartServer) -> None:
    """Silent or half-sent connections are all closed at the head deadline; none leaks.

    A half-sent head gets its 408 and a polite close, which waits at most
    ``close_timeout`` for the peer to hang up (it never does here).
    """
    server = await start_server(head_timeout=0.5, close_timeout=0.5)
    port = server.port
    async with bystander(port):
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(100)]
        try:
            for stream in streams[::2]:
                await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            with trio.fail_after(0.5 + 0.5 + SLACK):
                for stream in streams:
                    while await stream.receive_some(65536):
                        pass  # a 408 for the half-sent ones, then the close
                while server.open_sockets > 1:  # only the bystander's is left
                    await trio.sleep(0.01)  # polled under the deadline: no event exists
        finally:
            for stream in streams:
                await stream.aclose()


# ---- body deadline, and auth before the body ---------------------------------------------------


@pytest.mark.parametrize("host", HOSTS)
async def test_body_that_never_comes_gets_408_within_body_timeout(
    start_server: StartServer, nursery: trio.Nursery, host: str
) -> None:
    port = await serve_on(host, start_server, nursery, make_app(auth=False), body_timeout=0.5)
    head = request("POST", "/api", port, "Content-Type: application/json", "Content-Length: 100")
    async with bystander(port), wire(port) as conn:
        await conn.send(head + b'{"query":')
        with trio.fail_after(0.5 + SLACK):
            status, headers, _ = await conn.response()
            assert await conn.closed()
    assert status == 408 and headers["connection"] == "close"


async def test_trickled_body_gets_408_within_body_timeout(start_server: StartServer) -> None:
    """The deadline is for the whole body, not per read."""
    server = await start_server(make_app(auth=False), body_timeout=0.5)
    port = server.port
    body = json.dumps({"query": "{ hello }", "pad": "x" * 2000}).encode()
    head = request(
        "POST", "/api", port, "Content-Type: application/json", f"Content-Length: {len(body)}"
    )
    async with bystander(port), wire(port) as conn, trio.open_nursery() as nursery:
        await conn.send(head)
        nursery.start_soon(trickle, conn, body, 0.02)
        with trio.fail_after(0.5 + SLACK):
            status, _, _ = await conn.response()
            assert await conn.closed()
        nursery.cancel_scope.cancel()
    assert status == 408


@pytest.mark.parametrize("path", ["/api", "/echo"])
@pytest.mark.parametrize("host", HOSTS)
async def test_unauthenticated_body_is_never_awaited(
    start_server: StartServer, nursery: trio.Nursery, path: str, host: str
) -> None:
    """401 from the headers alone, its body unread; then the connection closes."""
    port = await serve_on(host, start_server, nursery, make_app(auth=True))  # body_timeout: 30 s
    head = request("POST", path, port, "Content-Type: application/json", "Content-Length: 1000000")
    async with bystander(port, headers=AUTH), wire(port) as conn:
        await conn.send(head + b"x" * 65536)  # part of a big upload, the rest never sent
        with trio.fail_after(SLACK):
            status, headers, body = await conn.response()
            assert await conn.closed()
    assert status == 401
    assert headers["www-authenticate"] == "Bearer" and headers["connection"] == "close"
    assert json.loads(body) == {"errors": [{"message": "missing token"}]}


@pytest.mark.parametrize(
    ("path", "answer"), [("/api", {"data": {"hello": "hi"}}), ("/echo", {"len": 22})]
)
async def test_authenticated_body_is_read(
    start_server: StartServer, path: str, answer: dict[str, Any]
) -> None:
    """The control: with a token the same requests are served, body and all."""
    server = await start_server(make_app(auth=True))
    port = server.port
    body = json.dumps({"query": "{ hello }"}).encode()
    fields = ["Authorization: Bearer good", "Content-Type: application/json"]
    async with wire(port) as conn:
        await conn.send(
            request("POST", path, port, *fields, f"Content-Length: {len(body)}", body=body)
        )
        with trio.fail_after(5):
            status, _, got = await conn.response()
    assert status == 200 and json.loads(got) == answer


async def test_unread_body_closes_instead_of_draining(server: Server) -> None:
    """A route that ignores the body answers at once and closes; it does not wait for it."""
    port = server.port
    async with bystander(port), wire(port) as conn:
        await conn.send(request("GET", "/healthz", port, "Content-Length: 1000000"))
        with trio.fail_after(SLACK):
            status, headers, _ = await conn.response()
            assert await conn.closed()
    assert status == 200 and headers["connection"] == "close"


async def test_pipelined_requests_are_still_served(server: Server) -> None:
    """Keep-alive is kept: three requests in one write (bodies read or skipped), three answers."""
    port = server.port
    body = json.dumps({"query": "{ hello }"}).encode()
    post = request(
        "POST", "/api", port, "Content-Type: application/json", f"Content-Length: {len(body)}",
        body=body,
    )  # fmt: skip
    async with wire(port) as conn:
        await conn.send(
            post
            + request("GET", "/healthz", port)
            + request("GET", "/healthz", port, "Content-Length: 2", body=b"{}")
        )
        with trio.fail_after(5):
            first = await conn.response()
            second = await conn.response()
            third = await conn.response()
    assert first[0] == 200 and json.loads(first[2]) == {
        "data": {"hello": "Hello from meshsub-trio"}
    }
    assert second == (200, second[1], b'{"status":"ok"}')
    assert third[0] == 200 and "connection" not in third[1]


# ---- one head limit, whatever the split --------------------------------------------------------

SPLITS = {"one-write": 1 << 20, "997-byte-pieces": 997}


@pytest.mark.parametrize("split", SPLITS.values(), ids=SPLITS.keys())
@pytest.mark.parametrize("upgrade", [False, True], ids=["plain", "upgrade"])
async def test_100kb_head_is_431_however_split(server: Server, split: int, upgrade: bool) -> None:
    """The reported bug: 100 KB heads passed the 64 KB limit when they came in one read."""
    port = server.port
    async with bystander(port), wire(port) as conn:
        await send_in_pieces(conn, padded_head(port, 100_000, upgrade=upgrade), split)
        with trio.fail_after(5):
            status, headers, _ = await conn.response()
            assert await conn.closed()
    assert status == 431 and headers["connection"] == "close"


@pytest.mark.parametrize("split", [*SPLITS.values(), 1], ids=[*SPLITS.keys(), "bytewise"])
@pytest.mark.parametrize(
    ("upgrade", "served"), [(False, 200), (True, 101)], ids=["plain", "upgrade"]
)
async def test_head_limit_is_exact(
    start_server: StartServer, split: int, upgrade: bool, served: int
) -> None:
    """``max_head_size`` bytes up to and including the blank line pass; one more is 431."""
    server = await start_server(max_head_size=2048)
    port = server.port
    for size, expected in ((2048, served), (2049, 431)):
        async with wire(port) as conn:
            await send_in_pieces(conn, padded_head(port, size, upgrade=upgrade), split)
            with trio.fail_after(5):
                status, _, _ = await conn.response()
        assert status == expected, size


@pytest.mark.parametrize(("count", "expected"), [(100, 200), (101, 431), (5000, 431)])
async def test_header_fields_are_capped(server: Server, count: int, expected: int) -> None:
    """h11 caps bytes, not fields: 100 fields pass (Host included), more are 431."""
    port = server.port
    fields = [f"X-{n}: v" for n in range(count - 1)]
    async with bystander(port), wire(port) as conn:
        await conn.send(request("GET", "/healthz", port, *fields))
        with trio.fail_after(5):
            status, _, _ = await conn.response()
    assert status == expected


# ---- what an open WebSocket keeps ------------------------------------------------------------


async def test_socket_keeps_its_context_not_its_head(start_server: StartServer) -> None:
    """A big junk header is gone once the socket is open; auth and cookies stay."""
    server = await start_server(make_app(auth=True))
    headers = [
        ("Sec-WebSocket-Protocol", "graphql-transport-ws"),
        ("Cookie", "token=good; theme=dark"),
        ("User-Agent", "test"),
        ("X-Junk", "j" * 30_000),
    ]
    async with bare_upgrade(server.port, headers=headers) as bare:
        assert bare.status == 101
        await bare.send_json({"type": "connection_init"})
        with trio.fail_after(5):
            assert await bare.receive_json() == {"type": "connection_ack"}
            query = "{ seen cookies }"
            await bare.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
            reply = await bare.receive_json()
    assert reply["payload"]["data"] == {
        "seen": ["host", "user-agent"],
        "cookies": ["theme", "token"],
    }


# ---- a client that never reads its answers --------------------------------------------------


async def test_client_that_never_reads_is_dropped_after_write_timeout(
    start_server: StartServer,
) -> None:
    """Pipelined requests whose answers are never read: the server's write stalls,
    and after ``write_timeout`` the connection is dropped instead of held forever."""
    server = await start_server(write_timeout=0.5)
    port = server.port
    flood = request("GET", "/playground", port) * 50_000  # ~50 MB of answers
    async with bystander(port), wire(port) as conn:
        with trio.fail_after(10), pytest.raises(trio.BrokenResourceError):
            await conn.send(flood)  # never reading: fails once the server drops us


async def test_expect_100_continue_only_after_the_checks(start_server: StartServer) -> None:
    """A client that waits before uploading: refused at once (401, no 100), or told
    to go on (100) once Host and auth passed, and then its body is read."""
    server = await start_server(make_app(auth=True))
    port = server.port
    body = json.dumps({"query": "{ hello }"}).encode()
    fields = ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    fields.append("Expect: 100-continue")
    async with bystander(port, headers=AUTH):
        async with wire(port) as conn:
            await conn.send(request("POST", "/api", port, *fields))
            with trio.fail_after(SLACK):
                assert (await conn.response())[0] == 401
                assert await conn.closed()
        async with wire(port) as conn:
            await conn.send(request("POST", "/api", port, "Authorization: Bearer good", *fields))
            with trio.fail_after(SLACK):
                assert (await conn.response())[0] == 100
                await conn.send(body)
                status, _, answer = await conn.response()
    assert status == 200 and "hello" in json.loads(answer)["data"]


async def test_an_app_keeps_the_headers_it_names(start_server) -> None:
    """``Config.keep_headers`` keeps a custom header (an API key, say) on the socket's context."""
    from meshsub_trio import App

    seen: dict[str, str] = {}

    async def authenticate(ctx):  # runs at connection_init, after the upgrade
        seen.update(ctx.headers)
        return None

    app = App(
        "type Query { hello: String } type Subscription { n: Int }",
        authenticate=authenticate,
        streamers={"n": _one_value},
    )
    server = await start_server(app=app, keep_headers=("x-api-key",))
    from ..wsclient import TRANSPORT, open_raw_client

    async with open_raw_client(
        server.port,
        subprotocols=[TRANSPORT],
        extra_headers=[(b"x-api-key", b"k1"), (b"x-junk", b"j" * 1000)],
    ) as client:
        await client.init()
    assert seen.get("x-api-key") == "k1"
    assert "x-junk" not in seen


async def _one_value(ctx, args, emit) -> None:
    emit(1)


@pytest.mark.parametrize("expect", [False, True])
async def test_a_body_declared_too_large_is_413_before_any_of_it_is_read(
    start_server: StartServer, expect: bool
) -> None:
    """No need to upload past the limit to hear it, and no ``100 Continue`` inviting it."""
    server = await start_server(make_app(auth=False))  # body_timeout: 30 s
    port = server.port
    fields = ["Content-Type: application/json", f"Content-Length: {server.config.max_message_size + 1}"]
    if expect:
        fields.append("Expect: 100-continue")
    async with bystander(port), wire(port) as conn:
        await conn.send(request("POST", "/api", port, *fields))  # and none of the body
        with trio.fail_after(SLACK):
            status, headers, body = await conn.response()
            assert await conn.closed()
    assert status == 413 and headers["connection"] == "close"
    assert json.loads(body) == {"errors": [{"message": "Body too large"}]}


async def test_a_request_framed_by_both_length_and_chunks_is_answered_then_closed(
    server: Server,
) -> None:
    """RFC 9112 §6.1: the chunks frame it, and the connection closes after the answer,
    so a request smuggled behind it is never read."""
    port = server.port
    body = b'{"query":"{ hello }"}'
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    first = request(
        "POST", "/api", port, "Content-Type: application/json", "Content-Length: 5",
        "Transfer-Encoding: chunked", body=chunked,
    )  # fmt: skip
    smuggled = request("GET", "/healthz", port)
    async with wire(port) as conn:
        await conn.send(first + smuggled)
        with trio.fail_after(SLACK):
            status, _, answer = await conn.response()
            assert await conn.closed()  # the smuggled request got no answer
    assert status == 200 and "hello" in json.loads(answer)["data"]


async def test_a_body_in_one_byte_chunks_is_served_while_others_are(server: Server) -> None:
    """Tiny chunks are many h11 events per read: they are taken in runs, with the
    loop let go between runs, so a bystander keeps streaming meanwhile."""
    port = server.port
    body = b'{"query":"{ hello }"' + b" " * 100_000 + b"}"
    chunked = b"".join(b"1\r\n" + body[i : i + 1] + b"\r\n" for i in range(len(body)))
    head = request(
        "POST", "/api", port, "Content-Type: application/json", "Transfer-Encoding: chunked"
    )
    async with bystander(port, max_gap=0.5), wire(port) as conn:
        await conn.send(head + chunked + b"0\r\n\r\n")
        with trio.fail_after(10):
            status, _, answer = await conn.response()
    assert status == 200 and "hello" in json.loads(answer)["data"]


def test_chunks_already_read_become_one_message_in_bounded_runs() -> None:
    """Without this, each 1-byte chunk was an ASGI message of its own, and a
    64 KiB read of them about 10,000 in a row without a checkpoint."""
    http = h11.Connection(h11.SERVER)
    http.receive_data(b"POST /api HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert isinstance(http.next_event(), h11.Request)
    http.receive_data(b"".join(b"1\r\nx\r\n" for _ in range(1000)) + b"0\r\n\r\n")
    first = http.next_event()
    assert isinstance(first, h11.Data)
    body, end = _more_chunks(http, bytearray(first.data))
    assert body == b"x" * 257 and end is None  # a run of 256 more, then the loop is let go
    runs = [body]
    while end is None:
        event = http.next_event()
        assert isinstance(event, h11.Data)
        body, end = _more_chunks(http, bytearray(event.data))
        runs.append(body)
    assert isinstance(end, h11.EndOfMessage) and b"".join(runs) == b"x" * 1000
    assert [len(run) for run in runs] == [257, 257, 257, 229]


def upgrade_head(port: int, *fields: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"GET /ws {version}", f"Host: 127.0.0.1:{port}", "Upgrade: websocket",
             "Connection: Upgrade", *fields]  # fmt: skip
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


GOOD_KEY = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="


@pytest.mark.parametrize(
    ("fields", "version", "status"),
    [
        (["Sec-WebSocket-Key: not base64!!", "Sec-WebSocket-Version: 13"], "HTTP/1.1", 400),
        (["Sec-WebSocket-Key: AAAAAAAAAAAAAAAAAAAA", "Sec-WebSocket-Version: 13"], "HTTP/1.1", 400),
        ([GOOD_KEY, GOOD_KEY, "Sec-WebSocket-Version: 13"], "HTTP/1.1", 400),
        ([GOOD_KEY, "Sec-WebSocket-Version: 8"], "HTTP/1.1", 426),
        ([GOOD_KEY, "Sec-WebSocket-Version: 13"], "HTTP/1.0", 400),
    ],
    ids=["not-base64", "15-bytes", "key-twice", "version-8", "http-1.0"],
)
async def test_an_upgrade_rfc_6455_refuses_is_refused(
    server: Server, fields: list[str], version: str, status: int
) -> None:
    port = server.port
    async with wire(port) as conn:
        await conn.send(upgrade_head(port, *fields, version=version))
        with trio.fail_after(SLACK):
            got, headers, _ = await conn.response()
            assert await conn.closed()
    assert got == status
    if status == 426:
        assert headers["sec-websocket-version"] == "13"  # RFC 6455 §4.4


async def test_a_valid_upgrade_still_switches(server: Server) -> None:
    port = server.port
    async with wire(port) as conn:
        await conn.send(upgrade_head(port, GOOD_KEY, "Sec-WebSocket-Version: 13",
                                     "Sec-WebSocket-Protocol: graphql-transport-ws"))  # fmt: skip
        with trio.fail_after(SLACK):
            status, headers, _ = await conn.response()
    assert status == 101 and headers["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
