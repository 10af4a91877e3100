"""The ASGI application: HTTP routes and WebSockets for any Trio ASGI server.

Run it under hypercorn's Trio worker. The native host serves its plain HTTP
requests through this same app, so both hosts answer HTTP identically.

Known limit of the ASGI path (measured on hypercorn): a send to a stalled
peer cannot be cancelled, and nothing sends WebSocket ping frames. Set
hypercorn's ``websocket_ping_interval`` below its ``read_timeout`` to drop
dead peers (which also cuts every HTTP stream at ``read_timeout``: its
client sends nothing); ``meshsub-trio serve`` uses the native host instead.
HTTP streams end their operations at the write deadline all the same, and
end their bodies when hypercorn cancels them at ``graceful_timeout``
(docs/http-streams.md, "Hosts").
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping
from functools import partial
from time import perf_counter as clock
from typing import Any
from urllib.parse import parse_qsl

import trio

from .._app import App, Context, EventStream, HttpRequest
from .._config import Config
from .._core._state import ServerState
from .._encoding import dumps
from .._execution._round_robin import preparing_for
from .._metrics import CONTENT_TYPE_LATEST, Metrics
from .._wire import CloseCode, choose_subprotocol, machine_for
from .._wire._multipart import wants_multipart
from .._wire._sse import wants_event_stream
from ._asgi_ws import ASGIWebSocket, Receive, Send
from ._cors import decide_cors, merge_headers
from ._event_stream import serve_event_stream
from ._graphql_http import authenticate, handle_graphql_http
from ._head_get import allowing_head, answer_head
from ._hosts import MISDIRECTED, HostPolicy
from ._http_stream import serve_graphql_sse
from ._multipart_stream import serve_multipart
from ._poll import serve_graphql_poll, wants_poll
from ._requests import bearer_matches, header_map, make_context, origin_allowed
from ._responses import JSON, error_body, send_whole
from ._sse_single import is_single_connection, serve_sse_single
from ._static import static_response

log = logging.getLogger("meshsub_trio.asgi")
#: One line per plain HTTP request, at INFO (both hosts answer HTTP here).
access_log = logging.getLogger("meshsub_trio.access")

#: A refusal after which the connection closes (the request's body may be unread).
_CLOSE = [("connection", "close")]
#: The ``http_version`` values served: HTTP/1.x, and HTTP/2 and 3 where the server
#: speaks them. An HTTP/1 request line naming any other version (``HTTP/2.0`` or
#: ``HTTP/9.9`` parsed by h11) gets 505, as on the native host.
HTTP_VERSIONS = frozenset({"1.0", "1.1", "2", "3"})
#: Liveness, readiness and Prometheus: served on every host, whatever the app.
_OPERATOR_PATHS = ("/healthz", "/readyz", "/metrics")
#: Their methods (HEAD is answered as GET).
_READ_ONLY = [("allow", "GET, HEAD")]

Scope = MutableMapping[str, Any]


class ASGIApp:
    """``ASGIApp(app, config)`` is an ASGI 3 callable serving *app*."""

    def __init__(
        self, app: App, config: Config | None = None, *, metrics: Metrics | None = None
    ) -> None:
        self.state = ServerState(app, config or Config(), metrics)
        self.hosts = _host_policy(self.state.config)

    @classmethod
    def from_state(cls, state: ServerState) -> ASGIApp:
        asgi = cls.__new__(cls)
        asgi.state = state
        asgi.hosts = _host_policy(state.config)
        return asgi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        client = scope.get("client")
        # New costly documents are prepared in turn per connection (``_round_robin``).
        preparing_for.set(tuple(client) if client else None)
        if kind == "http":
            if access_log.isEnabledFor(logging.INFO):
                await self._http_logged(scope, receive, send)
            else:
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
    async def _http_logged(self, scope: Scope, receive: Receive, send: Send) -> None:
        """:meth:`_http`, then one access line: method, path (never the query
        string, where a token may travel), status, duration, peer."""
        began = clock()
        status = 0

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._http(scope, receive, sending)
        finally:
            access_log.info(
                "request",
                extra={
                    "method": scope.get("method"),
                    "path": scope.get("path", "")[:200],
                    "status": status or None,  # None: no answer (the peer left)
                    "duration_s": round(clock() - began, 6),
                    "peer": _peer(scope),
                },
            )

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request: its version and Host first, then CORS, then auth on the
        headers, and only then the body. A HEAD is routed as a GET (``_head_get``)."""
        config = self.state.config
        if scope.get("http_version", "1.1") not in HTTP_VERSIONS:
            message = "HTTP version not supported: use HTTP/1.1"
            await send_whole(send, 505, error_body(message), JSON, _CLOSE)
            return
        path = scope["path"]
        headers = header_map(scope.get("headers", ()))
        if not self.hosts.allows(headers.get("host")):
            await send_whole(send, 421, error_body(MISDIRECTED), JSON, _CLOSE)
            return
        cors = decide_cors(scope["method"], headers, config.allowed_origins)
        if cors.preflight and self._serves(path):
            # Before auth: browsers send no credentials on a preflight.
            await send_whole(send, cors.status, b"", None, cors.headers)
            return
        send = allowing_head(_with_headers(send, cors.headers))
        if scope["method"] == "HEAD":
            await answer_head(partial(self._route, headers=headers), scope, receive, send)
        else:
            await self._route(scope, receive, send, headers)

    def _serves(self, path: str) -> bool:
        """Whether *path* is an HTTP route of the app (what a preflight may ask about)."""
        config = self.state.config
        return (
            path in _OPERATOR_PATHS
            or path in config.http_paths
            or path in self.state.app.http_routes
        )

    async def _route(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        config = self.state.config
        path = scope["path"]
        if path in _OPERATOR_PATHS and scope["method"] != "GET":
            await send_whole(send, 405, error_body("Use GET or HEAD"), JSON, _READ_ONLY)
        elif path == "/healthz":
            await send_whole(send, 200, b'{"status":"ok"}', JSON)
        elif path == "/readyz":
            await self._readiness(send)
        elif path == "/metrics":
            await self._metrics(send, headers, _peer(scope))
        elif path in config.http_paths or path in self.state.app.http_routes:
            await self._authenticated(scope, receive, send, headers)
        elif path in config.ws_paths:
            message = f"{path} speaks GraphQL over WebSocket: send an Upgrade request"
            await send_whole(send, 426, error_body(message), JSON, [("upgrade", "websocket")])
        elif (page := await static_response(scope["method"], path, headers, config)) is not None:
            await send_whole(send, page.status, page.body, page.content_type, page.headers)
        else:
            await send_whole(send, 404, b'{"errors":[{"message":"Not found"}]}', JSON)

    async def _readiness(self, send: Send) -> None:
        """200 while the server should get traffic; 503 with the reason while it
        drains or the app says it cannot serve (its broker is down). ``/healthz``
        stays 200 meanwhile: restarting the process would not fix either."""
        state = self.state
        reason = "shutting down" if state.shutting_down else state.app.readiness()
        if reason is None:
            await send_whole(send, 200, b'{"status":"ready"}', JSON)
        else:
            body = dumps({"status": "not ready", "reason": reason})
            await send_whole(send, 503, body, JSON, [("retry-after", "1")])

    async def _metrics(self, send: Send, headers: dict[str, str], peer: str | None) -> None:
        """Prometheus metrics; behind a bearer token when ``metrics_token`` is set."""
        token = self.state.config.metrics_token
        if token is not None and not bearer_matches(headers.get("authorization"), token):
            _auth_refused(self.state.metrics, "metrics", "no valid bearer token", peer)
            challenge = ("www-authenticate", 'Bearer realm="metrics"')
            await send_whole(send, 401, error_body("Unauthorized"), JSON, [challenge])
            return
        await send_whole(send, 200, self.state.metrics.render(), CONTENT_TYPE_LATEST)

    async def _authenticated(
        self, scope: Scope, receive: Receive, send: Send, headers: dict[str, str]
    ) -> None:
        """GraphQL over HTTP or an app route: refused (401, closing) before any body is read."""
        state = self.state
        context = make_context(headers, "http")
        try:
            refused = await authenticate(state, context)
        except Exception:
            log.exception("authenticate hook failed")
            await send_whole(send, 500, error_body("Internal server error"), JSON, _CLOSE)
            return
        if refused is not None:
            _auth_refused(state.metrics, "http", refused, _peer(scope))
            challenge = ("www-authenticate", "Bearer")
            await send_whole(send, 401, error_body(refused), JSON, [challenge, *_CLOSE])
            return
        try:
            _check_declared_length(headers, state.config.max_message_size)
            body = await _read_body(
                receive, state.config.max_message_size, state.config.body_timeout
            )
        except _BodyRefused as problem:
            await send_whole(send, problem.status, error_body(problem.message), JSON, _CLOSE)
            return
        except _ClientGone:
            return  # nothing runs with part of a body, and no one is left to answer
        if scope["path"] in state.config.http_paths:
            if is_single_connection(scope["method"], headers, scope.get("query_string", b""), body):
                await serve_sse_single(
                    state, scope["method"], headers, scope.get("query_string", b""), body,
                    context, receive, send,
                )  # fmt: skip
            elif wants_event_stream(headers.get("accept")):
                await self._graphql_sse(scope, receive, send, headers, body, context)
            elif wants_multipart(headers.get("accept")):
                await serve_multipart(
                    state, scope["method"], headers, scope.get("query_string", b""), body,
                    context, receive, send,
                )  # fmt: skip
            elif wants_poll(headers.get("accept")):
                await serve_graphql_poll(
                    state, scope["method"], headers, scope.get("query_string", b""), body,
                    context, receive, send,
                )  # fmt: skip
            else:
                await self._graphql(scope, send, headers, body, context)
        else:
            await self._app_route(scope, receive, send, body, context)

    async def _graphql(
        self, scope: Scope, send: Send, headers: dict[str, str], body: bytes, context: Context
    ) -> None:
        try:
            response = await handle_graphql_http(
                self.state, scope["method"], headers, scope.get("query_string", b""), body, context
            )
        except Exception:
            # A bug in a hook or resolver costs this request, never the server.
            log.exception("GraphQL over HTTP request failed")
            await send_whole(send, 500, b'{"errors":[{"message":"Internal server error"}]}', JSON)
            return
        await send_whole(send, response.status, response.body, None, response.headers)

    async def _graphql_sse(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: dict[str, str],
        body: bytes,
        context: Context,
    ) -> None:
        """GraphQL over SSE (``Accept: text/event-stream``): an HTTP stream per operation."""
        method = scope["method"]
        query_string = scope.get("query_string", b"")
        await serve_graphql_sse(
            self.state, method, headers, query_string, body, context, receive, send
        )

    async def _app_route(
        self, scope: Scope, receive: Receive, send: Send, body: bytes, context: Context
    ) -> None:
        """One of the application's own plain HTTP endpoints (already authenticated):
        a whole response, or an :class:`EventStream` driven until it ends."""
        app = self.state.app
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        request = HttpRequest(scope["method"], scope["path"], query, body, context)
        try:
            response = await app.http_routes[scope["path"]](request)
        except Exception:
            log.exception("route %s failed", scope["path"])
            await send_whole(send, 500, b'{"errors":[{"message":"Internal server error"}]}', JSON)
            return
        if isinstance(response, EventStream):
            await serve_event_stream(self.state, response, receive, send)
            return
        await send_whole(
            send, response.status, response.body, response.content_type, response.headers
        )

    # ---- WebSocket -----------------------------------------------------
    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.state
        config = state.config
        await receive()  # websocket.connect
        headers = header_map(scope.get("headers", ()))
        if not self.hosts.allows(headers.get("host")):
            await _refuse_upgrade(scope, send, 421, MISDIRECTED)
            return
        if scope["path"] not in config.ws_paths or not origin_allowed(headers, config):
            await send({"type": "websocket.close", "code": 1008})
            return
        protocol, echo = choose_subprotocol(scope.get("subprotocols") or [], config.subprotocols)
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if echo is not None:
            accept["subprotocol"] = echo
        await send(accept)
        socket = ASGIWebSocket(
            receive, send, max_message_size=config.max_message_size, peer=scope.get("client")
        )
        if protocol is None:
            await socket.close(CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE, "Subprotocol not acceptable")
            state.metrics.closes_by_code(str(CloseCode.SUBPROTOCOL_NOT_ACCEPTABLE)).inc()
            return
        machine = machine_for(protocol, max_operations=config.max_operations)
        context = make_context(headers, protocol, config.keep_headers)
        await state.run_connection(socket, machine, context)


async def _refuse_upgrade(scope: Scope, send: Send, status: int, message: str) -> None:
    """Refuse a WebSocket before it opens: an HTTP response where the server can
    send one (the ``websocket.http.response`` extension), else a plain 403."""
    if "websocket.http.response" not in scope.get("extensions", {}):
        await send({"type": "websocket.close", "code": 1008})
        return
    body = error_body(message)
    headers = [(b"content-type", JSON.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _with_headers(send: Send, extra: tuple[tuple[str, str], ...]) -> Send:
    """*send*, adding *extra* to the response head (whole or streamed, as SSE)."""
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra]

    async def sending(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            merge_headers(headers, raw)
            message = {**message, "headers": headers}
        await send(message)

    return sending


def _peer(scope: Scope) -> str | None:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else None


def _auth_refused(metrics: Metrics, where: str, reason: str, peer: str | None) -> None:
    """Count a refused authentication and log it at INFO: the reason, never the credentials."""
    metrics.auth_failures(where).inc()
    if log.isEnabledFor(logging.INFO):
        fields = {"where": where, "reason": reason[:200], "peer": peer}
        log.info("authentication refused", extra=fields)


def _host_policy(config: Config) -> HostPolicy:
    """Hosts served when only the configuration is known (the native host knows
    its listeners too, and replaces this)."""
    return HostPolicy(config.allowed_hosts, bound=(config.host,))


class _ClientGone(Exception):
    """The body stopped short: its client left, or the host refused its framing (400)."""


class _BodyRefused(Exception):
    """The request body is too large (413) or too slow (408): answer, then close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


def _check_declared_length(headers: dict[str, str], limit: int) -> None:
    """Refuse a body declared too large before reading any of it (and before a
    ``100 Continue`` invites it): the client learns at once, not after *limit* bytes."""
    declared = headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise _BodyRefused(413, "Body too large")


async def _read_body(receive: Receive, limit: int, timeout: float) -> bytes:
    """The whole body, within *limit* bytes and *timeout* seconds for all of it.

    A disconnect before its end raises :class:`_ClientGone`: the part that came
    is never handed on (under hypercorn, a chunked body that breaks its framing
    ends this way too, after hypercorn's own 400)."""
    chunks: list[bytes] = []
    size = 0
    with trio.move_on_after(timeout):
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _BodyRefused(413, "Body too large")
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)
    raise _BodyRefused(408, "Request body not received in time")
