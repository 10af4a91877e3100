"""Delivery: the one path from an operation's payloads to its sink's bytes.

Every operation runs in a *sink* (a WebSocket connection, an HTTP stream)
and hands what it produces to that sink's :class:`Delivery`, which owns all
three decisions that follow, in one direction:

1. **The envelope.** The sink's :class:`Framer` (a protocol machine) wraps a
   payload in ``next`` for the operation's id, or frames ``complete`` and
   ``error``; it answers None once the operation ended, so nothing is sent
   for it after that.
2. **The fast path.** When nothing is queued ahead and the socket takes
   bytes without waiting (the native host's :class:`DirectSocket`, backlog
   under ``write_buffer_size``), the frame is written at once by whoever
   produced it: no task switch, one system call.
3. **The slow path.** Otherwise the frame is queued: a per-operation frame
   in the bounded frame queue (its producer waits for room: backpressure on
   this sink only), a cohort's payload in its :class:`Lane` (the member's
   bounded buffer, under its overflow policy; the cohort never waits). The
   sink's writer task calls :meth:`Delivery.take` and writes everything in
   order under the write deadline.

So an event goes cohort → :meth:`Lane.put_many` → the fast path or the
lane's buffer → :meth:`Delivery.take` → the host's write, and never back.

One module (over 400 lines) on purpose: a :class:`Lane` and its
:class:`Delivery` call into each other on every event (the lane writes
through the delivery's fast path and marks itself ready, the delivery drains
ready lanes), so they are one mechanism, read in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from time import perf_counter as clock
from typing import Any, Protocol

import trio

from .._metrics import Metrics
from .._transports._socket import DirectSocket, SocketClosed
from ..brokers._buffer import BufferClosed, EventBuffer, Overflow

#: What a direct write raises when the peer is gone: the reader sees it too.
_SOCKET_ERRORS = (SocketClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Framer(Protocol):
    """The envelope: the sink's protocol machine (WebSocket, SSE, ...)."""

    def next(self, op_id: str, payload: bytes) -> bytes | None:
        """A ``next`` frame, or None once the operation ended."""

    def complete(self, op_id: str) -> bytes | None:
        """A ``complete`` frame, or None once the operation ended."""

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> bytes | None:
        """An ``error`` frame, or None once the operation ended."""


class BurstFramer(Framer, Protocol):
    """A framer whose check and envelope can be taken apart (the WebSocket
    machines): a fan-out then frames a burst once per operation id."""

    #: What distinguishes its envelopes (``next`` or legacy ``data``).
    result_type: bytes

    def may_send(self, op_id: str) -> bool:
        """Whether a ``next`` may be sent for *op_id* now."""

    def wrap(self, op_id: str, payload: bytes) -> bytes:
        """The ``next`` envelope, unchecked."""


#: Wire bytes of a burst, per (envelope kind, operation id): shared by every
#: lane a cohort serves in one fan-out (most clients use the same ids).
BurstCache = dict[tuple[bytes, str], bytes]


class Sender(Protocol):
    """What a delivery needs from the operation it sends for."""

    id: str
    #: Set when the client stopped the operation: nothing more goes out for it.
    stopped_by_client: bool
    #: Frames produced for it (for its end line and the interceptors).
    sent: int

    def overflowed(self, policy: Overflow, count: int, capacity: int) -> None:
        """Its buffer's overflow policy acted *count* times."""


class Delivery:
    """One sink's output: envelope, fast path and slow path, in one place."""

    __slots__ = (
        "_backlog_limit",
        "_burst",
        "_frames",
        "_lanes",
        "_messages_out",
        "_room",
        "capacity",
        "closed",
        "direct",
        "framer",
        "metrics",
        "wake_writer",
        "writable",
    )

    def __init__(
        self,
        framer: Framer,
        metrics: Metrics,
        *,
        protocol: str,
        capacity: int,
        direct: DirectSocket | None = None,
        backlog_limit: int = 0,
    ) -> None:
        self.framer = framer
        self.metrics = metrics
        #: The socket that takes bytes without waiting; None: every frame is queued.
        self.direct = direct
        # Only WebSocket connections have a direct socket, and their framers
        # are the protocol machines, which split check from envelope.
        self._burst: BurstFramer | None = framer if direct is not None else None  # type: ignore[assignment]
        self._backlog_limit = backlog_limit
        #: Bound of the frame queue (lanes have their own bounds).
        self.capacity = capacity
        # A list, not a deque: the writer always takes everything at once, and
        # an empty list costs a tenth of an empty deque on every idle connection.
        self._frames: list[tuple[Sender | None, bytes]] = []
        self._lanes: dict[Lane, None] = {}
        self._room: trio.lowlevel.ParkingLot | None = None  # made when a producer waits
        #: The sink's hook to start (or wake) its writer when something is queued.
        self.wake_writer: Callable[[], None] = _ignore
        #: False once the sink is closing: nothing more takes the fast path.
        self.writable = True
        #: No more frames are queued (the sink finished); producers' frames are dropped.
        self.closed = False
        self._messages_out = metrics.messages_out_by_protocol(protocol)

    def __len__(self) -> int:
        """Frames queued (what a lane holds is counted by its own buffer)."""
        return len(self._frames)

    # ---- the fast-or-queue decision ----------------------------------------
    def can_write_now(self) -> bool:
        """Whether a frame may be written at once without passing queued ones."""
        direct = self.direct
        return (
            direct is not None
            and not self._frames
            and direct.backlog < self._backlog_limit
            and self.writable
        )

    def write_now(self, frames: list[bytes]) -> None:
        """Write *frames* in one system call (check :meth:`can_write_now` first)."""
        assert self.direct is not None
        try:
            self.direct.write_frames(frames)
        except _SOCKET_ERRORS:
            return  # the sink's reader sees the connection go and ends it
        self._messages_out.inc(len(frames))

    def write_burst(self, sender: Sender, payloads: list[bytes], cache: BurstCache) -> None:
        """Write a cohort's burst for *sender* at once (check :meth:`can_write_now`
        first), framed once per envelope kind and operation id across the fan-out."""
        burst = self._burst
        direct = self.direct
        assert burst is not None and direct is not None
        op_id = sender.id
        if not burst.may_send(op_id):
            return
        key = (burst.result_type, op_id)
        data = cache.get(key)
        if data is None:
            wrap = burst.wrap
            data = cache[key] = direct.encode_frames([wrap(op_id, p) for p in payloads])
        try:
            direct.write_encoded(data)
        except _SOCKET_ERRORS:
            return  # the sink's reader sees the connection go and ends it
        count = len(payloads)
        self._messages_out.inc(count)
        sender.sent += count

    def write_payload_now(self, sender: Sender, payload: bytes) -> None:
        """Frame *payload* and write it at once (check :meth:`can_write_now` first)."""
        frame = self.framer.next(sender.id, payload)
        if frame is not None:
            self.write_now([frame])
            sender.sent += 1

    # ---- producers that may wait (one operation's own frames) --------------
    async def send(self, owner: Sender | None, frame: bytes) -> None:
        """Send *frame* for *owner* (None: the sink itself, e.g. an ack or a pong).

        Written at once when nothing is queued ahead of it; otherwise queued,
        waiting only while this sink's frame queue is full.
        """
        if self.can_write_now():
            if owner is None or not owner.stopped_by_client:
                self.write_now([frame])
            await trio.lowlevel.checkpoint()
            return
        if self.direct is not None:
            self.metrics.fallbacks("outbox").inc()  # the socket is backed up
        while len(self._frames) >= self.capacity and not self.closed:
            if self._room is None:
                self._room = trio.lowlevel.ParkingLot()
            await self._room.park()
        if self.closed:
            return  # the sink has finished: nobody would write it
        self._frames.append((owner, frame))
        self.wake_writer()

    def send_nowait(self, owner: Sender | None, frame: bytes) -> None:
        """:meth:`send` for a control frame that must not wait (a keep-alive):
        queued past the bound if need be, which one frame per interval keeps small."""
        if self.can_write_now():
            self.write_now([frame])
        elif not self.closed:
            self._frames.append((owner, frame))
            self.wake_writer()

    async def send_payload(self, sender: Sender, payload: bytes) -> None:
        """``next`` with *payload* for *sender*."""
        frame = self.framer.next(sender.id, payload)
        if frame is not None:
            sender.sent += 1
            await self.send(sender, frame)

    async def complete(self, sender: Sender) -> None:
        """``complete`` for *sender*, unless the client stopped it: its id may
        already be a new operation's, which this must not end."""
        if not sender.stopped_by_client:
            frame = self.framer.complete(sender.id)
            if frame is not None:
                sender.sent += 1
                await self.send(sender, frame)

    async def error(self, sender: Sender, errors: list[dict[str, Any]]) -> None:
        """``error`` for *sender* (the same rule as :meth:`complete`)."""
        if not sender.stopped_by_client:
            frame = self.framer.error(sender.id, errors)
            if frame is not None:
                sender.sent += 1
                await self.send(sender, frame)

    # ---- producers that never wait (a cohort's fan-out) ---------------------
    def lane(self, sender: Sender, capacity: int, policy: Overflow) -> Lane:
        """A bounded lane for values *sender* receives from elsewhere (a cohort)."""
        return Lane(self, sender, capacity, policy)

    # ---- the writer's side ---------------------------------------------------
    @property
    def has_work(self) -> bool:
        return bool(self._frames or self._lanes)

    def take(self) -> list[bytes]:
        """Everything queued, in order: frames first, then each ready lane's."""
        frames = self.take_frames()
        if self._lanes:
            lanes = list(self._lanes)
            self._lanes.clear()
            for lane in lanes:
                lane._drain_into(frames)
        return frames

    def take_frames(self) -> list[bytes]:
        """The queued frames still wanted (a stopped operation's are dropped)."""
        queued, self._frames = self._frames, []
        if self._room is not None:
            self._room.unpark_all()
        return [f for owner, f in queued if owner is None or not owner.stopped_by_client]

    def sent(self, count: int) -> None:
        """The writer wrote *count* frames."""
        if count:
            self._messages_out.inc(count)

    def close(self) -> None:
        """No more frames are queued; waiting producers return; the writer finishes."""
        self.closed = True
        self.writable = False
        if self._room is not None:
            self._room.unpark_all()
        self.wake_writer()

    def release(self) -> None:
        """Let go of the sink's writer hook (it refers back to the sink: a cycle)."""
        self.wake_writer = _ignore

    def _ready(self, lane: Lane) -> None:
        self._lanes[lane] = None
        self.wake_writer()


class Lane:
    """One operation's place in a cohort: where the cohort's payloads land.

    :meth:`put_many` is called by the cohort for every burst and never
    waits. With nothing buffered ahead, the frames are written at once (when
    the sink can take them); otherwise the payloads wait in this lane's
    bounded buffer (the streamer's overflow policy applies, counted) and the
    sink's writer drains them through :meth:`Delivery.take`.

    The operation's task parks until the lane closes (:meth:`until_closed`):
    a bare reschedule rather than a :class:`trio.Event` keeps a few hundred
    bytes off every idle subscription.
    """

    __slots__ = ("_buffer", "_done", "_since", "_waiter", "delivery", "error", "sender")

    def __init__(self, delivery: Delivery, sender: Sender, capacity: int, policy: Overflow):
        self.delivery = delivery
        self.sender = sender
        self._buffer: EventBuffer[bytes] = EventBuffer(capacity, policy)
        #: Why the cohort ended, if it failed (or this lane overflowed under CLOSE).
        self.error: BaseException | None = None
        self._done = False
        self._waiter: trio.lowlevel.Task | None = None
        #: When the oldest value now buffered was emitted (0: unknown or nothing buffered).
        self._since = 0.0

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    def put(self, payload: bytes) -> None:
        self.put_many([payload])

    def put_many(
        self, payloads: list[bytes], since: float = 0.0, cache: BurstCache | None = None
    ) -> bool:
        """The cohort's next values, in order (the oldest emitted at *since*); never waits.

        True when they were written at once: the cohort then measures their
        latency for the whole burst; buffered ones are measured when drained.
        A fan-out passes one *cache* to all its lanes, so each burst is framed
        once per operation id. Raises :class:`BufferClosed` once the operation
        has left.
        """
        buffer = self._buffer
        if buffer.consumer_closed:
            raise BufferClosed()
        delivery = self.delivery
        if not len(buffer) and delivery.can_write_now():
            sender = self.sender
            if sender.stopped_by_client:
                return True
            if cache is not None:
                delivery.write_burst(sender, payloads, cache)
            else:
                next_frame = delivery.framer.next
                frames = [f for p in payloads if (f := next_frame(sender.id, p)) is not None]
                if frames:
                    delivery.write_now(frames)
                    sender.sent += len(frames)
            return True
        if not len(buffer):
            self._since = since
        dropped = buffer.dropped
        for payload in payloads:
            buffer.put(payload)
        delivery.metrics.fallbacks("member_buffer").inc(len(payloads))
        if buffer.dropped != dropped:
            self.sender.overflowed(buffer.policy, buffer.dropped - dropped, buffer.capacity)
        delivery._ready(self)
        return False

    def close(self, error: BaseException | None = None) -> None:
        """The cohort ended: the lane closes after whatever is still buffered."""
        self._buffer.close(error)
        self.delivery._ready(self)

    def detach(self) -> None:
        """The operation left: later puts raise :class:`BufferClosed`."""
        self._buffer.detach()

    def until_closed(self) -> Coroutine[Any, Any, Any] | None:
        """What the operation's task awaits until the lane has closed (None: it has).

        Returns the park itself rather than being a coroutine of its own: an
        idle subscription then keeps one suspended frame fewer.
        """
        if self._done:
            return None
        self._waiter = trio.lowlevel.current_task()
        return trio.lowlevel.wait_task_rescheduled(self._abort_wait)

    def _drain_into(self, frames: list[bytes]) -> None:
        """Called through :meth:`Delivery.take`: buffered payloads become frames."""
        sender = self.sender
        next_frame = self.delivery.framer.next
        before = len(frames)
        try:
            while True:
                try:
                    payload = self._buffer.get_nowait()
                except trio.WouldBlock:
                    return
                except trio.EndOfChannel:
                    self._finish()
                    return
                except Exception as error:  # the cohort failed, or this lane overflowed
                    self.error = error
                    self._finish()
                    return
                if not sender.stopped_by_client:
                    frame = next_frame(sender.id, payload)
                    if frame is not None:
                        frames.append(frame)
        finally:
            drained = len(frames) - before
            if drained:
                sender.sent += drained
                if self._since:
                    # Written by the caller right after this: latency up to now.
                    latency = clock() - self._since
                    self.delivery.metrics.delivery_latency.observe(latency, drained)
            self._since = 0.0

    def _abort_wait(self, _: object) -> trio.lowlevel.Abort:
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _finish(self) -> None:
        self._done = True
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            trio.lowlevel.reschedule(waiter)


def _ignore() -> None:
    pass
