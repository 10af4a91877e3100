"""The native host: HTTP/1.1 and WebSocket on Trio sockets.

A connection's first request head is read once. A plain WebSocket upgrade
(``_upgrade``) is answered at once and becomes a connection driven by the
core, its frames read by ``_frames``; anything else goes to h11 and from there
to the ASGI app through a small bridge, so HTTP behaves exactly as under
hypercorn. Unlike the ASGI path, every send here is cancellable and writes to
one socket are joined.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any
from urllib.parse import unquote

import h11
import trio

from .._protocol import CloseCode, choose_subprotocol, machine_for, parse_offer
from .._state import ServerState
from ._asgi import ASGIApp
from ._native_ws import NativeWebSocket, close_unwatched, receive_some
from ._requests import header_map, make_context, origin_allowed
from ._upgrade import HEAD_END, parse_upgrade, refusal, switching_protocols

log = logging.getLogger("meshsub_trio.native")

_HEAD_TIMEOUT = 10.0
_RECEIVE_SIZE = 65536
_MAX_HEAD = 64 * 1024


class _Closed(Exception):
    """The peer went away mid-request."""


#: What a completed upgrade hands on: protocol to speak (None: refuse with
#: 4406), bytes already read past the request head, the request's headers.
_Upgrade = tuple[str | None, bytes, dict[str, str]]


class NativeHost:
    """Serves one :class:`ServerState` on Trio sockets."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.asgi = ASGIApp.from_state(state)

    async def handle_socket(self, sock: trio.socket.SocketType) -> None:
        """One TCP connection: HTTP requests until an upgrade or a close.

        Nothing raised here may reach the server: a broken peer or a bug costs
        this connection only.
        """
        try:
            upgrade = await self._first_request(sock)
            if upgrade is not None:
                # The HTTP parser is gone by now: an idle WebSocket keeps only
                # what it needs (memory per connection is a feature here).
                await self._run_websocket(sock, *upgrade)
        except (
            _Closed,
            trio.BrokenResourceError,
            trio.ClosedResourceError,
            OSError,
            h11.ProtocolError,
        ):
            pass
        except Exception:
            log.exception("connection handler failed")
        finally:
            close_unwatched(sock)  # the connection's tasks have all ended

    async def _first_request(self, sock: trio.socket.SocketType) -> _Upgrade | None:
        """Read the first request head; take a plain upgrade's fast path, else h11's.

        The head has usually arrived by the time this task runs: then it is
        read at once, with no timeout to arm. A WebSocket never needs a
        ``SocketStream``: only the h11 path makes one.
        """
        fd = sock.fileno()
        try:
            data = os.read(fd, _RECEIVE_SIZE)
        except BlockingIOError:
            data = b""
        else:
            if not data:
                return None  # closed before saying anything
        if not _head_complete(data):
            with trio.move_on_after(_HEAD_TIMEOUT):
                data = await _read_head(fd, data)
            if not _head_complete(data):
                return None  # closed, or a head that never finished: no one to answer
        end = data.find(HEAD_END)
        if end >= 0:
            request = parse_upgrade(data[:end])
            if request is not None:
                return await self._handshake(
                    sock, request.target, request.headers, data[end + 4 :]
                )
        return await self._serve_http(trio.SocketStream(sock), data)

    async def _serve_http(self, stream: trio.SocketStream, data: bytes) -> _Upgrade | None:
        """Answer HTTP requests; return what a WebSocket upgrade needs, if one came."""
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD)
        http.receive_data(data)
        while True:
            with trio.move_on_after(_HEAD_TIMEOUT) as scope:
                try:
                    event = await _next_event(http, stream)
                except h11.RemoteProtocolError as problem:
                    await _refuse(stream, http, problem.error_status_hint, str(problem))
                    return None
            if scope.cancelled_caught or event is None or isinstance(event, h11.ConnectionClosed):
                return None
            assert isinstance(event, h11.Request)
            headers = header_map(event.headers)
            if "websocket" in headers.get("upgrade", "").lower() and event.method == b"GET":
                leftover, _ = http.trailing_data
                target = event.target.decode("latin-1")
                return await self._handshake(stream.socket, target, headers, bytes(leftover))
            await self._http(stream, http, event, headers)
            if http.our_state is h11.MUST_CLOSE or http.their_state is h11.MUST_CLOSE:
                return None
            try:
                http.start_next_cycle()
            except h11.LocalProtocolError:
                return None

    # ---- WebSocket -----------------------------------------------------
    async def _handshake(
        self, sock: trio.socket.SocketType, target: str, headers: dict[str, str], leftover: bytes
    ) -> _Upgrade | None:
        """Check the upgrade request and answer 101 (RFC 6455 §4.2), or refuse it."""
        config = self.state.config
        path = unquote(target.split("?", 1)[0])
        key = headers.get("sec-websocket-key", "")
        if path not in config.ws_paths:
            await _send_refusal(sock, 404, "No WebSocket endpoint at this path")
            return None
        if (
            not key
            or headers.get("sec-websocket-version") != "13"
            or ("upgrade" not in headers.get("connection", "").lower())
        ):
            await _send_refusal(sock, 400, "Not a valid WebSocket upgrade request")
            return None
        if not origin_allowed(headers, config):
            await _send_refusal(sock, 403, "Origin not allowed")
            return None
        offered = parse_offer([headers.get("sec-websocket-protocol", "")])
        protocol, echo = choose_subprotocol(offered, config.subprotocols)
        await _send(sock, switching_protocols(key, echo))
        return protocol, leftover, headers

    async def _run_websocket(
        self,
        sock: trio.socket.SocketType,
        protocol: str | None,
        leftover: bytes,
        headers: dict[str, str],
    ) -> None:
        state = self.state
        config = state.config
        socket = NativeWebSocket(
            sock,
            leftover=leftover,
            max_message_size=config.max_message_size,
            max_backlog=config.write_buffer_size,
        )
        if protocol is None:
            with trio.move_on_after(config.close_timeout):
                await socket.close(
                    CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable"
                )
            state.metrics.closes_by_code(str(CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE)).inc()
            return
        machine = machine_for(protocol, max_operations=config.max_operations)
        await state.run_connection(socket, machine, make_context(headers, protocol))

    # ---- HTTP through the ASGI app ------------------------------------
    async def _http(
        self,
        stream: trio.SocketStream,
        http: h11.Connection,
        request: h11.Request,
        headers: dict[str, str],
    ) -> None:
        target = request.target.decode("latin-1")
        path, _, query = target.partition("?")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": request.http_version.decode(),
            "method": request.method.decode("latin-1"),
            "scheme": "http",
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

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if body_done:
                await trio.sleep_forever()
            event = await _next_event(http, stream)
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            body_done = True
            if isinstance(event, h11.EndOfMessage):
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                response = h11.Response(
                    status_code=message["status"], headers=message.get("headers", [])
                )
                await stream.send_all(http.send(response))
            elif message["type"] == "http.response.body":
                body = b"" if head_only else message.get("body", b"")
                data = http.send(h11.Data(data=body)) if body else b""
                if not message.get("more_body"):
                    data += http.send(h11.EndOfMessage())
                await stream.send_all(data)

        await self.asgi(scope, receive, send)
        # Drain whatever body the app did not read, so the next request parses.
        while http.their_state is h11.SEND_BODY:
            event = await _next_event(http, stream)
            if event is None or isinstance(event, h11.ConnectionClosed):
                break


def _head_complete(data: bytes) -> bool:
    """A whole head (or bare LF line ends, or too much: h11 answers those)."""
    return HEAD_END in data or b"\n\n" in data or len(data) > _MAX_HEAD


async def _read_head(fd: int, data: bytes) -> bytes:
    """Read until the head is complete; what was read if the peer closed first."""
    while not _head_complete(data):
        chunk = await receive_some(fd, try_first=False)
        if not chunk:
            break
        data += chunk
    return data


async def _next_event(http: h11.Connection, stream: trio.SocketStream) -> Any:
    """The next h11 event, reading from *stream* as needed."""
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            if event is h11.PAUSED:
                return None
            return event
        data = await stream.receive_some(_RECEIVE_SIZE)
        http.receive_data(data)
        if not data:
            raise _Closed()


async def _send(sock: trio.socket.SocketType, data: bytes) -> None:
    """Write a short response, straight to the socket (which takes it at once, usually)."""
    fd = sock.fileno()
    view = memoryview(data)
    while True:
        with contextlib.suppress(BlockingIOError):
            view = view[os.write(fd, view) :]
        if not view:
            return
        await trio.lowlevel.wait_writable(fd)


async def _send_refusal(sock: trio.socket.SocketType, status: int, message: str) -> None:
    """Refuse an upgrade; the connection closes after it."""
    with trio.move_on_after(1):
        await _send(sock, refusal(status, message))


async def _refuse(
    stream: trio.SocketStream, http: h11.Connection, status: int, message: str
) -> None:
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


def _address(stream: trio.SocketStream, *, peer: bool) -> tuple[str, int] | None:
    try:
        name = stream.socket.getpeername() if peer else stream.socket.getsockname()
    except OSError:
        return None
    return (name[0], name[1])
