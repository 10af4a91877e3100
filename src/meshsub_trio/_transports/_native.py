"""The native host: HTTP/1.1 and WebSocket on Trio sockets.

Every request head is read by a sans-IO ``HeadReader``: one deadline for the
whole head (``head_timeout``, 408 if it had begun) and one size limit however
TCP split it (``max_head_size``, 431). A plain WebSocket upgrade (``_upgrade``)
is then answered at once and becomes a connection driven by the core, its
frames read by ``_frames``; anything else goes to h11 and from there to the
ASGI app through a small bridge, so HTTP behaves exactly as under hypercorn.
Unlike the ASGI path, every send here is cancellable and writes to one socket
are joined. A request's ``Host`` is checked before anything else is done with
it (``_hosts``); an open WebSocket keeps only its context, not its head.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as stdsocket
from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

import h11
import trio

from .._app import Context
from .._core._state import ServerState
from .._wire import CloseCode, choose_subprotocol, machine_for, parse_offer
from .._wire._head import Head, HeadError, HeadReader
from .._wire._upgrade import HEAD_END, parse_upgrade, refusal, switching_protocols
from ._asgi import ASGIApp
from ._hosts import MISDIRECTED, HostPolicy
from ._native_tls import TlsStream, TlsWebSocket, accept_tls, tls_receive
from ._native_ws import NativeWebSocket, close_unwatched, receive_some
from ._requests import header_map, make_context, origin_allowed, request_tls_peer
from ._tls import TlsContexts, TlsLayer

log = logging.getLogger("meshsub_trio.native")
access_log = logging.getLogger("meshsub_trio.access")

_RECEIVE_SIZE = 65536
#: What plain HTTP is read from: a Trio socket stream, or the same over TLS.
_Stream = trio.SocketStream | TlsStream


class _Closed(Exception):
    """The peer went away (or stopped reading) mid-request."""


@dataclass(slots=True)
class _Upgraded:
    """An accepted upgrade: all a WebSocket keeps of its request (no head, no headers)."""

    socket: NativeWebSocket
    #: The subprotocol to speak; None: none in common (close 4406, no context).
    protocol: str | None
    context: Context | None


class NativeHost:
    """Serves one :class:`ServerState` on Trio sockets."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.asgi = ASGIApp.from_state(state)
        self.hosts = self.asgi.hosts
        config = state.config
        #: The server's TLS context (None: plain TCP); SIGHUP reloads it in place.
        self.tls: TlsContexts | None = (
            TlsContexts(config.certfile, config.keyfile, config.ca_certs, config.client_cert)
            if config.certfile
            else None
        )

    def serving(self, addresses: Iterable[str]) -> None:
        """The addresses the listeners actually bound: a wildcard one (0.0.0.0, ::)
        serves any Host unless ``allowed_hosts`` lists some (see ``_hosts``)."""
        config = self.state.config
        self.hosts = HostPolicy(config.allowed_hosts, bound=(config.host, *addresses))
        self.asgi.hosts = self.hosts  # plain requests: the same rule

    async def handle_socket(self, sock: trio.socket.SocketType) -> None:
        """One TCP connection: HTTP requests until an upgrade or a close.

        Nothing raised here may reach the server: a broken peer or a bug costs
        this connection only.
        """
        try:
            if self.tls is None:
                upgraded = await self._serve(sock)
            else:
                upgraded = await self._serve_tls(sock, self.tls)
            if upgraded is not None:
                # The head and the HTTP parser are gone by now: an idle WebSocket
                # keeps only what it needs (memory per connection is a feature here).
                await self._run_websocket(upgraded)
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

    async def _serve_tls(
        self, sock: trio.socket.SocketType, contexts: TlsContexts
    ) -> _Upgraded | None:
        """A TLS connection: the handshake (under the head deadline), then as ``_serve``."""
        layer = TlsLayer(contexts.context)  # the context of the moment: reloads apply here
        data = await accept_tls(sock, layer, self.state.config.head_timeout)
        if data is None:
            return None
        return await self._serve(sock, layer, data)

    async def _serve(
        self, sock: trio.socket.SocketType, tls: TlsLayer | None = None, data: bytes = b""
    ) -> _Upgraded | None:
        """Requests until an upgrade (returned) or the end of the connection (None).

        The first head has usually arrived by the time this task runs: then it
        is read at once, with no deadline to arm. A WebSocket never needs a
        ``SocketStream``: only the h11 path makes one.
        """
        if tls is None:
            try:
                data = os.read(sock.fileno(), _RECEIVE_SIZE)
            except BlockingIOError:
                data = b""
            else:
                if not data:
                    return None  # closed before saying anything
        stream: _Stream | None = None
        while True:
            head = await self._read_head(sock, data, tls)
            if head is None:
                return None
            if head.head.endswith(HEAD_END):
                request = parse_upgrade(head.head[: -len(HEAD_END)])
                if request is not None:
                    return await self._handshake(
                        sock, request.target, request.headers, head.rest, tls
                    )
            if stream is None:
                stream = trio.SocketStream(sock) if tls is None else TlsStream(sock, tls)
            served = await self._serve_http(stream, head)
            if not isinstance(served, bytes):
                return served
            data = served  # kept alive: the bytes after the request begin the next

    async def _read_head(
        self, sock: trio.socket.SocketType, data: bytes, tls: TlsLayer | None = None
    ) -> Head | None:
        """The next request head, beginning with *data*; None to close the connection.

        One deadline for the whole head, however slowly it trickles in. A head
        that began but did not finish in time gets a 408; one too large (431) or
        not a request at all (400) is refused as soon as that is known. Silence
        (an idle keep-alive) or a peer that closed ends without an answer.
        """
        config = self.state.config
        reader = HeadReader(config.max_head_size)
        try:
            head = reader.receive_data(data)
            if head is not None:
                return head
            fd = sock.fileno()
            with trio.move_on_after(config.head_timeout):
                while head is None:
                    chunk = await (
                        receive_some(fd, try_first=False)
                        if tls is None
                        else tls_receive(tls, fd, try_first=False)
                    )
                    if not chunk:
                        return None
                    head = reader.receive_data(chunk)
                return head
        except HeadError as problem:
            await _send_refusal(sock, problem.status, problem.message, tls=tls)
            await _linger(sock, config.close_timeout)
            return None
        if reader.started:
            await _send_refusal(sock, 408, "Request head not received in time", tls=tls)
            await _linger(sock, config.close_timeout)
        return None

    async def _serve_http(self, stream: _Stream, head: Head) -> _Upgraded | bytes | None:
        """One request through h11: an upgrade, the bytes after it (keep-alive), or None (close)."""
        config = self.state.config
        # The head is complete and within the limit: h11 only meets bigger
        # events in a chunked body (chunk headers, trailers).
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_head_size)
        http.receive_data(head.head + head.rest)
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as problem:
            await _refuse(stream, http, problem.error_status_hint, str(problem))
            await _linger(stream.socket, config.close_timeout)
            return None
        if not isinstance(event, h11.Request):
            return None  # a complete head is always a request or an error
        headers = header_map(event.headers)
        if "websocket" in headers.get("upgrade", "").lower() and event.method == b"GET":
            leftover, _ = http.trailing_data
            target = event.target.decode("latin-1")
            tls = stream.layer if isinstance(stream, TlsStream) else None
            return await self._handshake(stream.socket, target, headers, bytes(leftover), tls)
        await self._http(stream, http, event)
        if http.their_state is h11.SEND_BODY:
            # Answered without reading the whole body (refused, too large, too
            # slow): never read it for the next request; close politely.
            await _linger(stream.socket, config.close_timeout)
            return None
        if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
            return None
        leftover, _ = http.trailing_data
        return bytes(leftover)

    # ---- WebSocket -----------------------------------------------------
    async def _handshake(
        self,
        sock: trio.socket.SocketType,
        target: str,
        headers: dict[str, str],
        leftover: bytes,
        tls: TlsLayer | None = None,
    ) -> _Upgraded | None:
        """Check the upgrade request and answer 101 (RFC 6455 §4.2), or refuse it."""
        config = self.state.config
        if not self.hosts.allows(headers.get("host")):
            await _send_refusal(sock, 421, MISDIRECTED, unquote(target.split("?", 1)[0]), tls=tls)
            return None
        path = unquote(target.split("?", 1)[0])
        key = headers.get("sec-websocket-key", "")
        if path not in config.ws_paths:
            await _send_refusal(sock, 404, "No WebSocket endpoint at this path", path, tls=tls)
            return None
        if (
            not key
            or headers.get("sec-websocket-version") != "13"
            or ("upgrade" not in headers.get("connection", "").lower())
        ):
            await _send_refusal(sock, 400, "Not a valid WebSocket upgrade request", path, tls=tls)
            return None
        if not origin_allowed(headers, config):
            await _send_refusal(sock, 403, "Origin not allowed", path, tls=tls)
            return None
        offered = parse_offer([headers.get("sec-websocket-protocol", "")])
        protocol, echo = choose_subprotocol(offered, config.subprotocols)
        await _send(sock, switching_protocols(key, echo), tls)
        socket: NativeWebSocket
        if tls is None:
            socket = NativeWebSocket(
                sock,
                leftover=leftover,  # bytes read past the head: the first frames
                max_message_size=config.max_message_size,
                max_backlog=config.write_buffer_size,
            )
        else:
            socket = TlsWebSocket(
                sock,
                tls,
                leftover=leftover,
                max_message_size=config.max_message_size,
                max_backlog=config.write_buffer_size,
            )
        context = (
            make_context(headers, protocol, config.keep_headers) if protocol is not None else None
        )
        if context is not None and tls is not None:
            context.tls_peer = tls.peer_cert
        return _Upgraded(socket, protocol, context)

    async def _run_websocket(self, upgraded: _Upgraded) -> None:
        state = self.state
        config = state.config
        socket, protocol, context = upgraded.socket, upgraded.protocol, upgraded.context
        if protocol is None or context is None:
            with trio.move_on_after(config.close_timeout):
                await socket.close(
                    CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable"
                )
            state.metrics.closes_by_code(str(CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE)).inc()
            return
        machine = machine_for(protocol, max_operations=config.max_operations)
        await state.run_connection(socket, machine, context)

    # ---- HTTP through the ASGI app ------------------------------------
    async def _http(self, stream: _Stream, http: h11.Connection, request: h11.Request) -> None:
        """One plain request answered by the ASGI app; every write under ``write_timeout``.

        The app reads the body (its deadline is the app's); a response that
        starts while part of the body is still unread says ``connection:
        close``, since that body is never read.
        """
        write_timeout = self.state.config.write_timeout
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

        async def write(data: bytes) -> None:
            with trio.move_on_after(write_timeout):
                await stream.send_all(data)
                return
            raise _Closed()  # a peer that does not read its answer

        async def receive() -> dict[str, Any]:
            nonlocal body_done
            if body_done:
                # A streamed response (SSE) learns here that its client left.
                await _until_closed(http, stream, self.state.config.max_head_size)
                return {"type": "http.disconnect"}
            if http.they_are_waiting_for_100_continue:
                # Asked for only once the request got past its checks (Host, auth).
                await write(http.send(h11.InformationalResponse(status_code=100, headers=[])))
            event = await _next_event(http, stream)
            if isinstance(event, h11.Data):
                return {"type": "http.request", "body": bytes(event.data), "more_body": True}
            body_done = True
            if isinstance(event, h11.EndOfMessage):
                return {"type": "http.request", "body": b"", "more_body": False}
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal body_done
            if message["type"] == "http.response.start":
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
            await self.asgi(scope, receive, send)
        finally:
            request_tls_peer.reset(token)


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


async def _until_closed(http: h11.Connection, stream: _Stream, limit: int) -> None:
    """Return when the peer closes its side (or resets). What it sends meanwhile (a
    pipelined request) is kept for h11, up to *limit* bytes; past that, stop reading."""
    while len(http.trailing_data[0]) < limit:
        try:
            data = await stream.receive_some(_RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return
        if not data:
            return
        http.receive_data(data)
    await trio.sleep_forever()


async def _linger(sock: trio.socket.SocketType, seconds: float) -> None:
    """Close after an answer the peer may still be sending into, without losing the answer.

    Closing with unread bytes makes the kernel reset the connection, which
    can destroy the response before the peer reads it. So stop sending, and
    read and drop what still comes for at most *seconds* (or until it closes).
    """
    with contextlib.suppress(OSError):
        sock.shutdown(stdsocket.SHUT_WR)
    fd = sock.fileno()
    with trio.move_on_after(seconds):
        while await receive_some(fd):
            pass


async def _next_event(http: h11.Connection, stream: _Stream) -> Any:
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


async def _send(sock: trio.socket.SocketType, data: bytes, tls: TlsLayer | None = None) -> None:
    """Write a short response, straight to the socket (which takes it at once, usually)."""
    if tls is not None:
        data = tls.encrypt(data)
    fd = sock.fileno()
    view = memoryview(data)
    while True:
        with contextlib.suppress(BlockingIOError):
            view = view[os.write(fd, view) :]
        if not view:
            return
        await trio.lowlevel.wait_writable(fd)


async def _send_refusal(
    sock: trio.socket.SocketType,
    status: int,
    message: str,
    path: str | None = None,
    *,
    tls: TlsLayer | None = None,
) -> None:
    """Refuse an upgrade (or a bad head); the connection closes after it. One access
    line at INFO: a refused upgrade (a wrong Origin, Host or path) is a question an
    operator gets asked."""
    if access_log.isEnabledFor(logging.INFO):
        try:
            name = sock.getpeername()
            peer: str | None = f"{name[0]}:{name[1]}"
        except OSError:
            peer = None
        fields = {"path": path[:200] if path else None, "status": status, "reason": message}
        access_log.info("refused", extra={**fields, "peer": peer})
    with trio.move_on_after(1):
        await _send(sock, refusal(status, message), tls)


async def _refuse(stream: _Stream, http: h11.Connection, status: int, message: str) -> None:
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


def _address(stream: _Stream, *, peer: bool) -> tuple[str, int] | None:
    try:
        name = stream.socket.getpeername() if peer else stream.socket.getsockname()
    except OSError:
        return None
    return (name[0], name[1])
