"""The ASGI application: HTTP routes and WebSockets for any Trio ASGI server.

Run it under hypercorn's Trio worker. The native host serves its plain HTTP
requests through this same app, so both hosts answer HTTP identically.

Known limit of the ASGI path (measured on hypercorn): a send to a stalled
peer cannot be cancelled, and nothing sends WebSocket ping frames. Set
hypercorn's ``websocket_ping_interval`` below its ``read_timeout`` to drop
dead peers; ``meshsub-trio serve`` uses the native host instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import trio

from .._app import App, AuthError, HttpRequest
from .._config import Config
from .._encoding import dumps
from .._metrics import CONTENT_TYPE_LATEST, Metrics
from .._protocol import CloseCode, choose_subprotocol, machine_for
from .._state import ServerState
from ._graphql_http import handle_graphql_http
from ._playground import playground_html
from ._requests import header_map, make_context, origin_allowed
from ._socket import Message, MessageTooBig, SocketClosed

log = logging.getLogger("meshsub_trio.asgi")

JSON = "application/json; charset=utf-8"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ASGIWebSocket:
    """The :class:`MessageSocket` over an ASGI websocket scope."""

    def __init__(self, receive: Receive, send: Send, *, max_message_size: int) -> None:
        self._receive = receive
        self._send = send
        self._max_size = max_message_size
        self._closed = False
        self.on_activity: Callable[[], None] = lambda: None

    async def receive(self) -> Message:
        event = await self._receive()
        self.on_activity()
        if event["type"] == "websocket.disconnect":
            self._closed = True
            raise SocketClosed(event.get("code", 1005), event.get("reason") or "")
        text = event.get("text")
        if text is not None:
            if len(text) > self._max_size or len(text.encode()) > self._max_size:
                raise MessageTooBig()
            return Message(text)
        data = event.get("bytes") or b""
        if len(data) > self._max_size:
            raise MessageTooBig()
        return Message(data, binary=True)

    async def send_frames(self, frames: list[bytes]) -> None:
        if self._closed:
            raise trio.ClosedResourceError("websocket closed")
        for frame in frames:
            await self._send({"type": "websocket.send", "text": frame.decode()})
        # hypercorn's send() after a disconnect returns without a checkpoint;
        # without this a send loop could spin and starve the whole server.
        await trio.lowlevel.checkpoint()

    async def ping(self) -> bool:
        return False

    async def close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def abort(self) -> None:
        self._closed = True


class ASGIApp:
    """``ASGIApp(app, config)`` is an ASGI 3 callable serving *app*."""

    def __init__(
        self, app: App, config: Config | None = None, *, metrics: Metrics | None = None
    ) -> None:
        self.state = ServerState(app, config or Config(), metrics)

    @classmethod
    def from_state(cls, state: ServerState) -> ASGIApp:
        asgi = cls.__new__(cls)
        asgi.state = state
        return asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        try:
            async with self.state.app.lifespan(), self.state.running():
                await send({"type": "lifespan.startup.complete"})
                await receive()  # lifespan.shutdown
                self.state.shutdown()
        except Exception as error:
            log.exception("application lifespan failed")
            await send({"type": "lifespan.startup.failed", "message": str(error)})
            return
        await send({"type": "lifespan.shutdown.complete"})

    # ---- HTTP ----------------------------------------------------------
    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        config = self.state.config
        path = scope["path"]
        method = scope["method"]
        headers = header_map(scope.get("headers", ()))
        if path == "/healthz":
            await _respond(send, 200, b'{"status":"ok"}', JSON)
        elif path == "/metrics":
            await _respond(send, 200, self.state.metrics.render(), CONTENT_TYPE_LATEST)
        elif path in config.playground_paths:
            endpoint = config.ws_paths[-1] if config.ws_paths else "/ws"
            await _respond(send, 200, playground_html(endpoint), "text/html; charset=utf-8")
        elif path in config.http_paths:
            body = await _read_body(receive, config.max_message_size)
            if body is None:
                await _respond(
                    send,
                    413,
                    dumps({"errors": [{"message": "Body too large"}]}),
                    JSON,
                )
                return
            try:
                response = await handle_graphql_http(
                    self.state, method, headers, scope.get("query_string", b""), body
                )
            except Exception:
                # A bug in a hook or resolver costs this request, never the server.
                log.exception("GraphQL over HTTP request failed")
                await _respond(send, 500, b'{"errors":[{"message":"Internal server error"}]}', JSON)
                return
            await _respond(send, response.status, response.body, None, response.headers)
        elif path in self.state.app.http_routes:
            await self._app_route(scope, receive, send, headers)
        elif path in config.ws_paths:
            message = f"{path} speaks GraphQL over WebSocket: send an Upgrade request"
            await _respond(
                send,
                426,
                dumps({"errors": [{"message": message}]}),
                JSON,
                [("upgrade", "websocket")],
            )
        else:
            await _respond(send, 404, b'{"errors":[{"message":"Not found"}]}', JSON)

    async def _app_route(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        """One of the application's own plain HTTP endpoints."""
        app = self.state.app
        body = await _read_body(receive, self.state.config.max_message_size)
        if body is None:
            await _respond(send, 413, dumps({"errors": [{"message": "Body too large"}]}), JSON)
            return
        context = make_context(headers, "http")
        try:
            if app.authenticate is not None:
                context.auth = await app.authenticate(context)
        except AuthError as refusal:
            message = dumps({"errors": [{"message": str(refusal) or "Unauthorized"}]})
            await _respond(send, 401, message, JSON, (("www-authenticate", "Bearer"),))
            return
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        request = HttpRequest(scope["method"], scope["path"], query, body, context)
        try:
            response = await app.http_routes[scope["path"]](request)
        except Exception:
            log.exception("route %s failed", scope["path"])
            await _respond(send, 500, b'{"errors":[{"message":"Internal server error"}]}', JSON)
            return
        await _respond(
            send, response.status, response.body, response.content_type, response.headers
        )

    # ---- WebSocket -----------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        config = state.config
        await receive()  # websocket.connect
        headers = header_map(scope.get("headers", ()))
        if scope["path"] not in config.ws_paths or not origin_allowed(headers, config):
            await send({"type": "websocket.close", "code": 1008})
            return
        protocol, echo = choose_subprotocol(scope.get("subprotocols") or [], config.subprotocols)
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if echo is not None:
            accept["subprotocol"] = echo
        await send(accept)
        socket = ASGIWebSocket(receive, send, max_message_size=config.max_message_size)
        if protocol is None:
            await socket.close(CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
            state.metrics.closes_by_code(str(CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE)).inc()
            return
        machine = machine_for(protocol, max_operations=config.max_operations)
        await state.run_connection(socket, machine, make_context(headers, protocol))


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str | None,
    extra_headers: list[tuple[str, str]] | tuple[tuple[str, str], ...] = (),
) -> None:
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra_headers]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
