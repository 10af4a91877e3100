"""One WebSocket connection = one Trio nursery.

Its body is the reader (frames in, through the protocol machine); its
children the writer (which takes what the delivery queued, joined into one
write, and finishes writes the kernel could not take at once), the
keep-alive (a ping with a pong deadline), the auth step, one task per
operation and, once closing, the goodbye. Whatever ends the connection
(peer close, a protocol close, a dead peer, a stalled write, server shutdown)
cancels the nursery, so every operation's cleanup runs before the socket is
let go.

On the native host a frame with nothing queued ahead of it is written at
once by whoever produced it (see ``_native_ws``): no task switch at all on
the fast path. Anything else is queued by the delivery for the writer.
Every frame, the connection's own and its operations', goes through one
:class:`~._delivery.Delivery`.

One module (over 400 lines) on purpose: the reader, writer, keep-alive and
close path share the connection's state and call one another on the hot
path (every frame in or out), so splitting them would only add indirection
where each call costs.
"""

from __future__ import annotations

import contextlib
import logging
import math
from time import perf_counter as clock
from typing import TYPE_CHECKING, Any

import trio

from .._app import Context
from .._transports._socket import (
    DirectSocket,
    MessageSocket,
    MessageTooBig,
    SocketClosed,
    is_direct,
)
from .._wire import (
    Close,
    CloseCode,
    Event,
    InitRequested,
    OperationCancelled,
    OperationRequested,
    ProtocolMachine,
    Send,
)
from ._auth import authorise
from ._delivery import Delivery
from ._operation import Operation

if TYPE_CHECKING:
    from ._state import ServerState

log = logging.getLogger("meshsub_trio.connection")

_SOCKET_ERRORS = (SocketClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Connection:
    """The driver between one socket and one protocol machine."""

    __slots__ = (
        "_close_reason",
        "_close_started",
        "_closing_since",
        "_goodbye",
        "_nursery",
        "_opened",
        "_peer",
        "_send_close_frame",
        "_writer_running",
        "app",
        "close_code",
        "config",
        "context",
        "delivery",
        "direct",
        "engine",
        "heard",
        "init_deadline",
        "ka_due",
        "ka_phase",
        "ka_pinged_at",
        "ka_slot",
        "machine",
        "metrics",
        "operations",
        "protocol",
        "socket",
        "state",
    )

    #: The kind of sink, as interceptors name it.
    transport = "ws"

    def __init__(
        self,
        socket: MessageSocket,
        machine: ProtocolMachine,
        *,
        state: ServerState,
        context: Context,
    ) -> None:
        self.socket = socket
        self.machine = machine
        self.state = state
        self.app = state.app
        self.engine = state.engine
        self.config = config = state.config
        self.metrics = state.metrics
        self.context = context
        self.protocol = machine.subprotocol
        self.operations: dict[str, Operation] = {}
        self.close_code: int | None = None
        self._close_reason = ""
        self._send_close_frame = True
        #: The connection's nursery while its body runs: tasks start only then
        #: (once the body has ended, e.g. cancelled from outside, the nursery only
        #: waits for its children, and has been cancelled already).
        self._nursery: trio.Nursery | None = None
        #: The goodbye task's scope: shielded from the nursery's cancellation.
        self._goodbye: trio.CancelScope | None = None
        self._writer_running = False
        self._closing_since: float | None = None
        self._close_started = False
        self.init_deadline = math.inf
        #: Anything arrived since the last keep-alive probe (the wheel's to clear).
        self.heard = True
        #: The keep-alive wheel's bookkeeping (see ``_keepalive``).
        self.ka_slot = -1
        self.ka_phase = 0
        self.ka_pinged_at = 0.0
        self.ka_due = 0.0
        socket.on_activity = self._on_activity
        #: Set when this host can write without waiting (the native host).
        self.direct: DirectSocket | None = socket if is_direct(socket) else None
        #: Everything this connection sends goes through here (see ``_delivery``).
        self.delivery = Delivery(
            machine,
            self.metrics,
            protocol=self.protocol,
            capacity=config.outbox_size,
            direct=self.direct,
            backlog_limit=config.write_buffer_size,
        )
        if self.direct is not None:
            self.direct.on_backlog = self._ensure_writer
        #: When it opened and who the peer is: read only when its lines are logged.
        self._opened: float | None = None
        self._peer: str | None = None

    # ---- lifecycle -----------------------------------------------------
    async def run(self) -> None:
        """Serve the connection until it ends; every cleanup has run on return.

        One nursery holds everything: the reader (this task), the keep-alive,
        the auth step, the operations and, while it has something to do, the
        writer. A close cancels the nursery, so every operation's cleanup
        runs; a graceful one also starts the goodbye (what was queued, e.g. a
        ``connection_error``, then the close frame) in a task shielded from
        that cancellation and bounded by ``close_timeout``, so the peer hears
        the code at once while the cleanups run. An abrupt end (peer gone,
        dead, or stalled) cancels the goodbye too.
        """
        self.metrics.connection_opened()
        if log.isEnabledFor(logging.DEBUG):
            self._opened = clock()
            # log_fields keeps the peer: the socket is gone by the time it closes.
            log.debug("connection opened", extra=self.log_fields())
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.config.init_timeout > 0:
                    self.init_deadline = trio.current_time() + self.config.init_timeout
                    awaiting = self.state.awaiting_init
                    if awaiting is not None:
                        awaiting.add(self)  # the server's init watchdog enforces it
                    else:
                        # No watchdog running: until connection_init arrives
                        # the whole connection has a deadline.
                        nursery.cancel_scope.deadline = self.init_deadline
                self.delivery.wake_writer = self._ensure_writer
                if self.close_code is not None:
                    self._act_on_close()  # closed before it started (server shutting down)
                try:
                    if self.config.keepalive > 0:
                        wheel = self.state.keepalive
                        if wheel is not None:
                            wheel.add(self)  # the server's one keep-alive task
                        else:
                            nursery.start_soon(self._keepalive_loop)
                    await self._read_loop()
                except _SOCKET_ERRORS:
                    # The peer vanished while we wrote (a pong, a reply): a
                    # normal disconnect, not a fault of ours.
                    self.close(CloseCode.ABNORMAL, "", send_close_frame=False)
                except Exception:
                    log.exception("connection failed")
                    self.close(CloseCode.INTERNAL_ERROR, "Internal server error")
                finally:
                    self._nursery = None
            if self.close_code is None:
                # Cancelled with no close: only the init deadline does that.
                self.init_timed_out()
        finally:
            self._nursery = None  # however the body ended: nothing may start in it now
            if self.state.awaiting_init is not None:
                self.state.awaiting_init.discard(self)
            if self.state.keepalive is not None:
                self.state.keepalive.discard(self)
            self.delivery.close()
            await self._finish()
            self.metrics.connection_closed(self.close_code or CloseCode.ABNORMAL)
            if self._opened is not None and log.isEnabledFor(logging.DEBUG):
                fields = self.log_fields()
                fields["code"] = self.close_code or CloseCode.ABNORMAL
                fields["duration_s"] = round(clock() - self._opened, 6)
                log.debug("connection closed", extra=fields)
            self._release()

    def log_fields(self) -> dict[str, Any]:
        """Who this connection is, for a log line (the peer's address costs a system call)."""
        if self._peer is None:
            peer = getattr(self.socket, "peer", None)
            self._peer = f"{peer[0]}:{peer[1]}" if peer else None
        return {"peer": self._peer, "protocol": self.protocol}

    def init_timed_out(self) -> None:
        """The init deadline passed (the server's watchdog, or this connection's
        own scope): close 4408, even if ``connection_init`` came just as time ran out."""
        if self.close_code is not None:
            return
        machine = self.machine
        events = machine.init_timed_out()  # [] if connection_init came just in time
        if not events and not machine.closed:
            events = machine.close(CloseCode.INIT_TIMEOUT, "Connection initialisation timeout")
        for event in events:
            if isinstance(event, Close):
                self.close(event.code, event.reason)
        if self.close_code is None:
            # The machine closed already (its Close is still on the reader's way).
            self.close(CloseCode.INIT_TIMEOUT, "Connection initialisation timeout")

    def _release(self) -> None:
        """Break the reference cycles through this connection (its nursery, the
        callbacks it gave the socket and the delivery), so reference counting frees it
        at once: under churn, leaving ~40 objects per connection to the cyclic
        collector cost more than any one step of a connection's life."""
        self._nursery = None
        self._goodbye = None
        self.delivery.release()
        self.socket.on_activity = _ignore
        if self.direct is not None:
            self.direct.on_backlog = _ignore

    def close(self, code: int, reason: str = "", *, send_close_frame: bool = True) -> None:
        """End the connection: the first reason given wins.

        With ``send_close_frame`` the queued frames and a close frame are
        sent first; without it (the peer cannot hear us) everything stops now.
        """
        if self.close_code is None:
            self.close_code = code
            self._close_reason = reason
            self._send_close_frame = send_close_frame
            self._closing_since = trio.current_time()
            self.delivery.writable = False
            if not self.machine.closed:
                # The host's own reason: the machine frames nothing more either.
                # Its one event is this very Close.
                self.machine.close(code, reason)
        self._act_on_close()

    def _act_on_close(self) -> None:
        nursery = self._nursery
        if nursery is None:
            return
        nursery.cancel_scope.cancel()
        if not self._send_close_frame:
            if self._goodbye is not None:
                self._goodbye.cancel()
        elif not self._close_started:
            # Say goodbye now, not after the cleanups: a cancelled operation
            # sends nothing more, and the peer learns the code at once.
            self._close_started = True
            self._goodbye = trio.CancelScope(shield=True, deadline=self._close_deadline())
            nursery.start_soon(self._send_close, self._goodbye)

    async def _send_close(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._say_goodbye()

    async def _say_goodbye(self) -> None:
        """Queued frames, then the close frame (the socket sends it only once)."""
        try:
            pending = self.delivery.take_frames()
            if pending:
                await self.socket.send_frames(pending)
            # No reason recorded: cancelled from outside, i.e. the server is going.
            code = self.close_code if self.close_code is not None else CloseCode.GOING_AWAY
            await self.socket.close(code, self._close_reason)
        except _SOCKET_ERRORS:
            pass

    def _ensure_writer(self) -> None:
        """Start the writer if it is not running (it stops when idle)."""
        if not self._writer_running and self._nursery is not None and self.close_code is None:
            self._writer_running = True
            self._nursery.start_soon(self._write_loop)

    def shutdown(self) -> None:
        """Server shutdown: close with 1001 Going away."""
        self.close(CloseCode.GOING_AWAY, "Going away")

    def _close_deadline(self) -> float:
        """Flushing and the close handshake get close_timeout from the moment closing began."""
        since = self._closing_since if self._closing_since is not None else trio.current_time()
        return since + self.config.close_timeout

    async def _finish(self) -> None:
        if not self._send_close_frame and self.direct is not None:
            await self.socket.abort()  # nothing to say, nothing to wait for
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = self._close_deadline()
            try:
                if self._send_close_frame:
                    await self._say_goodbye()
            finally:
                await self.socket.abort()

    # ---- reading -------------------------------------------------------
    async def _read_loop(self) -> None:
        """Messages in, through the protocol machine."""
        messages_in = self.metrics.messages_in_by_protocol(self.protocol)
        while True:
            try:
                message = await self.socket.receive()
            except SocketClosed as closed:
                if closed.code != CloseCode.ABNORMAL:
                    # The peer started the close: answer it now, not after every
                    # cleanup has run (a slow ``finally`` must not delay the reply).
                    await self._answer_close(closed.code)
                self.close(closed.code, closed.reason, send_close_frame=False)
                return
            except MessageTooBig:
                self.close(CloseCode.MESSAGE_TOO_BIG, "Message too big")
                return
            messages_in.inc()
            for event in self.machine.receive(message.data, binary=message.binary):
                await self._handle(event)
            if self.machine.closed:
                return

    async def _answer_close(self, code: int) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            if self.direct is not None:
                self.direct.start_close(code, "")
                if not self.direct.backlog:
                    return  # the kernel took it: nothing to wait for
            with trio.move_on_after(self.config.close_timeout):
                await self.socket.close(code, "")

    async def _handle(self, event: Event) -> None:
        if isinstance(event, Send):
            await self.send(event.data)
        elif isinstance(event, OperationRequested):
            self._start_operation(event)
        elif isinstance(event, OperationCancelled):
            operation = self.operations.get(event.id)
            if operation is not None:
                operation.stop()
        elif isinstance(event, InitRequested):
            self._init_met()
            self.context.connection_params = event.payload if event.payload is not None else {}
            if self.app.authenticate is None and self.app.on_connect is None:
                # Nothing to wait for: acknowledge now, no task needed.
                for reply in self.machine.accept(None):
                    await self._handle(reply)
            else:
                assert self._nursery is not None
                self._nursery.start_soon(self._authorise)
        elif isinstance(event, Close):
            self.close(event.code, event.reason)

    def _start_operation(self, request: OperationRequested) -> None:
        assert self._nursery is not None
        # A previous holder of this id has already been stopped or is finishing
        # its last send; its own ``finally`` checks identity before forgetting it.
        operation = Operation(self, request)
        self.operations[request.id] = operation
        self.metrics.operation_started(self.protocol)
        self._nursery.start_soon(operation.run)

    def _init_met(self) -> None:
        awaiting = self.state.awaiting_init
        if awaiting is not None and self in awaiting:
            awaiting.discard(self)
        elif self._nursery is not None:
            self._nursery.cancel_scope.deadline = math.inf

    def operation_finished(self, operation: Operation) -> None:
        """Called exactly once per operation, from its ``finally``."""
        if self.operations.get(operation.id) is operation:
            del self.operations[operation.id]
            # Only the id's current holder releases it: after a client complete
            # the id may already belong to a new operation.
            self.machine.release(operation.id)
        self.metrics.operation_finished(self.protocol)

    async def _authorise(self) -> None:
        """The app's hooks decide; the machine answers (ack, 4403, or 4500)."""
        verdict = await authorise(self.app, self.context, self.metrics, self.log_fields())
        machine = self.machine
        if machine.closed:
            return  # the peer broke the protocol while the hooks ran: nothing to decide
        events: list[Event]
        if verdict.failed:
            events = machine.close(CloseCode.INTERNAL_SERVER_ERROR, "Internal server error")
        elif verdict.refused is not None:
            events = machine.reject(verdict.refused)
        else:
            events = machine.accept(verdict.ack_payload)
        for event in events:
            await self._handle(event)

    # ---- writing -------------------------------------------------------
    async def send(self, frame: bytes) -> None:
        """Send one of the connection's own frames (an ack, a pong, a keep-alive)."""
        await self.delivery.send(None, frame)

    async def _write_loop(self) -> None:
        """Write what the delivery has queued, and finish unsent bytes; return when idle."""
        delivery = self.delivery
        direct = self.direct
        try:
            while delivery.has_work or (direct is not None and direct.backlog):
                if not await self._write(delivery.take()):
                    return
                await trio.lowlevel.checkpoint()
        finally:
            self._writer_running = False

    async def _write(self, frames: list[bytes]) -> bool:
        """Write *frames* (and any backlog) under the write deadline."""
        with trio.move_on_after(self.config.write_timeout) as scope:
            try:
                if self.direct is not None:
                    if frames:
                        self.direct.write_frames(frames)
                    await self.direct.flush()
                elif frames:
                    await self.socket.send_frames(frames)
            except _SOCKET_ERRORS:
                self.close(CloseCode.ABNORMAL, "", send_close_frame=False)
                return False
        if scope.cancelled_caught:
            fields = self.log_fields()
            fields["write_timeout_s"] = self.config.write_timeout
            log.warning(
                "write stalled %.1fs: dropping a slow consumer",
                self.config.write_timeout,
                extra=fields,
            )
            self.close(CloseCode.POLICY_VIOLATION, "Write timeout", send_close_frame=False)
            return False
        self.delivery.sent(len(frames))
        return True

    # ---- keep-alive ----------------------------------------------------
    def _on_activity(self) -> None:
        self.heard = True

    def keepalive_probe(self) -> bool:
        """This interval's keep-alive, sent without waiting: a ping frame where
        the host can (an answer is then due), and the protocol's own message
        (legacy ``ka``; transport-ws ``ping``, a probe where frames cannot be)."""
        machine = self.machine
        if self.close_code is not None or machine.closed:
            return False
        self.heard = False
        probe = False
        if self.direct is not None:
            try:
                probe = self.direct.ping_now()
            except _SOCKET_ERRORS:
                self.close(CloseCode.ABNORMAL, "", send_close_frame=False)
                return False
        if machine.keepalive_is_probe:
            if not probe and (message := machine.keepalive()) is not None:
                self.delivery.send_nowait(None, message)
                probe = True
        elif (message := machine.keepalive()) is not None:
            self.delivery.send_nowait(None, message)
        return probe

    def keepalive_expired(self) -> None:
        """Nothing at all arrived within the pong deadline after a probe."""
        if self.close_code is not None:
            return
        log.info(
            "peer silent for %.3fs after a ping: closing",
            self.config.pong_deadline,
            extra=self.log_fields(),
        )
        self.close(CloseCode.ABNORMAL, "", send_close_frame=False)

    def keepalive_failed(self, error: BaseException) -> None:
        """The wheel could not keep this connection alive (a bug): close 1011."""
        self.close(CloseCode.INTERNAL_ERROR, "Internal server error")

    async def _keepalive_loop(self) -> None:
        """A connection served outside a running server state keeps itself alive."""
        while self.close_code is None:
            await trio.sleep(self.config.keepalive)
            if self.keepalive_probe():
                await trio.sleep(self.config.pong_deadline)
                if not self.heard:
                    self.keepalive_expired()


def _ignore() -> None:
    pass

