"""Two framing findings on the native host, over real sockets.

A tester found them in the running server. A WebSocket upgrade that
declared a body (``Content-Length`` or chunked) went past the fast upgrade
parser to h11, and was upgraded anyway, its body read as WebSocket frames:
a framing disagreement with any proxy that reads it as a body. And a
chunked body whose chunk-size line declared more than the body limit
(``200000``, 2 MiB; ``10000000000000018``) waited for the body timeout and
got 408, where a ``Content-Length`` as large gets 413 at once.

Both are the native host's own parsing (h11 behind our bridge). Under
hypercorn (the ASGI host) the upgrade and the chunked framing are
hypercorn's parser, not ours: not tested here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import trio

from meshsub_trio import Server
from meshsub_trio._wire._chunks import ChunkMeter, ChunkRefused

from .test_http_conformance_minor import Seen, connect, make_app

StartServer = Callable[..., Awaitable[Server]]
SOON = 5.0
#: A body timeout far past SOON: a refusal that waits for it fails the test.
SLOW_BODY = {"body_timeout": 60.0}

UPGRADE = (
    "Upgrade: websocket",
    "Connection: Upgrade",
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version: 13",
    "Sec-WebSocket-Protocol: graphql-transport-ws",
)
#: ``connection_init`` as a masked client text frame.
INIT = bytes([0x81, 0x80 | 26, 1, 2, 3, 4]) + bytes(
    b ^ (1, 2, 3, 4)[i % 4] for i, b in enumerate(b'{"type":"connection_init"}')
)


@pytest.mark.parametrize(
    ("field", "body"),
    [
        (f"Content-Length: {len(INIT)}", INIT),
        ("Transfer-Encoding: chunked", b"%x\r\n%s\r\n0\r\n\r\n" % (len(INIT), INIT)),
        ("Transfer-Encoding: chunked", b"0\r\n\r\n"),
    ],
    ids=["content-length", "chunked", "empty-chunked"],
)
async def test_an_upgrade_with_a_body_is_refused_then_closed(
    start_server: StartServer, field: str, body: bytes
) -> None:
    """Only the body is refused: ``Content-Length: 0`` (h11's path too) is upgraded."""
    port = (await start_server(make_app(Seen([])))).port
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request("GET", "/ws", *UPGRADE, field)
            await conn.send(body)
            answer = await conn.response()
            assert await conn.closed()
    assert answer.status == 400, answer
    assert answer.body == b"A WebSocket upgrade cannot carry a body"
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request("GET", "/ws", *UPGRADE, "Content-Length: 0")
            while b"\r\n\r\n" not in conn.buffer:
                assert await conn._more(), conn.buffer
    assert conn.buffer.startswith(b"HTTP/1.1 101 "), conn.buffer


CHUNKED = ("Content-Type: application/json", "Transfer-Encoding: chunked")
LIMIT = 1000


@pytest.mark.parametrize(
    "start",
    [
        b"200000\r\n",  # 2 MiB, over the default 1 MiB
        b"10000000000000018\r\n",  # about 2**64
        b"200000",  # refused from its digits, before the line ends
        b"400;name=value\r\n",  # an extension does not hide the size
    ],
    ids=["2MiB", "2**64", "unfinished-line", "extension"],
)
async def test_a_chunk_declared_over_the_limit_gets_413_at_once(
    start_server: StartServer, start: bytes
) -> None:
    limit = {"max_message_size": 1 << 20} if start.startswith(b"2") else {"max_message_size": LIMIT}
    port = (await start_server(make_app(Seen([])), **SLOW_BODY, **limit)).port
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request("POST", "/record", *CHUNKED)
            await conn.send(start)
            answer = await conn.response()
            assert await conn.closed()
    assert answer.status == 413, answer
    assert answer.headers["connection"].lower() == "close"


async def test_chunks_are_refused_at_the_size_line_that_takes_them_over_the_limit(
    start_server: StartServer,
) -> None:
    """A body of exactly the limit, with leading zeros and extensions and split at
    every awkward byte, arrives whole (the meter follows h11's framing); one byte
    more declared is 413 at that size line, and the route never runs with it."""
    seen = Seen([])
    port = (await start_server(make_app(seen), **SLOW_BODY, max_message_size=LIMIT)).port
    parts = [b"a" * 400, b"b" * 350, b"c" * 250]
    body = b"".join(b'%04x;ext="q;x"\r\n%s\r\n' % (len(part), part) for part in parts)
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request("POST", "/record", *CHUNKED)
            whole = body + b"0\r\nx-trailer: 1\r\n\r\n"
            for at in range(0, len(whole), 7):
                await conn.send(whole[at : at + 7])
            answer = await conn.response()
    assert answer.status == 200, answer
    assert seen.bodies == [b"".join(parts)]
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request("POST", "/record", *CHUNKED)
            await conn.send(body + b"1\r\n")
            answer = await conn.response()
            assert await conn.closed()
    assert answer.status == 413, answer
    assert seen.bodies == [b"".join(parts)]


async def test_a_size_line_of_endless_zeros_is_refused_cheaply(start_server: StartServer) -> None:
    """h11 takes 20 digits at most: the 21st is refused, not a wait for the line's end."""
    port = (await start_server(make_app(Seen([])), **SLOW_BODY)).port
    async with connect(port) as conn:
        with trio.fail_after(SOON):
            await conn.request("POST", "/record", *CHUNKED)
            await conn.send(b"0" * 4000)
            answer = await conn.response()
    assert answer.status == 400, answer


def test_the_meter_follows_a_crlf_split_between_reads() -> None:
    meter = ChunkMeter(10)
    for piece in (b"5\r", b"\nhello\r", b"\n", b"5\r\nworld\r\n"):
        meter.feed(piece)
    assert meter.declared == 10
    with pytest.raises(ChunkRefused) as refused:
        meter.feed(b"1\r\n")
    assert refused.value.status == 413
