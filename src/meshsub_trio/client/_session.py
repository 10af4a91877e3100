"""The session behind one client: its operations, and the link that carries them.

One task (:meth:`Session.run`) owns the connection's life. It waits until an
operation wants the network (lazy), opens a link to the current URL, sends
every waiting operation once the link is acknowledged (resuming cursor streams
after their last accepted cursor), and closes the link with 1000 once no
operation has been left for ``idle_timeout`` seconds. When a link ends it
consults the close-code table (:mod:`._closecodes`): retried endings wait a
full-jitter backoff and try the next URL; final ones, and a retry policy
that ran out, end every operation with a typed error.

Everything the link reports arrives through :class:`LinkHandler` methods,
which never block: payloads go into each subscription's bounded buffer, and
what must be sent (``complete`` for a paused or ended operation) is queued on
the link, whose writer sends it in order.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import trio

from ._closecodes import Verdict
from ._errors import (
    AuthRefused,
    ClientClosed,
    CursorLost,
    NetworkGone,
    OperationError,
    OutcomeUnknown,
    ResultError,
    ServerRejected,
    SubscriptionOverflow,
    TooManySubscriptions,
)
from ._notices import (
    Connected,
    Connecting,
    Disconnected,
    GaveUp,
    Notice,
    Restarted,
    TransportChanged,
    describe,
)
from ._operations import Kind, Operation, Phase, cursor_code, cursor_of, is_after
from ._retry import RetryPolicy
from ._transport import (
    Disconnect,
    HeadersProvider,
    Link,
    LinkSettings,
    ParamsProvider,
    TokenProvider,
    Transport,
    resolve,
)

log = logging.getLogger("meshsub_trio.client")


#: Subscriptions one client keeps active at once by default. Below the
#: server's operations per connection (100 by default) on purpose: queries
#: and mutations share the connection, and a client at its cap must still
#: be able to run them.
DEFAULT_MAX_SUBSCRIPTIONS = 90


class Session:
    """Operations and links of one client; see the module docstring."""

    def __init__(
        self,
        urls: Sequence[str],
        transport: Transport,
        settings: LinkSettings,
        *,
        retry: RetryPolicy,
        connection_params: ParamsProvider = None,
        token: TokenProvider = None,
        headers: HeadersProvider = None,
        idle_timeout: float = 2.0,
        max_subscriptions: int = DEFAULT_MAX_SUBSCRIPTIONS,
        on_notice: Callable[[Notice], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not urls:
            raise ValueError("give at least one URL")
        self.urls = tuple(urls)
        self.retry = retry
        self._transport = transport
        self._settings = settings
        self._params = connection_params
        self._token = token
        self._headers = headers
        self._idle_timeout = idle_timeout
        self.max_subscriptions = max_subscriptions
        self._on_notice = on_notice
        self._rng = rng or random.Random()
        self._ops: dict[int, Operation] = {}
        self._keys = itertools.count(1)
        self._by_wire: dict[str, Operation] = {}
        self._wire_ids = itertools.count(1)
        self._link: Link | None = None
        self._url_index = 0
        self._changed = trio.Event()
        self._closing = False
        self._stopped = trio.Event()
        #: Links that reached ``connection_ack``, and attempts made, since start.
        self.connections = 0
        self.attempts = 0
        #: The URL and subprotocol of the ready link, if any.
        self.connected_url: str | None = None
        self.subprotocol: str | None = None

    # ---- what the client calls -------------------------------------------
    def add(self, op: Operation) -> int:
        """Register *op*; it is sent as soon as a link is ready. Returns its key."""
        if self._closing:
            raise ClientClosed("the client is closed")
        if op.kind is Kind.SUBSCRIPTION:
            active = sum(1 for o in self._ops.values() if o.kind is Kind.SUBSCRIPTION)
            if active >= self.max_subscriptions:
                raise TooManySubscriptions(self.max_subscriptions)
        key = op.key = next(self._keys)
        self._ops[key] = op
        self._send(op)
        self._wake()
        return key

    def remove(self, key: int) -> None:
        """The caller is done with the operation: stop it (``complete``/``stop``)."""
        op = self._ops.pop(key, None)
        if op is None:
            return
        self._retire(op)
        op.phase = Phase.DONE
        if op.buffer is not None:
            op.buffer.finish(ClientClosed("the subscription was left"))
        self._wake()

    def resume(self, key: int) -> None:
        """A paused subscription's consumer caught up: subscribe again after its cursor."""
        op = self._ops.get(key)
        if op is not None and op.phase is Phase.PAUSED:
            op.phase = Phase.WAITING
            self._send(op)
            self._wake()

    async def aclose(self, timeout: float) -> None:
        """End every operation (ClientClosed), close the link with 1000, stop."""
        self._closing = True
        for key in list(self._ops):
            self._fail(key, ClientClosed("the client was closed"))
        if self._link is not None:
            self._link.close()
        self._wake()
        with trio.CancelScope(shield=True), trio.move_on_after(timeout):
            await self._stopped.wait()

    # ---- LinkHandler -----------------------------------------------------
    def on_next(self, op_id: str, payload: dict[str, Any]) -> None:
        op = self._by_wire.get(op_id)
        if op is None:
            return
        key = op.key
        if op.kind is not Kind.SUBSCRIPTION:
            op.result = payload
            return
        assert op.buffer is not None
        cursor = cursor_of(payload)
        if cursor is not None:
            op.cursored = True
            if op.cursor is not None and not is_after(cursor, op.cursor):
                op.duplicates += 1
                return
        if op.raise_on_errors and payload.get("errors"):
            self._fail(key, ResultError(payload))
            return
        if not op.buffer.offer(payload):
            if op.cursored and op.cursor is not None:
                # Overflow.CLOSE on a cursor stream: stop it and resume after the
                # last accepted cursor once the consumer caught up. Nothing lost.
                self._retire(op)
                op.phase = Phase.PAUSED
                op.pauses += 1
            else:
                self._fail(key, SubscriptionOverflow(op.buffer.capacity))
            return
        if cursor is not None:
            op.cursor = cursor

    def on_error(self, op_id: str, errors: list[dict[str, Any]]) -> None:
        op = self._by_wire.pop(op_id, None)
        if op is None:
            return
        key = op.key
        op.wire_id = None
        op.phase = Phase.WAITING
        lost = cursor_code(errors) if op.sent_cursor is not None else None
        if lost is None:
            self._fail(key, OperationError(errors))
        elif op.on_cursor_lost == "restart":
            self._notify(Restarted(op.request.operation_name, op.sent_cursor, errors))
            op.cursor = None
            op.restarts += 1
            self._send(op)
        else:
            self._fail(key, CursorLost(errors, op.sent_cursor))

    def on_complete(self, op_id: str) -> None:
        op = self._by_wire.pop(op_id, None)
        if op is None:
            return
        op.wire_id = None
        self._finish(op.key)

    def on_transport_changed(self, url: str, transport: str, reason: str) -> None:
        self._notify(TransportChanged(url, transport, reason))

    # ---- the connection's life -------------------------------------------
    async def run(self) -> None:
        """Serve operations until :meth:`aclose` (run it in the client's nursery)."""
        try:
            while True:
                await self._until(lambda: bool(self._ops) or self._closing)
                if self._closing:
                    return
                await self._connect_while_wanted()
        finally:
            self.connected_url = None
            self._stopped.set()

    async def _connect_while_wanted(self) -> None:
        failures = 0
        streak_began = trio.current_time()
        while self._ops and not self._closing:
            url = self.urls[self._url_index]
            try:
                settings = await self._link_settings()
            except Exception as error:  # a credentials callback failed: the caller's error
                self._give_up(error)
                return
            disconnect = await self._attempt(url, failures, settings)
            self._link_lost(disconnect)
            if disconnect.by_client or self._closing:
                self._notify(Disconnected(disconnect, None, None))
                return
            verdict = disconnect.verdict
            if verdict is not Verdict.RETRY:
                self._notify(Disconnected(disconnect, None, None))
                self._give_up(_final_error(disconnect, verdict))
                return
            if failures == 0 or disconnect.lived >= self.retry.stable_after:
                failures, streak_began = 0, trio.current_time()
            failures += 1
            elapsed = trio.current_time() - streak_began
            if self.retry.exhausted(failures, elapsed):
                self._notify(Disconnected(disconnect, None, None))
                self._give_up(NetworkGone(attempts=failures, elapsed=elapsed, last=disconnect))
                return
            delay = self.retry.delay(failures, self._rng)
            self._url_index = (self._url_index + 1) % len(self.urls)
            self._notify(Disconnected(disconnect, delay, self.urls[self._url_index]))
            with trio.move_on_after(delay):
                await self._until(lambda: not self._ops or self._closing)

    async def _attempt(self, url: str, failures: int, settings: LinkSettings) -> Disconnect:
        self.attempts += 1
        self._notify(Connecting(url, failures))
        link = self._transport.open_link(url, settings, self)
        self._link = link
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._drive, link, url)
                disconnect = await link.run()
                nursery.cancel_scope.cancel()
        finally:
            self._link = None
            self.connected_url = self.subprotocol = None
        return disconnect

    async def _drive(self, link: Link, url: str) -> None:
        """Once the link is ready: send what waits; close it after the idle grace."""
        await link.ready.wait()
        self.connections += 1
        self.connected_url, self.subprotocol = url, link.subprotocol
        waiting = [op for op in self._ops.values() if op.phase is Phase.WAITING]
        self._notify(Connected(url, link.subprotocol, len(waiting)))
        for op in waiting:
            self._send(op)
        while True:
            await self._until(lambda: not self._ops or self._closing)
            if not self._closing:
                with trio.move_on_after(self._idle_timeout):
                    await self._until(lambda: bool(self._ops) or self._closing)
            if self._closing or not self._ops:
                link.close()
                return

    async def _link_settings(self) -> LinkSettings:
        """The settings of one attempt, with credentials fetched afresh (tokens expire)."""
        params = await resolve(self._params)
        headers = dict(await resolve(self._headers) or {})
        token = await resolve(self._token)
        if token:
            bearer = f"Bearer {token}"
            params = {"Authorization": bearer, **(params or {})}
            if not any(name.lower() == "authorization" for name in headers):
                headers["Authorization"] = bearer
        return replace(self._settings, connection_params=params, headers=headers)

    # ---- bookkeeping -----------------------------------------------------
    def _send(self, op: Operation) -> None:
        """Send *op* now if it waits and a link is ready (otherwise on the next one)."""
        link = self._link
        if op.phase is not Phase.WAITING or link is None or not link.ready.is_set():
            return
        wire_id = str(next(self._wire_ids))
        op.wire_id = wire_id
        op.phase = Phase.SENT
        if op.sends and op.cursor is not None:
            op.resumes += 1
        op.sends += 1
        self._by_wire[wire_id] = op
        link.subscribe(wire_id, op.wire_payload())

    def _retire(self, op: Operation) -> None:
        """Stop *op* on the wire if it is live there (queues ``complete``)."""
        if op.wire_id is None:
            return
        self._by_wire.pop(op.wire_id, None)
        if self._link is not None:
            self._link.complete(op.wire_id)
        op.wire_id = None

    def _link_lost(self, disconnect: Disconnect) -> None:
        """Every operation on the lost link waits for the next one (mutations fail)."""
        self._by_wire.clear()
        for key, op in list(self._ops.items()):
            if op.phase is not Phase.SENT:
                continue
            op.wire_id = None
            op.phase = Phase.WAITING
            if op.kind is Kind.MUTATION:
                self._fail(key, OutcomeUnknown(disconnect))

    def _finish(self, key: int) -> None:
        op = self._ops.pop(key, None)
        if op is None:
            return
        op.phase = Phase.DONE
        if op.buffer is not None:
            op.buffer.finish()
        op.done.set()
        self._wake()

    def _fail(self, key: int, error: BaseException) -> None:
        op = self._ops.pop(key, None)
        if op is None:
            return
        self._retire(op)
        op.phase = Phase.DONE
        op.error = error
        if op.buffer is not None:
            op.buffer.finish(error)
        op.done.set()
        self._wake()

    def _give_up(self, error: BaseException) -> None:
        self._notify(GaveUp(error))
        for key in list(self._ops):
            self._fail(key, error)

    def _notify(self, notice: Notice) -> None:
        log.info("%s", describe(notice))
        if self._on_notice is not None:
            self._on_notice(notice)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()


def _final_error(disconnect: Disconnect, verdict: Verdict) -> BaseException:
    if verdict is Verdict.AUTH:
        return AuthRefused(
            disconnect.url,
            code=disconnect.code,
            reason=disconnect.reason,
            status=disconnect.status,
            payload=disconnect.refusal,
        )
    return ServerRejected(
        disconnect.url, code=disconnect.code, reason=disconnect.reason, status=disconnect.status
    )
