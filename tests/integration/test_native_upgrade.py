"""The native host's upgrade paths over real sockets: the fast path, and h11 behind it.

A plain upgrade head is parsed by ``_upgrade`` and answered at once; a head
it declines (a body, odd formatting, a request before the upgrade on the same
connection) goes to h11, which must serve it just the same or refuse it.
"""

from __future__ import annotations

import base64
import json
import os

import trio
import trio.testing

from meshsub_trio import Server

_INIT_FRAME = b"\x81\x9a\0\0\0\0" + b'{"type":"connection_init"}'


def _head(port: int, *extra: str, path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: graphql-transport-ws",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def _response_head(stream: trio.SocketStream) -> tuple[int, bytes]:
    """The status of the next response, and whatever followed its head."""
    raw = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in raw:
            data = await stream.receive_some(65536)
            assert data, "the server closed before answering"
            raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


async def _expect_ack(stream: trio.SocketStream, already: bytes = b"") -> None:
    """The server's next frame is ``connection_ack``."""
    frame = already
    with trio.fail_after(5):
        while len(frame) < 2 or len(frame) < 2 + (frame[1] & 0x7F):
            data = await stream.receive_some(65536)
            assert data, "the server closed instead of acknowledging"
            frame += data
    assert frame[0] == 0x81
    assert json.loads(frame[2 : 2 + frame[1]]) == {"type": "connection_ack"}


async def _served(stream: trio.SocketStream) -> None:
    """The upgrade that was sent is answered 101, and ``connection_init`` is acknowledged."""
    status, rest = await _response_head(stream)
    assert status == 101
    await stream.send_all(_INIT_FRAME)
    await _expect_ack(stream, rest)


async def test_head_split_across_reads_is_served(server: Server) -> None:
    """A head arriving in pieces (the server has to wait for the rest) still upgrades."""
    head = _head(server.port)
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        for part in (head[:10], head[10:60], head[60:]):
            await stream.send_all(part)
            await trio.testing.wait_all_tasks_blocked()
        await _served(stream)


async def test_frames_sent_with_the_head_are_not_lost(server: Server) -> None:
    """Bytes after the head in the same read are the first frames: kept, not dropped."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(_head(server.port) + _INIT_FRAME)
        status, rest = await _response_head(stream)
        assert status == 101
        await _expect_ack(stream, rest)


async def test_upgrade_the_fast_path_declines_is_served_by_h11(server: Server) -> None:
    """``Content-Length: 0`` is unusual on an upgrade: h11 takes it, and upgrades too."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(_head(server.port, "Content-Length: 0"))
        await _served(stream)


async def test_upgrade_after_a_plain_request_on_the_same_connection(server: Server) -> None:
    """An HTTP request first (keep-alive), then an upgrade: both answered, in order."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode()
        await stream.send_all(request)
        status, rest = await _response_head(stream)
        assert status == 200
        await stream.send_all(_head(server.port))
        raw = rest
        with trio.fail_after(5):
            while b"HTTP/1.1 101" not in raw or not raw.endswith(b"\r\n\r\n"):
                data = await stream.receive_some(65536)
                assert data, "the server closed before upgrading"
                raw += data
        await stream.send_all(_INIT_FRAME)
        await _expect_ack(stream)


async def test_malformed_head_is_refused_400_not_upgraded(server: Server) -> None:
    """Whitespace before a field's colon is invalid HTTP: declined here, 400 from h11."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(_head(server.port, "X-Bad : value"))
        status, _ = await _response_head(stream)
    assert status == 400


async def test_peer_gone_before_its_head_finished_costs_nothing(server: Server) -> None:
    """Half a head, then the peer closes: no answer, no connection left behind."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(_head(server.port)[:30])
        await trio.testing.wait_all_tasks_blocked()
        await stream.send_eof()
        with trio.fail_after(5):
            assert await stream.receive_some(65536) == b""
    with trio.fail_after(5):
        await server.metrics.wait_idle()
    assert server.metrics.live_connections == 0
