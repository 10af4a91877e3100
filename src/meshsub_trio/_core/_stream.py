"""A subscription's own streamer, run inside its operation's task.

The streamer is awaited by the operation's task itself. Each value it emits is
executed, encoded and written at once by whoever called ``emit`` (the
streamer, or a publisher calling ``emit`` for many subscribers) when nothing is
queued ahead of it, the socket can take it and the execution needs no await:
no task switch per event and no second task per subscription. Otherwise the
value waits in a bounded buffer under the streamer's overflow policy, and a
pump task, started only then, executes and sends the queued values in order
and stops when it has caught up.
"""

from __future__ import annotations

from collections.abc import Coroutine
from time import perf_counter as clock
from typing import TYPE_CHECKING, Any

import trio

from .._app import Streamer, emitter
from .._execution import Prepared
from ..brokers._buffer import BufferClosed, EventBuffer

if TYPE_CHECKING:
    from ._operation import Operation


class PrivateStream:
    """Where one non-shared subscription's values go."""

    __slots__ = (
        "_awaiting",
        "_nursery",
        "_pumping",
        "_spec",
        "buffer",
        "failure",
        "operation",
        "prepared",
    )

    def __init__(self, operation: Operation, prepared: Prepared, spec: Streamer) -> None:
        self.operation = operation
        self.prepared = prepared
        self._spec = spec
        self.buffer: EventBuffer[Any] = EventBuffer(spec.capacity, spec.policy)
        self.failure: BaseException | None = None
        self._nursery: trio.Nursery | None = None
        self._pumping = False
        #: An execution that turned out to need awaiting: the pump's first job.
        self._awaiting: Coroutine[Any, Any, bytes] | None = None

    async def run(self, context: Any, args: dict[str, Any]) -> None:
        """Run the streamer to its end, then let the pump finish what is queued."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._spec.fn(context, args, emitter(self.emit))
                except Exception as error:
                    self._fail(error)
                self.buffer.close()
        finally:
            self._nursery = None
            self.buffer.detach()
            if self._awaiting is not None:
                self._awaiting.close()  # cancelled before the pump could await it
        if self.failure is not None:
            raise self.failure

    def emit(self, item: Any) -> None:
        """The streamer's ``emit``: never waits, never raises into the caller (but
        :class:`BufferClosed` once the subscription is over, as a buffer would)."""
        buffer = self.buffer
        if buffer.consumer_closed:
            raise BufferClosed()
        if self.failure is not None:
            return
        if self._pumping:
            self._queue(item)  # behind what is queued
            return
        operation = self.operation
        if operation.stopped_by_client:
            return  # completed: nothing more is executed or sent for it
        delivery = operation.delivery
        if not delivery.can_write_now():
            self._queue(item)
            self._start_pump()
            return
        sink = operation.sink
        began = clock()
        try:
            payload = sink.engine.event_payload_now(self.prepared, item)
        except Exception as error:
            self._fail(error)
            return
        if not isinstance(payload, bytes):
            self._awaiting = payload
            self._start_pump()
            return
        metrics = sink.metrics
        executed = clock()
        delivery.write_payload_now(operation, payload)
        metrics.delivery_latency.observe(clock() - began)
        metrics.event_execution.observe(executed - began)

    def _queue(self, item: Any) -> None:
        """Off the direct path: wait in the buffer, stamped for the latency histogram;
        an overflow is counted (and reported) as it happens."""
        buffer = self.buffer
        dropped = buffer.dropped
        buffer.put((item, clock()))
        operation = self.operation
        operation.sink.metrics.fallbacks("pump").inc()
        if buffer.dropped != dropped:
            operation.overflowed(buffer.policy, buffer.dropped - dropped, buffer.capacity)

    def _start_pump(self) -> None:
        if self._nursery is None:
            return  # the run is over: the buffer's end is reported by ``run``
        self._pumping = True
        self._nursery.start_soon(self._pump)

    async def _pump(self) -> None:
        """Execute and send, in order, until nothing is queued."""
        operation = self.operation
        engine = operation.sink.engine
        metrics = operation.sink.metrics
        try:
            awaiting, self._awaiting = self._awaiting, None
            if awaiting is not None:
                await operation.send_payload(await awaiting)
            while True:
                try:
                    item, since = self.buffer.get_nowait()
                except (trio.WouldBlock, trio.EndOfChannel):
                    return  # caught up: later values take the direct path again
                began = clock()
                payload = await engine.event_payload(self.prepared, item)
                metrics.event_execution.observe(clock() - began)
                await operation.send_payload(payload)
                metrics.delivery_latency.observe(clock() - since)
        except Exception as error:  # includes BufferOverflow
            self._fail(error)
        finally:
            self._pumping = False

    def _fail(self, error: BaseException) -> None:
        """The stream failed: stop the streamer; the operation reports it."""
        if self.failure is None:
            self.failure = error
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
