"""Plain HTTP on the native host: one h11 request bridged to the ASGI app, every write timed."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any
from urllib.parse import unquote

import h11
import trio

from .._config import Config
from .._wire._chunks import ChunkMeter, ChunkRefused
from ._asgi import ASGIApp
from ._native_tls import TlsStream
from ._requests import request_tls_peer

RECEIVE_SIZE = 65536
#: The answer to a body that breaks its chunked framing (h11 names the fault
#: in detail, echoing the client's bytes: not worth sending back).
MALFORMED_BODY = "Malformed chunked request body"
#: What plain HTTP is read from: a Trio socket stream, or the same over TLS.
Stream = trio.SocketStream | TlsStream


class Closed(Exception):
    """The peer went away (or stopped reading) mid-request."""


async def serve_asgi(
    asgi: ASGIApp, stream: Stream, http: h11.Connection, request: h11.Request, config: Config
) -> None:
    """One plain request answered by the ASGI app; every write under ``write_timeout``.

    The app reads the body (its deadline is the app's); a response that
    starts while part of the body is still unread says ``connection:
    close``, since that body is never read. A body that breaks its framing
    (a bad chunk size, a chunk without its CRLF) is answered here, 400 with
    a short reason, as soon as h11 finds it: the app is told the client left
    (so nothing runs with the part that came), what it sends after is
    dropped, and the connection closes. A chunk-size line that takes the
    body over ``max_message_size`` is answered the same way, 413, as soon as
    it is read (``_chunks``), as a ``Content-Length`` that large is.
    """
    write_timeout = config.write_timeout
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": request.http_version.decode(),
        "method": request.method.decode("latin-1"),
        "scheme": "http" if isinstance(stream, trio.SocketStream) else "https",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers],
        "client": _address(stream, peer=True),
        "server": _address(stream, peer=False),
    }
    body_done = False
    head_only = request.method == b"HEAD"
    started = False
    #: The host answered (a malformed body): the app's own response is dropped.
    refused = False
    #: A chunked body's declared sizes, followed from the bytes h11 already holds.
    meter: ChunkMeter | None = None
    metered = False
    if any(name == b"transfer-encoding" for name, _ in request.headers):
        meter = ChunkMeter(config.max_message_size)

    async def write(data: bytes) -> None:
        with trio.move_on_after(write_timeout):
            await stream.send_all(data)
            return
        raise Closed()  # a peer that does not read its answer

    async def receive() -> dict[str, Any]:
        nonlocal body_done, refused
        if body_done:
            # A streamed response (SSE) learns here that its client left.
            await _until_closed(http, stream, config.max_head_size)
            return {"type": "http.disconnect"}
        if http.they_are_waiting_for_100_continue:
            # Asked for only once the request got past its checks (Host, auth).
            await write(http.send(h11.InformationalResponse(status_code=100, headers=[])))
        try:
            return await read_body()
        except (h11.RemoteProtocolError, ChunkRefused) as problem:
            body_done = refused = True
            if not started:
                if isinstance(problem, ChunkRefused):
                    await refuse(stream, http, problem.status, problem.message)
                else:
                    await refuse(stream, http, 400, MALFORMED_BODY)
            return {"type": "http.disconnect"}

    async def read_body() -> dict[str, Any]:
        nonlocal body_done, metered
        if meter is not None and not metered:
            metered = True
            meter.feed(http.trailing_data[0])  # what came with the head
        event = await _next_event(http, stream, meter)
        if isinstance(event, h11.Data):
            body, event = _more_chunks(http, bytearray(event.data))
            if event is None:
                # Let others in between reads: a read of tiny chunks is
                # thousands of h11 events, which never wait on the socket.
                await trio.lowlevel.checkpoint()
                return {"type": "http.request", "body": body, "more_body": True}
            # The body's end was already read: hand it over with the last chunks.
            body_done = True
            more = not isinstance(event, h11.EndOfMessage)
            return {"type": "http.request", "body": body, "more_body": more}
        body_done = True
        if isinstance(event, h11.EndOfMessage):
            return {"type": "http.request", "body": b"", "more_body": False}
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal body_done, started
        if refused:
            return  # the host answered this request itself
        if message["type"] == "http.response.start":
            started = True
            headers = list(message.get("headers", []))
            if http.their_state is h11.SEND_BODY and not _body_buffered(http):
                headers.append((b"connection", b"close"))
            body_done = True
            response = h11.Response(status_code=message["status"], headers=headers)
            await write(http.send(response))
        elif message["type"] == "http.response.body":
            body = b"" if head_only else message.get("body", b"")
            data = http.send(h11.Data(data=body)) if body else b""
            if not message.get("more_body"):
                data += http.send(h11.EndOfMessage())
            await write(data)

    # Over TLS, every context made for this request carries the client's certificate.
    peer = stream.layer.peer_cert if isinstance(stream, TlsStream) else None
    token = request_tls_peer.set(peer)
    try:
        await asgi(scope, receive, send)
    finally:
        request_tls_peer.reset(token)


async def refuse(stream: Stream, http: h11.Connection, status: int, message: str) -> None:
    """Answer a request h11 could not parse (e.g. 431 for an oversized head), then close."""
    body = message.encode()
    headers = [
        ("content-type", "text/plain; charset=utf-8"),
        ("content-length", str(len(body))),
        ("connection", "close"),
    ]
    with trio.move_on_after(1):
        try:
            data = http.send(h11.Response(status_code=status, headers=headers))
            data += http.send(h11.Data(data=body)) + http.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            return
        await stream.send_all(data)


def _body_buffered(http: h11.Connection) -> bool:
    """Consume (unread) body h11 already holds; whether that was all of it.

    A response may start before the app read the body (it did not need it);
    when the whole body arrived with the head, the connection stays usable.
    """
    try:
        while True:
            event = http.next_event()
            if isinstance(event, h11.EndOfMessage):
                return True
            if not isinstance(event, h11.Data):
                return False  # NEED_DATA: the rest is still on its way
    except h11.RemoteProtocolError:
        return False


async def _until_closed(http: h11.Connection, stream: Stream, limit: int) -> None:
    """Return when the peer closes its side (or resets). What it sends meanwhile (a
    pipelined request) is kept for h11, up to *limit* bytes; past that, stop reading."""
    while len(http.trailing_data[0]) < limit:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        if not data:
            return
        http.receive_data(data)
    await trio.sleep_forever()


#: h11 events taken from what is already read, per message to the app.
_CHUNKS_PER_MESSAGE = 256


def _more_chunks(http: h11.Connection, body: bytearray) -> tuple[bytes, Any]:
    """*body* plus the body chunks h11 already holds: one message, not one per chunk.

    Returns the bytes and the event that ended the run when it is the body's
    end (None: more chunks, or more reading, come next).
    """
    for _ in range(_CHUNKS_PER_MESSAGE):
        if len(body) >= RECEIVE_SIZE:
            break
        event = http.next_event()
        if isinstance(event, h11.Data):
            body += event.data
            continue
        if event is h11.NEED_DATA or event is h11.PAUSED:
            break
        return bytes(body), event
    return bytes(body), None


async def _next_event(http: h11.Connection, stream: Stream, meter: ChunkMeter | None) -> Any:
    """The next h11 event, reading from *stream* as needed (each read shown to
    *meter* first, which may refuse it)."""
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            if event is h11.PAUSED:
                return None
            return event
        data = await stream.receive_some(RECEIVE_SIZE)
        if meter is not None:
            meter.feed(data)
        http.receive_data(data)
        if not data:
            raise Closed()


def _address(stream: Stream, *, peer: bool) -> tuple[str, int] | None:
    try:
        name = stream.socket.getpeername() if peer else stream.socket.getsockname()
    except OSError:
        return None
    return (name[0], name[1])
