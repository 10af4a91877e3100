"""The native host: HTTP/1.1 and WebSocket on Trio sockets.

Every request head is read by a sans-IO ``HeadReader``: one deadline for the
whole head (``head_timeout``, 408 if it had begun) and one size limit however
TCP split it (``max_head_size``, 431). A plain WebSocket upgrade (``_upgrade``)
is then answered at once and becomes a connection driven by the core, its
frames read by ``_frames``; anything else goes to h11 (505 for a request
line in any version but HTTP/1.0 and 1.1, which h11 would take; 400 for an
upgrade that carries a body) and from there to the ASGI app through a small
bridge (``_native_http``), so HTTP behaves exactly as under hypercorn.
Unlike the ASGI path, every send here is cancellable and writes to one
socket are joined. A request's ``Host`` is checked before
anything else is done with it (``_hosts``); an open WebSocket keeps only its
context, not its head.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket as stdsocket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote

import h11
import trio

from .._app import Context
from .._core._state import ServerState
from .._execution._round_robin import preparing_for
from .._wire import CloseCode, choose_subprotocol, machine_for, parse_offer
from .._wire._head import Head, HeadError, HeadReader
from .._wire._upgrade import HEAD_END, parse_upgrade, refusal, switching_protocols, valid_key
from ._asgi import ASGIApp
from ._hosts import MISDIRECTED, HostPolicy
from ._native_http import RECEIVE_SIZE, Closed, Stream, refuse, serve_asgi
from ._native_tls import TlsStream, TlsWebSocket, accept_tls, tls_receive
from ._native_ws import NativeWebSocket, close_unwatched, receive_some
from ._requests import header_map, make_context, origin_allowed
from ._tls import TlsContexts, TlsLayer

log = logging.getLogger("meshsub_trio.native")
#: The request-line versions served; any other gets 505 (RFC 9110 §15.6.6).
HTTP_VERSIONS = (b"1.0", b"1.1")
access_log = logging.getLogger("meshsub_trio.access")


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
        with contextlib.suppress(OSError):  # new costly documents go in turn per connection
            preparing_for.set(sock.getpeername())
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
            Closed,
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
                data = os.read(sock.fileno(), RECEIVE_SIZE)
            except BlockingIOError:
                data = b""
            else:
                if not data:
                    return None  # closed before saying anything
        stream: Stream | None = None
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

    async def _serve_http(self, stream: Stream, head: Head) -> _Upgraded | bytes | None:
        """One request through h11: an upgrade, the bytes after it (keep-alive), or None (close)."""
        config = self.state.config
        # The head is complete and within the limit: h11 only meets bigger
        # events in a chunked body (chunk headers, trailers).
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=config.max_head_size)
        http.receive_data(head.head + head.rest)
        try:
            event = http.next_event()
        except h11.RemoteProtocolError as problem:
            await refuse(stream, http, problem.error_status_hint, str(problem))
            await _linger(stream.socket, config.close_timeout)
            return None
        if not isinstance(event, h11.Request):
            return None  # a complete head is always a request or an error
        if event.http_version not in HTTP_VERSIONS:
            # h11 takes any one-digit version (HTTP/9.9, HTTP/2.0) as HTTP/1.1-like:
            # refused here, before anything (an upgrade, the body, the app) reads it.
            await refuse(stream, http, 505, "HTTP version not supported: use HTTP/1.1")
            await _linger(stream.socket, config.close_timeout)
            return None
        headers = header_map(event.headers)
        if "websocket" in headers.get("upgrade", "").lower() and event.method == b"GET":
            if event.http_version != b"1.1":  # RFC 6455 §4.1: an upgrade is HTTP/1.1
                await refuse(stream, http, 400, "A WebSocket upgrade needs HTTP/1.1")
                await _linger(stream.socket, config.close_timeout)
                return None
            if _carries_body(http, headers):
                # What follows the head would be read as frames here, and as a
                # body by a proxy on the way: the two could disagree on both.
                await refuse(stream, http, 400, "A WebSocket upgrade cannot carry a body")
                await _linger(stream.socket, config.close_timeout)
                return None
            leftover, _ = http.trailing_data
            target = event.target.decode("latin-1")
            tls = stream.layer if isinstance(stream, TlsStream) else None
            return await self._handshake(stream.socket, target, headers, bytes(leftover), tls)
        await serve_asgi(self.asgi, stream, http, event, config)
        if "content-length" in headers and "transfer-encoding" in headers:
            # Framed two ways (RFC 9112 §6.1): answered by its chunks, then closed,
            # so nothing after it on this connection is read with a doubtful frame.
            return None
        if http.their_state is h11.SEND_BODY or http.their_state is h11.ERROR:
            # Answered without reading the whole body (refused, too large, too
            # slow) or refused its framing (400): never read it for the next
            # request; close politely.
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
        if not valid_key(key) or "upgrade" not in headers.get("connection", "").lower():
            await _send_refusal(sock, 400, "Not a valid WebSocket upgrade request", path, tls=tls)
            return None
        if headers.get("sec-websocket-version") != "13":
            # RFC 6455 §4.4: say which version this server speaks.
            version = (("sec-websocket-version", "13"),)
            message = "Unsupported WebSocket version: 13 only"
            await _send_refusal(sock, 426, message, path, tls=tls, headers=version)
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


def _carries_body(http: h11.Connection, headers: dict[str, str]) -> bool:
    """Whether an upgrade request has a body: chunked, or a Content-Length but 0
    (h11 frames it; with none its end is the next event, the frames stay unread)."""
    if "transfer-encoding" in headers:
        return True
    return not isinstance(http.next_event(), h11.EndOfMessage)


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
    headers: tuple[tuple[str, str], ...] = (),
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
        await _send(sock, refusal(status, message, headers), tls)
