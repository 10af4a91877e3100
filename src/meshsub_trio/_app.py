"""The application: a schema, its resolvers and streamers, and its hooks.

An :class:`App` is what a host serves. It is built once, shared by every
connection, and holds no per-connection state.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from graphql import GraphQLObjectType, GraphQLSchema, build_schema

from .brokers._buffer import Overflow

if TYPE_CHECKING:
    from ._intercept import Interceptor


class AuthError(Exception):
    """Raised by an ``authenticate`` hook to refuse a request or connection."""


@dataclass(slots=True)
class Context:
    """What every resolver (as ``info.context``) and streamer sees of its caller.

    One context is made per WebSocket connection (shared by its operations)
    and per HTTP request.
    """

    #: Request headers, names lower-cased. On a WebSocket, the upgrade request's
    #: authorization, host, origin, user-agent and forwarding headers, plus any
    #: named in ``Config.keep_headers``; the rest is not kept for the socket's life.
    headers: Mapping[str, str] = field(default_factory=dict)
    cookies: Mapping[str, str] = field(default_factory=dict)
    #: The ``connection_init`` payload; None over HTTP.
    connection_params: dict[str, Any] | None = None
    #: What the app's ``authenticate`` hook returned (e.g. the user).
    auth: Any = None
    #: ``"http"``, ``"graphql-transport-ws"`` or ``"graphql-ws"``.
    protocol: str = "http"
    #: Free space for the application's own per-connection data.
    state: dict[str, Any] = field(default_factory=dict)
    #: The operation's request ``extensions`` (e.g. a resume ``cursor``); empty
    #: on the connection-wide context, set on an operation's own copy.
    extensions: dict[str, Any] = field(default_factory=dict)
    #: Over TLS with client certificates (``Config.ca_certs``): the verified
    #: certificate as ``ssl.SSLSocket.getpeercert()`` gives it (``subject``,
    #: ``issuer``, ``serialNumber``, ``notAfter``, ...); None without one.
    #: Set on WebSocket and (native host) HTTP request contexts before ``authenticate`` runs.
    tls_peer: dict[str, Any] | None = None

    @property
    def resume_cursor(self) -> str | None:
        """The cursor a reconnecting client asked to resume after, if any."""
        cursor = self.extensions.get("cursor")
        return str(cursor) if isinstance(cursor, str | int) else None


#: ``emit(value)`` or ``emit(value, cursor=...)`` hands one value to the
#: subscription and never blocks; a cursor travels to the client in the
#: ``next`` payload's ``extensions`` so it can resume after it.
Emit = Callable[..., None]


@dataclass(frozen=True, slots=True)
class Cursored:
    """An emitted value with the cursor that identifies it in its stream."""

    value: Any
    cursor: str


def emitter(put: Callable[[Any], Any]) -> Emit:
    """The ``emit`` a streamer gets, in front of a buffer's ``put``."""

    def emit(value: Any, cursor: str | int | None = None) -> None:
        put(value if cursor is None else Cursored(value, str(cursor)))

    return emit


#: A Lacinia-style streamer: emit values; return to complete; raise to fail.
StreamerFn = Callable[[Context, dict[str, Any], Emit], Awaitable[None]]


#: How subscribers of a streamer may share it (see :class:`Streamer`).
Share = Literal["events", "state"] | None


@dataclass(frozen=True)
class Streamer:
    """A streamer, the buffer policy between it and each subscriber, and its sharing.

    ``share=None``: one streamer run per subscription. ``share="events"``:
    subscriptions with the same document, variables and cohort scope (by
    default ``ctx.auth``) form a cohort that runs ONE streamer, executes each
    value once and encodes it once; a late joiner gets the values emitted after
    it joined. ``share="state"``: the same, and a joiner first gets the latest
    value. A shared streamer must depend only on its arguments and the scope.
    """

    fn: StreamerFn
    capacity: int = 256
    policy: Overflow = Overflow.DROP_OLDEST
    share: Share = None


def streamer(
    fn: StreamerFn | None = None,
    *,
    capacity: int = 256,
    policy: Overflow = Overflow.DROP_OLDEST,
    share: Share = None,
) -> Any:
    """Decorate a streamer function, choosing its overflow policy and sharing."""

    def wrap(f: StreamerFn) -> Streamer:
        return Streamer(f, capacity, policy, share)

    return wrap(fn) if fn is not None else wrap


@dataclass(frozen=True)
class StreamerSource:
    """What a streamer-backed subscribe resolver returns: run by the operation."""

    streamer: Streamer
    context: Any
    args: dict[str, Any]

    def __aiter__(self) -> AsyncIterator[Any]:
        raise TypeError("a streamer runs inside meshsub-trio's operation task")


def _identity(root: Any, _info: Any, **_args: Any) -> Any:
    return root


@dataclass
class HttpRequest:
    """A plain HTTP request to one of the app's own routes (already authenticated).

    A ``HEAD`` reaches its route as ``GET``: the host sends the GET's status
    and headers and drops the body (RFC 9110 §9.3.2), so a route handles GET only.
    """

    method: str
    path: str
    query: dict[str, str]
    body: bytes
    context: Context


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One SSE message a streaming route sends: ``data`` (one line per line),
    an optional ``event`` name (None: an unnamed ``message``) and ``id``."""

    data: bytes
    id: str | None = None
    event: str | None = None


#: ``open()`` of an :class:`EventStream`: entered before the response starts
#: (raise :class:`StreamRefused` there to answer with a plain response instead),
#: its iterator drained while the stream lasts, and exited exactly once.
OpenEvents = Callable[[], AbstractAsyncContextManager[AsyncIterator[ServerSentEvent]]]


@dataclass(frozen=True)
class EventStream:
    """What a streaming route returns instead of an :class:`HttpResponse`.

    The host answers ``200 text/event-stream``, sends ``retry: <retry_ms>``
    once, then each event of ``open()``'s iterator, and a ``: keepalive``
    comment every ``keepalive`` seconds (0: none). The iterator ending, the
    client leaving, a stalled reader (``write_timeout``) or shutdown ends it;
    ``open()``'s context manager is exited once, whichever it was.
    """

    open: OpenEvents
    keepalive: float = 15.0
    retry_ms: int | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)


class StreamRefused(Exception):
    """Raised by an :class:`EventStream`'s ``open()``: answer *response* instead
    (nothing was streamed yet; e.g. 410 for an expired ``Last-Event-ID``)."""

    def __init__(self, response: HttpResponse) -> None:
        super().__init__(response.status)
        self.response = response


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse | EventStream]]
Authenticate = Callable[[Context], Awaitable[Any]]
OnConnect = Callable[[Context], Awaitable[Any]]
Lifespan = Callable[[], AbstractAsyncContextManager[Any]]
CohortScope = Callable[[Context], Hashable]


def _auth_scope(context: Context) -> Hashable:
    scope: Hashable = context.auth  # whatever authenticate() returned: hashable by contract
    return scope


def _paths(paths: Sequence[str], name: str) -> tuple[str, ...]:
    if isinstance(paths, str):
        raise TypeError(f"{name} is a sequence of paths, not one string: {paths!r}")
    for path in paths:
        if not isinstance(path, str) or not path.startswith("/"):
            raise ValueError(f"{name}: {path!r} is not a path starting with '/'")
    return tuple(paths)


@asynccontextmanager
async def _no_lifespan() -> AsyncIterator[None]:
    yield


def _always_ready() -> str | None:
    return None


class App:
    """A GraphQL application: schema, resolvers, streamers and hooks.

    ``schema`` is SDL text or a ready :class:`graphql.GraphQLSchema`.
    ``resolvers`` maps type name to field name to resolver; for the
    ``Subscription`` type a resolver may be an async generator function (the
    graphql-core convention). ``streamers`` maps subscription field names to
    Lacinia-style streamers (plain async functions or :class:`Streamer`).

    ``authenticate(ctx)`` runs for every HTTP request and every WebSocket
    ``connection_init``; what it returns becomes ``ctx.auth``, and raising
    :class:`AuthError` refuses (HTTP 401, WebSocket 4403). ``on_connect(ctx)``
    runs after it for WebSockets: return ``False`` to refuse, or a dict to send
    as the ``connection_ack`` payload. ``lifespan()`` is an async context
    manager kept open while the app is served (start background tasks there).
    ``cohort_scope(ctx)`` names who may share a shared streamer's output
    (default: ``ctx.auth``; an unhashable scope means no sharing).
    ``http_routes`` maps a path to ``async handler(HttpRequest) -> HttpResponse``
    for plain HTTP endpoints beside GraphQL (e.g. publishing events from a
    script); requests are authenticated first, like GraphQL over HTTP. A
    handler may return an :class:`EventStream` instead: a Server-Sent Events
    response the host drives until it ends.
    ``interceptors`` is an ordered chain (see :mod:`meshsub_trio.interceptors`)
    that sees every WebSocket and HTTP-stream operation before it executes
    (to refuse it or adjust its context and variables) and after it ends.
    ``graphql_paths`` are the app's own GraphQL endpoints, each answering
    GraphQL over HTTP and WebSocket upgrades (default ``/graphql``; ``()``:
    none), and ``playground_paths`` its own playground pages (default none);
    hosts serve them beside the generic paths of their :class:`Config`
    (``/ws``, ``/api``, ``/playground``).
    ``readiness()`` answers ``None`` while the app can serve, else a short
    reason it cannot (e.g. its broker is down): ``/readyz`` then answers 503
    with it, so a load balancer sends traffic elsewhere, while ``/healthz``
    (liveness) stays 200. It is called per request to ``/readyz``: keep it cheap.
    """

    def __init__(
        self,
        schema: GraphQLSchema | str,
        *,
        resolvers: Mapping[str, Mapping[str, Callable[..., Any]]] | None = None,
        streamers: Mapping[str, StreamerFn | Streamer] | None = None,
        authenticate: Authenticate | None = None,
        on_connect: OnConnect | None = None,
        lifespan: Lifespan | None = None,
        root_value: Any = None,
        cohort_scope: CohortScope = _auth_scope,
        http_routes: Mapping[str, HttpHandler] | None = None,
        interceptors: Sequence[Interceptor] = (),
        graphql_paths: Sequence[str] = ("/graphql",),
        playground_paths: Sequence[str] = (),
        readiness: Callable[[], str | None] | None = None,
    ) -> None:
        self.schema = build_schema(schema) if isinstance(schema, str) else schema
        self.readiness: Callable[[], str | None] = readiness or _always_ready
        self.authenticate = authenticate
        self.on_connect = on_connect
        self.lifespan: Lifespan = lifespan or _no_lifespan
        self.root_value = root_value
        self.cohort_scope = cohort_scope
        self.http_routes: dict[str, HttpHandler] = dict(http_routes or {})
        #: Empty: operations skip the chain (one test per operation, none per event).
        self.interceptors: tuple[Interceptor, ...] = tuple(interceptors)
        #: Where hosts serve this app's own endpoint and playground (``Config.serving``).
        self.graphql_paths: tuple[str, ...] = _paths(graphql_paths, "graphql_paths")
        self.playground_paths: tuple[str, ...] = _paths(playground_paths, "playground_paths")
        for type_name, fields in (resolvers or {}).items():
            for field_name, resolver in fields.items():
                self._attach_resolver(type_name, field_name, resolver)
        for field_name, spec in (streamers or {}).items():
            self._attach_streamer(field_name, spec)

    def _field(self, type_name: str, field_name: str) -> Any:
        graphql_type = self.schema.get_type(type_name)
        if not isinstance(graphql_type, GraphQLObjectType):
            raise ValueError(f"schema has no object type {type_name!r}")
        try:
            return graphql_type.fields[field_name]
        except KeyError:
            raise ValueError(f"type {type_name} has no field {field_name!r}") from None

    def _attach_resolver(
        self, type_name: str, field_name: str, resolver: Callable[..., Any]
    ) -> None:
        graphql_field = self._field(type_name, field_name)
        subscription = self.schema.subscription_type
        if subscription is not None and type_name == subscription.name:
            if not inspect.isasyncgenfunction(resolver) and not callable(resolver):
                raise TypeError(f"{type_name}.{field_name}: resolver must be callable")
            graphql_field.subscribe = resolver
            graphql_field.resolve = graphql_field.resolve or _identity
        else:
            graphql_field.resolve = resolver

    def _attach_streamer(self, field_name: str, spec: StreamerFn | Streamer) -> None:
        subscription = self.schema.subscription_type
        if subscription is None:
            raise ValueError("schema has no Subscription type for streamers")
        graphql_field = self._field(subscription.name, field_name)
        chosen = spec if isinstance(spec, Streamer) else Streamer(spec)

        def subscribe(_root: Any, info: Any, **args: Any) -> StreamerSource:
            return StreamerSource(chosen, info.context, args)

        graphql_field.subscribe = subscribe
        graphql_field.resolve = _identity
