"""The WebSocket link: one trio-websocket connection driving a sans-IO machine.

One link is one nursery: the reader (the link's body), a writer (the only
task that sends operation frames, in order) and a heartbeat. The heartbeat
sends a probe every ``ping_interval`` seconds (graphql-transport-ws: the
protocol's ``ping``, answered by the GraphQL server itself, not by a proxy in
front of it; legacy graphql-ws, which has no ping: a WebSocket ping frame). If
nothing at all arrives within ``pong_timeout`` of a probe, the link is
aborted. A partition is therefore noticed within ``ping_interval +
pong_timeout`` of its start, however quiet the subscriptions are.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio

from ._closecodes import ABNORMAL, ACK_TIMEOUT, BAD_RESPONSE
from ._transport import Disconnect, LinkHandler, LinkSettings
from ._upgrade import WatchedStream, open_stream, target_of, upgrade
from ._wire import (
    LEGACY_WS,
    TRANSPORT_WS,
    Acknowledged,
    ClientMachine,
    Completed,
    Failed,
    Next,
    ProtocolViolation,
    Refused,
    Reply,
    machine_for,
)

if TYPE_CHECKING:
    from trio_websocket import CloseReason, WebSocketConnection

#: Subprotocols offered per transport name, in order of preference.
OFFERS: dict[str, tuple[str, ...]] = {
    "auto": (TRANSPORT_WS, LEGACY_WS),
    "ws": (TRANSPORT_WS,),
    "legacy": (LEGACY_WS,),
}
_SCHEMES = {"ws": "ws", "wss": "wss", "http": "ws", "https": "wss"}
_CLOSE = None  # the writer's "close now" sentinel


def websocket_url(url: str) -> str:
    """*url* with an http(s) scheme turned into ws(s); other schemes are refused."""
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf exception of a (nested) group."""
    found: BaseException = group
    while isinstance(found, BaseExceptionGroup):
        found = found.exceptions[0]
    return found


def _root_cause(error: BaseException) -> str:
    """The innermost reason (e.g. ``ConnectionRefusedError``) behind a connect failure."""
    while True:
        inner = error.__cause__
        if isinstance(inner, BaseExceptionGroup) and inner.exceptions:
            inner = inner.exceptions[0]
        if inner is None:
            break
        error = inner
    return f"{type(error).__name__}: {error}".rstrip(": ")


class WebSocketTransport:
    """Links over one multiplexed WebSocket (both GraphQL WebSocket protocols)."""

    def __init__(self) -> None:
        try:
            import trio_websocket  # noqa: F401
        except ImportError as error:
            raise ImportError(
                "the WebSocket client needs trio-websocket: pip install 'meshsub-trio[client]'"
            ) from error

    def open_link(self, url: str, settings: LinkSettings, handler: LinkHandler) -> WebSocketLink:
        return WebSocketLink(url, settings, handler)


class WebSocketLink:
    """One WebSocket connection attempt; see the module docstring."""

    def __init__(self, url: str, settings: LinkSettings, handler: LinkHandler) -> None:
        if settings.transport not in OFFERS:
            raise ValueError(f"the WebSocket link does not speak {settings.transport!r}")
        self.url = url
        self.ready = trio.Event()
        self.subprotocol: str | None = None
        self._ws_url = websocket_url(url)
        self._settings = settings
        self._handler = handler
        self._outbox, self._pending = trio.open_memory_channel[str | None](math.inf)
        self._machine: ClientMachine | None = None
        self._abort_scope = trio.CancelScope()
        self._ending: Disconnect | None = None
        self._closing = False
        self._acked_at: float | None = None
        self._alive: trio.Event | None = None
        self._refusal: Any = None
        #: What the attempt is waiting for (named in a timeout's reason).
        self._stage = "TCP connection"

    # ---- what the session calls ----------------------------------------
    def subscribe(self, op_id: str, payload: dict[str, Any]) -> None:
        if self._machine is None or not self.ready.is_set():
            raise RuntimeError("operations start once the link is ready")
        self._send(self._machine.subscribe(op_id, payload))

    def complete(self, op_id: str) -> None:
        if self._machine is not None:
            frame = self._machine.complete(op_id)
            if frame is not None:
                self._send(frame)

    def close(self) -> None:
        """Close with 1000 after what is queued (abort at once if not ready yet)."""
        if self._closing:
            return
        self._closing = True
        if not self.ready.is_set():
            self._abort(self._disconnect(1000, "closed by the client"))
            return
        self._send(_CLOSE)

    async def run(self) -> Disconnect:
        try:
            with self._abort_scope:
                return await self._run()
            assert self._ending is not None  # only _abort cancels this scope
            return self._ending
        finally:
            self._outbox.close()

    # ---- internals -----------------------------------------------------
    def _send(self, frame: str | None) -> None:
        # Once the link ended the frame is moot: the session resends on the next link.
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._outbox.send_nowait(frame)

    def _abort(self, ending: Disconnect) -> None:
        if self._ending is None:
            self._ending = ending
        self._abort_scope.cancel()

    def _disconnect(self, code: int | None, reason: str = "", **extra: Any) -> Disconnect:
        lived = 0.0 if self._acked_at is None else trio.current_time() - self._acked_at
        return Disconnect(
            self.url,
            code=code,
            reason=reason,
            refusal=self._refusal,
            acknowledged=self.ready.is_set(),
            by_client=self._closing,
            lived=lived,
            **extra,
        )

    def _closed(self, reason: CloseReason | None) -> Disconnect:
        if reason is None:
            return self._disconnect(ABNORMAL, "connection lost")
        return self._disconnect(reason.code, reason.reason or "")

    async def _run(self) -> Disconnect:
        from trio_websocket import ConnectionRejected

        settings = self._settings
        setup = trio.CancelScope(deadline=trio.current_time() + settings.connect_timeout)
        try:
            with setup:
                async with trio.open_nursery() as nursery:
                    try:
                        return await self._connect(nursery, setup)
                    finally:
                        nursery.cancel_scope.cancel()  # the connection's reader
        except BaseExceptionGroup as group:
            rejected, _ = group.split(ConnectionRejected)
            if rejected is None:
                raise
            refusal = _first(rejected)
            assert isinstance(refusal, ConnectionRejected)
            body = (refusal.body or b"")[:200].decode("utf-8", "replace").strip()
            return self._disconnect(None, body, status=refusal.status_code)
        if self._refusal is not None:
            return self._disconnect(None, "connection_error")
        waited = f"{settings.connect_timeout:g} s"
        if self._stage == "init":
            return self._disconnect(ACK_TIMEOUT, f"no connection_ack within {waited}")
        return self._disconnect(None, cause=f"no {self._stage} within {waited}")

    async def _connect(self, nursery: trio.Nursery, setup: trio.CancelScope) -> Disconnect:
        """TCP, the upgrade, then the GraphQL protocol until the link ends."""
        settings = self._settings
        offers = OFFERS[settings.transport]
        headers = [(name.encode(), value.encode()) for name, value in settings.headers.items()]
        target = target_of(self._ws_url)
        try:
            stream = WatchedStream(await open_stream(target, settings.ssl_context))
        except OSError as error:
            return self._disconnect(None, cause=_root_cause(error))
        try:
            self._stage = "WebSocket upgrade"
            ws = await upgrade(
                nursery,
                stream,
                target,
                subprotocols=offers,
                headers=headers,
                max_message_size=settings.max_message_size,
            )
            if ws is None:
                return self._disconnect(None, cause="the peer hung up during the WebSocket upgrade")
            self._stage = "init"
            ending = await self._serve(ws, offers, setup)
            with trio.move_on_after(settings.close_timeout):
                await ws.aclose()  # no-op if already closed
            return ending
        finally:
            await trio.aclose_forcefully(stream)

    async def _serve(
        self, ws: WebSocketConnection, offers: tuple[str, ...], setup: trio.CancelScope
    ) -> Disconnect:
        from trio_websocket import ConnectionClosed

        chosen = ws.subprotocol or offers[0]
        if chosen not in offers:
            return await self._violation(ws, ProtocolViolation(f"server chose {chosen!r}"))
        self.subprotocol = chosen
        machine = self._machine = machine_for(chosen)
        try:
            await ws.send_message(machine.connection_init(self._settings.connection_params))
            while not self.ready.is_set():
                data = await ws.get_message()
                try:
                    events = machine.receive(data)
                except ProtocolViolation as violation:
                    return await self._violation(ws, violation)
                for event in events:
                    if isinstance(event, Reply):
                        await ws.send_message(event.frame)
                    elif isinstance(event, Refused):
                        self._refusal = event.payload if event.payload is not None else {}
                    elif isinstance(event, Acknowledged):
                        setup.deadline = math.inf
                        self._acked_at = trio.current_time()
                        self.ready.set()
        except ConnectionClosed as closed:
            return self._closed(closed.reason)
        if self._closing:  # closed while connecting
            self._send(_CLOSE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._writer, ws, machine)
            if self._settings.ping_interval > 0:
                nursery.start_soon(self._heartbeat, ws, machine)
            ending = await self._reader(ws, machine)
            nursery.cancel_scope.cancel()
        return ending

    async def _reader(self, ws: WebSocketConnection, machine: ClientMachine) -> Disconnect:
        from trio_websocket import ConnectionClosed

        handler = self._handler
        while True:
            try:
                data = await ws.get_message()
            except ConnectionClosed as closed:
                return self._closed(closed.reason)
            if self._alive is not None:
                self._alive.set()  # any message proves the server alive
            try:
                events = machine.receive(data)
            except ProtocolViolation as violation:
                return await self._violation(ws, violation)
            for event in events:
                if isinstance(event, Next):
                    handler.on_next(event.op_id, event.payload)
                elif isinstance(event, Failed):
                    handler.on_error(event.op_id, event.errors)
                elif isinstance(event, Completed):
                    handler.on_complete(event.op_id)
                elif isinstance(event, Reply):
                    self._send(event.frame)
                elif isinstance(event, Refused):
                    refused = ProtocolViolation(f"connection_error: {event.payload}")
                    return await self._violation(ws, refused)

    async def _writer(self, ws: WebSocketConnection, machine: ClientMachine) -> None:
        from trio_websocket import ConnectionClosed

        try:
            async for frame in self._pending:
                if frame is _CLOSE:
                    goodbye = machine.terminate()
                    if goodbye is not None:
                        await ws.send_message(goodbye)
                    with trio.move_on_after(self._settings.close_timeout):
                        await ws.aclose(1000)
                        return
                    self._abort(self._disconnect(1000, "close handshake timed out"))
                    return
                await ws.send_message(frame)
        except ConnectionClosed:
            pass  # the reader reports why

    async def _heartbeat(self, ws: WebSocketConnection, machine: ClientMachine) -> None:
        settings = self._settings
        while True:
            await trio.sleep(settings.ping_interval)
            alive = self._alive = trio.Event()
            probe = machine.ping()
            async with trio.open_nursery() as probes:
                if probe is not None:
                    self._send(probe)
                else:
                    probes.start_soon(self._frame_ping, ws, alive)
                with trio.move_on_after(settings.pong_timeout):
                    await alive.wait()
                probes.cancel_scope.cancel()
            if not alive.is_set():
                reason = f"nothing heard within {settings.pong_timeout:g} s of a ping"
                self._abort(self._disconnect(ABNORMAL, reason))
                return

    @staticmethod
    async def _frame_ping(ws: WebSocketConnection, alive: trio.Event) -> None:
        from trio_websocket import ConnectionClosed

        try:
            await ws.ping()
        except ConnectionClosed:
            return
        alive.set()

    async def _violation(self, ws: WebSocketConnection, violation: ProtocolViolation) -> Disconnect:
        reason = str(violation)[:120]
        with trio.move_on_after(self._settings.close_timeout):
            await ws.aclose(BAD_RESPONSE, reason)
        return self._disconnect(BAD_RESPONSE, reason)
