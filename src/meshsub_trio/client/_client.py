"""The public client: ``open_client``, ``Client.subscribe``, ``Client.execute``."""

from __future__ import annotations

import random
import ssl
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from .. import Overflow
from ._buffer import StreamBuffer
from ._errors import ClientClosed, ResultError
from ._notices import Notice
from ._operations import CursorLostPolicy, Kind, Operation, Request, operation_kind
from ._retry import RetryPolicy
from ._session import DEFAULT_MAX_SUBSCRIPTIONS, Session
from ._transport import (
    AVAILABLE,
    PLANNED,
    HeadersProvider,
    LinkSettings,
    ParamsProvider,
    TokenProvider,
    transport_for,
)


class Subscription:
    """One subscription's payloads in order: ``async for payload in stream``.

    Each payload is the ``next`` payload as the server sent it (``data``,
    maybe ``errors``, maybe ``extensions`` with its ``cursor``). Iteration
    ends when the server completes the subscription, and raises the
    operation's typed error if it failed (after the payloads that came before).
    """

    def __init__(self, op: Operation) -> None:
        self._op = op
        assert op.buffer is not None
        self._buffer = op.buffer

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            return await self._buffer.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    @property
    def cursor(self) -> str | None:
        """The newest cursor received: where a resubscription resumes."""
        return self._op.cursor

    @property
    def resumes(self) -> int:
        """Times it was resubscribed with a cursor (after a reconnect or a pause)."""
        return self._op.resumes

    @property
    def restarts(self) -> int:
        """Times it restarted without a cursor (``on_cursor_lost="restart"``)."""
        return self._op.restarts

    @property
    def pauses(self) -> int:
        """Times the consumer fell ``capacity`` behind and the stream paused."""
        return self._op.pauses

    @property
    def dropped(self) -> int:
        """Payloads discarded by ``DROP_OLDEST``/``COALESCE``."""
        return self._buffer.dropped

    @property
    def duplicates(self) -> int:
        """Payloads ignored because their cursor was not after the last one."""
        return self._op.duplicates


class Client:
    """A GraphQL subscription client over one multiplexed, resumable connection.

    Make one with :func:`open_client`. Every operation shares one connection,
    opened on the first operation and closed ``idle_timeout`` seconds after
    the last one ends.
    """

    def __init__(self, session: Session, *, capacity: int, overflow: Overflow,
                 on_cursor_lost: CursorLostPolicy) -> None:  # fmt: skip
        self._session = session
        self._capacity = capacity
        self._overflow = overflow
        self._on_cursor_lost = on_cursor_lost

    @property
    def urls(self) -> tuple[str, ...]:
        return self._session.urls

    @property
    def connected_url(self) -> str | None:
        """The URL of the acknowledged connection, or None between connections."""
        return self._session.connected_url

    @property
    def subprotocol(self) -> str | None:
        """The protocol of the acknowledged connection (``graphql-transport-ws``...)."""
        return self._session.subprotocol

    @property
    def connections(self) -> int:
        """Connections acknowledged so far (the first, then one per reconnect)."""
        return self._session.connections

    @property
    def attempts(self) -> int:
        """Connection attempts so far, failed ones included."""
        return self._session.attempts

    @asynccontextmanager
    async def subscribe(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        extensions: dict[str, Any] | None = None,
        cursor: str | None = None,
        capacity: int | None = None,
        overflow: Overflow | None = None,
        on_cursor_lost: CursorLostPolicy | None = None,
        raise_on_errors: bool = False,
    ) -> AsyncIterator[Subscription]:
        """Subscribe; leaving the block stops it (``complete``/``stop`` on the wire).

        ``cursor`` resumes after a cursor kept from an earlier run (otherwise
        the stream starts live). ``capacity``/``overflow`` bound the payloads
        waiting for this consumer (defaults from :func:`open_client`); with
        ``Overflow.CLOSE`` a cursor stream pauses and resumes losslessly, any
        other stream ends with :class:`SubscriptionOverflow`. ``on_cursor_lost``:
        ``"raise"`` (:class:`CursorLost`) or ``"restart"`` (resubscribe without
        a cursor and say so in a :class:`Restarted` notice).
        ``raise_on_errors``: a payload carrying ``errors`` raises :class:`ResultError`.
        """
        policy = on_cursor_lost or self._on_cursor_lost
        if policy not in ("raise", "restart"):
            raise ValueError('on_cursor_lost must be "raise" or "restart"')
        buffer = StreamBuffer(capacity or self._capacity, overflow or self._overflow)
        op = Operation(
            Request(query, variables, operation_name, extensions),
            Kind.SUBSCRIPTION,
            cursor=cursor,
            buffer=buffer,
            on_cursor_lost=policy,
            raise_on_errors=raise_on_errors,
        )
        key = self._session.add(op)
        buffer.on_drained = lambda: self._session.resume(key)
        try:
            yield Subscription(op)
        finally:
            self._session.remove(key)

    async def execute(
        self,
        query: str,
        variables: dict[str, Any] | None = None,
        operation_name: str | None = None,
        *,
        extensions: dict[str, Any] | None = None,
    ) -> Any:
        """Run a query or mutation over the connection; return its ``data``.

        Raises :class:`ResultError` if the result carried errors (with the
        partial ``data``), :class:`OperationError` if the server refused the
        operation. A query is sent again after a lost connection; a mutation
        never is (:class:`OutcomeUnknown` if the connection was lost after
        sending it).
        """
        kind = operation_kind(query, operation_name)
        if kind is Kind.SUBSCRIPTION:
            raise ValueError("execute() runs queries and mutations; use subscribe()")
        op = Operation(Request(query, variables, operation_name, extensions), kind)
        key = self._session.add(op)
        try:
            await op.done.wait()
        finally:
            self._session.remove(key)
        if op.error is not None:
            raise op.error
        payload = op.result or {}
        if payload.get("errors"):
            raise ResultError(payload)
        return payload.get("data")


@asynccontextmanager
async def open_client(
    url_or_urls: str | Sequence[str],
    *,
    transport: str = "auto",
    connection_params: ParamsProvider = None,
    token: TokenProvider = None,
    headers: HeadersProvider = None,
    retry: RetryPolicy | None = None,
    ping_interval: float = 10.0,
    pong_timeout: float = 5.0,
    connect_timeout: float = 10.0,
    close_timeout: float = 2.0,
    idle_timeout: float = 2.0,
    max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
    capacity: int = 1024,
    overflow: Overflow = Overflow.CLOSE,
    on_cursor_lost: CursorLostPolicy = "raise",
    on_notice: Callable[[Notice], None] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_message_size: int = 4 * 1024 * 1024,
    websocket_retry_after: float = 300.0,
    poll_wait: float = 25.0,
    rng: random.Random | None = None,
) -> AsyncIterator[Client]:
    """A :class:`Client` for the block; leaving it ends every operation and closes with 1000.

    * ``url_or_urls``: one URL or several to fail over between (``ws://``,
      ``wss://``, or ``http(s)://`` which means the same). Each failed attempt
      moves to the next URL.
    * ``transport``: ``"auto"`` (offer graphql-transport-ws, then legacy
      graphql-ws; fall back to SSE for a URL whose upgrade is refused or
      stripped, and try WebSocket again on a reconnect ``websocket_retry_after``
      seconds later), ``"ws"``, ``"legacy"``, ``"sse"`` (graphql-sse, one
      HTTP stream per operation; ws(s):// URLs mean http(s)://) or ``"poll"``
      (long-poll, resuming by cursor between polls). ``"auto"`` also climbs
      down to long-poll when an SSE stream's bytes are held by a proxy.
    * ``poll_wait``: how long the server may hold each poll (0 to 60 s).
    * ``connection_params``, ``token``, ``headers``: a value, or a function
      (plain or async) called before every attempt, so expiring tokens are
      fetched afresh. A token goes out as ``Authorization: Bearer`` in both the
      upgrade headers and the connection params.
    * ``retry``: see :class:`RetryPolicy`; which close codes are retried is the
      table in :data:`CLOSE_CODES`.
    * ``ping_interval``/``pong_timeout``: a dead server or a partition is
      detected within their sum, even when no data flows (0 turns pings off).
      On SSE there is no ping: a stream silent that long (no event, no ``:``
      keep-alive) is dead, so the server's keep-alive must be shorter.
    * ``connect_timeout``: TCP, upgrade and ``connection_ack`` together.
    * ``idle_timeout``: the grace before an unused connection is closed.
    * ``max_subscriptions``, ``capacity``, ``overflow``, ``on_cursor_lost``:
      limits and defaults for :meth:`Client.subscribe`. The default cap (90)
      stays under the server's default of 100 operations per connection, so
      queries and mutations still have room beside the subscriptions.
    """
    if transport in PLANNED or transport not in AVAILABLE:
        transport_for(transport)  # raises the helpful error
    if isinstance(url_or_urls, str):
        urls: tuple[str, ...] = (url_or_urls,)
    else:
        urls = tuple(url_or_urls)
    for number, name in ((ping_interval, "ping_interval"), (idle_timeout, "idle_timeout"),
                         (websocket_retry_after, "websocket_retry_after")):  # fmt: skip
        if number < 0:
            raise ValueError(f"{name} must be >= 0")
    for number, name in ((pong_timeout, "pong_timeout"), (connect_timeout, "connect_timeout"),
                         (close_timeout, "close_timeout")):  # fmt: skip
        if not number > 0:
            raise ValueError(f"{name} must be above 0")
    if not 0 <= poll_wait <= 60:
        raise ValueError("poll_wait must be from 0 to 60 seconds")
    if max_subscriptions < 1 or capacity < 1:
        raise ValueError("max_subscriptions and capacity must be at least 1")
    from ._websocket import websocket_url

    for url in urls:
        websocket_url(url)  # refuse a bad URL now, not on the first operation
    settings = LinkSettings(
        transport=transport,
        ping_interval=ping_interval,
        pong_timeout=pong_timeout,
        connect_timeout=connect_timeout,
        close_timeout=close_timeout,
        max_message_size=max_message_size,
        ssl_context=ssl_context,
        websocket_retry_after=websocket_retry_after,
        poll_wait=poll_wait,
    )
    session = Session(
        urls,
        transport_for(transport),
        settings,
        retry=retry or RetryPolicy(),
        connection_params=connection_params,
        token=token,
        headers=headers,
        idle_timeout=idle_timeout,
        max_subscriptions=max_subscriptions,
        on_notice=on_notice,
        rng=rng,
    )
    client = Client(session, capacity=capacity, overflow=overflow, on_cursor_lost=on_cursor_lost)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            try:
                yield client
            finally:
                await session.aclose(close_timeout + 1.0)
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The session task does not fail; what is here came from the caller's
        # block, so the caller gets it as it was raised, not wrapped in a group.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


__all__ = ["Client", "ClientClosed", "Subscription", "open_client"]
