"""One operation = one task inside its own cancel scope.

That scope *is* the cleanup: client ``complete``/``stop``, the source ending,
an error, connection loss and server shutdown all end the operation by
leaving or cancelling the scope, and the ``finally`` below runs exactly once.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, Coroutine
from dataclasses import replace
from time import perf_counter as clock
from typing import TYPE_CHECKING, Any, Protocol

import trio
from graphql import ExecutionResult, OperationType

from .._app import Streamer, StreamerSource
from .._encoding import dumps
from .._execution import Prepared, format_errors, format_result, public_error
from .._intercept import Gate, OperationInfo
from .._wire import OperationRequested
from ..brokers._buffer import Overflow
from . import _chain
from ._cohort import Cohort, CohortKey, cohort_key
from ._stream import PrivateStream

if TYPE_CHECKING:
    from .._app import App, Context
    from .._config import Config
    from .._execution import Engine
    from .._metrics import Metrics
    from ._delivery import Delivery, Lane
    from ._state import ServerState

log = logging.getLogger("meshsub_trio.operation")


class Sink(Protocol):
    """Where an operation runs and what it hands its output to.

    A WebSocket connection is one kind (many operations); an HTTP stream is
    another (one operation). Everything the operation sends goes through the
    sink's :class:`~._delivery.Delivery`; the rest is what it runs with.
    """

    app: App
    state: ServerState
    engine: Engine
    config: Config
    metrics: Metrics
    #: The connection's context (auth, params) each operation starts from.
    context: Context
    #: The wire protocol (``graphql-transport-ws``, ``graphql-ws``, ``sse``...).
    protocol: str
    #: The kind of sink, as interceptors and metrics name it (``ws``, ``sse``...).
    transport: str
    delivery: Delivery

    def operation_finished(self, operation: Operation) -> None:
        """Called exactly once per operation, from its ``finally``."""


class Operation:
    """A running operation of one sink."""

    __slots__ = (
        "cancel_scope",
        "delivery",
        "dropped",
        "end",
        "gate",
        "id",
        "info",
        "request",
        "sent",
        "sink",
        "skipped",
        "started",
        "stopped_by_client",
    )

    def __init__(self, sink: Sink, request: OperationRequested) -> None:
        self.sink = sink
        self.delivery = sink.delivery
        self.request = request
        self.id = request.id
        self.cancel_scope = trio.CancelScope()
        #: Set when the client stopped it: nothing more may be sent for it.
        self.stopped_by_client = False
        #: For the duration histogram and the end line: when, how many frames, how many lost.
        self.started = clock()
        self.sent = 0
        self.dropped = 0
        #: How it ended, unless the client stopped it: complete, error, crashed, closed.
        self.end = "complete"
        #: What the app's interceptors saw, once their chain began (else None).
        self.info: OperationInfo | None = None
        #: Its interceptors' gate on a subscription's values (None: none asked).
        self.gate: Gate | None = None
        #: Values the gate held back.
        self.skipped = 0

    @property
    def label(self) -> str:
        """How errors and logs name it (the id is the client's: kept short)."""
        return f"operation {self.id[:64]}"

    def stop(self) -> None:
        """The client asked to stop: cancel, and silence anything still queued."""
        self.stopped_by_client = True
        self.cancel_scope.cancel()

    async def run(self) -> None:
        sink = self.sink
        try:
            if self.stopped_by_client:
                # Completed before its task began (``subscribe`` and ``complete``
                # in one read): nothing to set up or tear down, as when asyncio
                # cancels a task that has not started. The cleanup still runs.
                return
            if log.isEnabledFor(logging.DEBUG):
                log.debug("operation started", extra=self.log_fields())
            with self.cancel_scope:
                try:
                    if not sink.app.interceptors or await _chain.enter(self):
                        await self._run()
                except Exception:
                    # A bug below us (a resolver's executor, an encoder) ends this
                    # operation with an error; its siblings and the socket live on.
                    self.end = "crashed"
                    log.exception("operation %s crashed", self.id, extra=self.log_fields())
                    errors = [{"message": "Internal server error"}]
                    await self._error(errors)
        except trio.Cancelled:
            self.end = "closed"  # with its connection, or the server
            raise
        except BaseExceptionGroup as group:
            if group.subgroup(trio.Cancelled) is not None:
                self.end = "closed"  # the same, through a streamer's nursery
            raise
        finally:
            sink.operation_finished(self)
            if self.info is not None:
                _chain.leave(self, self.info)
            self._ended()

    def _ended(self) -> None:
        """The duration histogram, and one line at DEBUG (operations are many)."""
        duration = clock() - self.started
        self.sink.metrics.operation_duration.observe(duration)
        if log.isEnabledFor(logging.DEBUG):
            fields = self.log_fields()
            fields.update(
                end="stopped" if self.stopped_by_client else self.end,
                duration_s=round(duration, 6),
                sent=self.sent,
                dropped=self.dropped,
            )
            log.debug("operation ended", extra=fields)

    def log_fields(self) -> dict[str, Any]:
        """What names this operation in a log line (the id is the client's: kept short)."""
        name = self.request.operation_name
        return {
            "operation_id": self.id[:64],
            "operation_name": name[:100] if name else None,
            "protocol": self.sink.protocol,
        }

    def overflowed(self, policy: Overflow, count: int, capacity: int) -> None:
        """Its subscriber fell behind and the overflow policy acted *count* times:
        counted at once; a warning the first time only (a slow consumer stays slow)."""
        self.sink.metrics.dropped_by_policy(policy.value).inc(count)
        first = self.dropped == 0
        self.dropped += count
        if first and log.isEnabledFor(logging.WARNING):
            fields = self.log_fields()
            fields.update(policy=policy.value, capacity=capacity)
            log.warning("slow subscriber: its buffer overflowed (%s)", policy.value, extra=fields)

    async def _run(self) -> None:
        sink = self.sink
        request = self.request
        cohort = self._existing_cohort()
        if cohort is not None:
            # A live cohort for this very request and scope: join it without
            # building an executor or calling the subscribe resolver again.
            await self._run_source(self._join(cohort, cohort.source.streamer))
            return
        engine = sink.engine
        if self.info is not None:
            context = self.info.context  # adjusted by the interceptors
        else:
            context = sink.context
            if request.extensions:
                context = replace(context, extensions=request.extensions)
        label = self.label
        prepared = await engine.prepare_async(
            request.query, request.variables, request.operation_name, context, label
        )
        if not isinstance(prepared, Prepared):
            self.end = "error"
            await self._error(format_errors(prepared, label))
            return
        key: CohortKey | None = None
        try:
            if prepared.kind is not OperationType.SUBSCRIPTION:
                began = clock()
                result = await engine.execute(prepared)
                execution = sink.metrics.execution_time[prepared.kind.value]
                execution.observe(clock() - began)
                await self._send_result(result)
                await self._complete()
                return
            source = await engine.open_source(prepared)
            if isinstance(source, ExecutionResult):
                self.end = "error"
                errors = format_errors(source.errors or [], label)
                await self._error(errors)
                return
            if not isinstance(source, StreamerSource):
                if self.gate is not None:
                    source = _chain.GatedSource(self, self.gate, source)
                await self._run_source(self._iterate(prepared, source))
                return
            key = self._cohort_key(source)
            if key is None:
                await self._run_source(self._run_streamer(prepared, source))
                return
        finally:
            if key is None:
                prepared.release()
        # The cohort keeps (and releases) its first member's executor; a later
        # member's is released now, and none stays alive in this frame.
        spec = source.streamer
        lane = self._lane(spec)
        prepared.label = "a shared subscription"  # its events serve every member
        joined = sink.state.cohorts.join(key, prepared, source, lane)
        if joined.prepared is not prepared:
            prepared.release()
        del prepared, source
        await self._run_source(self._join(joined, spec, lane))

    async def _run_source(self, stream: Coroutine[Any, Any, None]) -> None:
        """Stream to the end, then ``complete``; a failed source is an ``error`` instead."""
        try:
            await stream
        except Exception as error:
            # The source failed: an ``error`` for this operation only, no ``complete``.
            self.end = "error"
            log.info("operation %s failed: %r", self.id, error, extra=self.log_fields())
            await self._error([public_error(error, self.label)])
            return
        await self._complete()

    async def _iterate(self, prepared: Prepared, source: AsyncIterable[Any]) -> None:
        iterator = aiter(source)
        try:
            engine = self.sink.engine
            execution = self.sink.metrics.event_execution
            async for event in iterator:
                began = clock()
                payload = await engine.event_payload(prepared, event)
                execution.observe(clock() - began)
                await self.send_payload(payload)
        finally:
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                # Give the generator's own finally a bounded, shielded chance to await.
                with trio.CancelScope(shield=True) as scope:
                    scope.relative_deadline = self.sink.config.close_timeout
                    await aclose()

    async def _run_streamer(self, prepared: Prepared, source: StreamerSource) -> None:
        """This subscription's own streamer, awaited by this task (see ``_stream``)."""
        spec = source.streamer
        gate = self.gate
        if gate is None:
            stream = PrivateStream(self, prepared, spec)
        else:
            stream = _chain.GatedStream(self, prepared, spec, gate)
        await stream.run(source.context, source.args)  # overflows are counted as they happen

    def _cohort_key(self, source: StreamerSource) -> CohortKey | None:
        """The key of the cohort this operation may join, if its streamer is shared."""
        if source.streamer.share is None or not self.sink.state.cohorts.available:
            return None
        if self.gate is not None:
            return None  # a gate decides per subscriber: members share every value
        if source.context.resume_cursor is not None:
            return None  # a resuming client replays its own history first
        return self._request_cohort_key()

    def _request_cohort_key(self) -> CohortKey | None:
        sink = self.sink
        request = self.request
        info = self.info
        scope = sink.app.cohort_scope(sink.context if info is None else info.context)
        return cohort_key(request.query, request.variables, request.operation_name, scope)

    def _existing_cohort(self) -> Cohort | None:
        """The live cohort this request would join, found from the request alone.

        Same document, variables, operation name and cohort scope mean the
        same executor and the same subscribe resolver result, so a cohort
        that exists already can be joined as it is. Requests with extensions
        (a resume cursor) always take the full path.
        """
        cohorts = self.sink.state.cohorts
        if not cohorts or self.request.extensions or self.gate is not None:
            return None
        key = self._request_cohort_key()
        return cohorts.get(key) if key is not None else None

    def _lane(self, spec: Streamer) -> Lane:
        return self.delivery.lane(self, spec.capacity, spec.policy)

    async def _join(self, cohort: Cohort, spec: Streamer, lane: Lane | None = None) -> None:
        """Be a cohort member until its stream ends; payloads reach the sink without this task."""
        if lane is None:
            lane = self._lane(spec)
            cohort.add(lane)
        try:
            parked = lane.until_closed()
            if parked is not None:
                await parked
            if lane.error is not None:
                raise lane.error
        finally:
            cohort.remove(lane)
            lane.detach()  # overflows were counted as they happened

    async def _send_result(self, result: ExecutionResult) -> None:
        await self.send_payload(dumps(format_result(result, self.label)))

    async def send_payload(self, payload: bytes) -> None:
        await self.delivery.send_payload(self, payload)

    async def _complete(self) -> None:
        await self.delivery.complete(self)

    async def _error(self, errors: list[dict[str, Any]]) -> None:
        await self.delivery.error(self, errors)
