"""Meshery's Server-Sent Events routes (meshery-api.md §6), on the app's own feeds.

* ``GET /api/system/events/subscribe``: the caller's events as they are
  published, each an unnamed ``data:`` message carrying meshkit's JSON (the
  snake_case ``events.Event`` Meshery's handler sends, not the GraphQL
  ``Event``), with an ``id:`` line holding its resume cursor; ``retry: <ms>``
  once at the start, ``: keepalive`` every ``keepalive`` seconds. No backlog
  (as in Meshery), unless the request carries ``Last-Event-ID``: then every
  event after that cursor first, then live ones, none twice. A cursor that
  can no longer be served is a plain JSON error before any streaming, so an
  EventSource stops instead of reconnecting in a loop: 410 ``CURSOR_EXPIRED``
  (with ``oldest``: reload the history, then reconnect without an id) or 400
  ``CURSOR_INVALID`` (not a cursor of this server, e.g. it restarted in memory).
  A reader that falls ``SSE_CAPACITY`` events behind has its stream ended
  (never a silent drop); it reconnects with ``Last-Event-ID`` and misses nothing.
* ``GET /api/system/controllers/status/subscribe?connectionIds=a,b``: the UI's
  contract (``ui/lib/controllersStatusSubscription.ts``): every frame the full
  array of ``{connectionId, controller, status, version}`` for those connections
  (all when absent; a comma list or a JSON array), first at once, then on each
  change. No ids: a reconnect gets the full array anyway.

Authenticated like every app route; per-user topics mean another user's
events never reach a stream. Controllers are those of the caller's own
contexts' connections (another user's named connection is left out exactly as
an unknown one), unless the caller feeds the cluster: see
:mod:`.._model._connections`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLError

from ..._app import (
    EventStream,
    HttpHandler,
    HttpRequest,
    HttpResponse,
    ServerSentEvent,
    StreamRefused,
)
from ..._encoding import JSONDecodeError, dumps, loads
from ...brokers._buffer import Overflow
from .._auth import current_user
from .._model import _connections as connections
from .._model import _topics as topics
from .._model._cursors import open_feed
from .._model._model import Model

EVENTS_SUBSCRIBE_PATH = "/api/system/events/subscribe"
CONTROLLERS_SUBSCRIBE_PATH = "/api/system/controllers/status/subscribe"
#: Meshery's keep-alive period.
KEEPALIVE_S = 15.0
#: How long an EventSource waits before reconnecting (sent once as ``retry:``).
RETRY_MS = 1000
#: Live events buffered per stream before a lagging reader's stream is ended.
SSE_CAPACITY = 1024

#: GraphQL ``Event`` field -> meshkit's JSON key, in meshkit's struct order.
_MESHKIT_KEYS = (
    ("id", "id"),
    ("userID", "user_id"),
    ("systemID", "system_id"),
    ("operationID", "operation_id"),
    ("category", "category"),
    ("action", "action"),
    ("description", "description"),
    ("severity", "severity"),
    ("status", "status"),
    ("actedUpon", "acted_upon"),
    ("metadata", "metadata"),
    ("createdAt", "created_at"),
    ("updatedAt", "updated_at"),
    ("deletedAt", "deleted_at"),
)
#: meshkit tags these ``omitempty``.
_OMIT_EMPTY = frozenset({"user_id", "deleted_at"})


def meshkit_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """An event as meshkit's ``events.Event`` marshals it (snake_case keys)."""
    shaped: dict[str, Any] = {}
    for ours, theirs in _MESHKIT_KEYS:
        value = event.get(ours)
        if theirs in _OMIT_EMPTY and not value:
            continue
        shaped[theirs] = value if theirs != "metadata" else (value or {})
    return shaped


def cursor_refusal(error: GraphQLError) -> HttpResponse:
    """A cursor the feed cannot serve: 410 when expired, else 400, with the reason."""
    extensions = dict(error.extensions or {})
    status = 410 if extensions.get("code") == "CURSOR_EXPIRED" else 400
    body = {"errors": [{"message": error.message, "extensions": extensions}]}
    return HttpResponse(status, dumps(body))


class _SseEvents:
    """Feed entries as SSE messages (a plain class: nothing to finalize if abandoned)."""

    def __init__(self, entries: Any, shape: Callable[[Any], bytes]) -> None:
        self._entries = entries
        self._shape = shape

    def __aiter__(self) -> _SseEvents:
        return self

    async def __anext__(self) -> ServerSentEvent:
        cursor, message = await self._entries.__anext__()
        return ServerSentEvent(self._shape(message), None if cursor is None else str(cursor))


def _event_data(message: Mapping[str, Any]) -> bytes:
    return dumps(meshkit_event(message["event"]))


def _events_stream(model: Model, user_id: str, cursor: str | None) -> Callable[[], Any]:
    @asynccontextmanager
    async def open_events() -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        async with AsyncExitStack() as stack:
            try:
                entries = await stack.enter_async_context(
                    open_feed(
                        model.broker,
                        topics.events(user_id),
                        cursor,
                        capacity=SSE_CAPACITY,
                        policy=Overflow.CLOSE,
                    )
                )
            except GraphQLError as error:
                raise StreamRefused(cursor_refusal(error)) from None
            yield _SseEvents(entries, _event_data)

    return open_events


#: The connection ids a stream may show, read at each frame (None: every one).
Scope = Callable[[], set[str] | None]


class _ControllerFrames:
    """The full filtered array at once, then again whenever it changes."""

    def __init__(self, model: Model, changes: Any, scope: Scope) -> None:
        self._model = model
        self._changes = changes
        self._scope = scope
        self._last: list[dict[str, Any]] | None = None

    def _render(self) -> list[dict[str, Any]]:
        return [
            {
                "connectionId": item["connectionID"],
                "controller": item["controller"],
                "status": item["status"],
                "version": item.get("version"),
            }
            for item in self._model.controller_items(self._scope())
        ]

    def __aiter__(self) -> _ControllerFrames:
        return self

    async def __anext__(self) -> ServerSentEvent:
        while True:
            if self._last is not None:
                await self._changes.__anext__()
            items = self._render()
            if items != self._last:
                self._last = items
                return ServerSentEvent(dumps(items))


def _connection_ids(query: Mapping[str, str]) -> set[str] | None:
    raw = (query.get("connectionIds") or query.get("connectionID") or "").strip()
    if not raw:
        return None
    if raw.startswith("["):
        try:
            values = loads(raw)
        except JSONDecodeError:
            values = None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValueError("connectionIds must be a comma list or a JSON array of strings")
        return set(values)
    return {part.strip() for part in raw.split(",") if part.strip()}


def _controllers_stream(model: Model, scope: Scope) -> Callable[[], Any]:
    @asynccontextmanager
    async def open_controllers() -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        async with model.broker.subscribe(
            topics.CONTROLLERS, capacity=1, policy=Overflow.COALESCE
        ) as changes:
            yield _ControllerFrames(model, changes, scope)

    return open_controllers


@dataclass
class SseOptions:
    """The SSE routes' settings, read at each request (so tests and hosts may change them)."""

    #: Seconds between ``: keepalive`` comments (0: none).
    keepalive: float = KEEPALIVE_S
    #: The ``retry:`` an EventSource waits before reconnecting, in milliseconds.
    retry_ms: int = RETRY_MS


def make_sse_routes(
    model: Model,
    options: SseOptions | None = None,
    may_feed_cluster: Callable[[str], bool] = lambda _user_id: True,
) -> dict[str, HttpHandler]:
    """The streaming routes of :mod:`._sse_routes`, with *options*; *may_feed_cluster*
    says who sees every connection's controllers."""
    chosen = options if options is not None else SseOptions()

    def stream(open_events: Callable[[], Any]) -> EventStream:
        return EventStream(open_events, keepalive=chosen.keepalive, retry_ms=chosen.retry_ms)

    async def events(request: HttpRequest) -> EventStream:
        user = current_user(request.context)
        cursor = request.context.headers.get("last-event-id") or None
        return stream(_events_stream(model, user.id, cursor))

    async def controllers(request: HttpRequest) -> EventStream:
        user = current_user(request.context)
        wanted = _connection_ids(request.query)
        sees_all = may_feed_cluster(user.id)
        return stream(
            _controllers_stream(
                model,
                lambda: connections.visible_connections(model, user.id, sees_all, wanted),
            )
        )

    return {
        EVENTS_SUBSCRIBE_PATH: _get_only(events),
        CONTROLLERS_SUBSCRIBE_PATH: _get_only(controllers),
    }


def _get_only(handler: Callable[[HttpRequest], Awaitable[EventStream]]) -> HttpHandler:
    """GET only (405 with ``Allow``); a ValueError is the client's mistake (400)."""

    async def route(request: HttpRequest) -> HttpResponse | EventStream:
        if request.method != "GET":
            message = f"{request.method} is not allowed here; use GET"
            body = dumps({"errors": [{"message": message}]})
            return HttpResponse(405, body, headers=[("allow", "GET")])
        try:
            return await handler(request)
        except ValueError as error:
            return HttpResponse(400, dumps({"errors": [{"message": str(error)}]}))

    return route
