"""One HTTP response as a delivery sink: GraphQL over SSE or multipart.

The same shape as a WebSocket connection. The stream is one Trio nursery;
its children are the operation (the very
:class:`~meshsub_trio._core._operation.Operation` a WebSocket runs: the same
engine, streamers, cohorts, bounded buffers and overflow policies, and a
``finally`` that runs exactly once), the writer (the only task that sends),
the keep-alive and a watcher for the client going away. Whatever ends it
(the operation completing or failing, ``http.disconnect``, a write past
``write_timeout``, server shutdown) cancels the nursery or closes the delivery.

Two hosts, two kinds of ``send``. The native host's can be cancelled, so a
write past its deadline gives up and the stream ends at once. hypercorn's
cannot (it shields the socket write), so there the watcher enforces the
deadline instead: it ends the operations (their cleanups run, their buffers
go) while the writer stays in hypercorn's send until the socket dies; the
writer is still a child of this nursery, so nothing outlives the connection.
hypercorn also never tells an app that it is shutting down (``lifespan.shutdown``
comes after every connection has closed): it cancels the app once its
``graceful_timeout`` has passed, and the stream then ends its body the way a
shutdown does (bounded by ``close_timeout`` only where a send can be
cancelled: a reader that stops reading just then holds it until its socket
dies, as a stalled reader always does under hypercorn).

The body's format is the stream's *machine*, a sans-IO framer: graphql-sse
(:class:`~meshsub_trio._wire._sse.SseMachine`) or Apollo's multipart
(:class:`~meshsub_trio._wire._multipart.MultipartMachine`); the stream
itself does not know which. A single-connection graphql-sse stream
(``_sse_single``) is a subclass that serves many operations.

The operation hands its frames to this stream's
:class:`~meshsub_trio._core._delivery.Delivery`, as it would a WebSocket's;
here every frame is queued for the writer, never written inline: an ASGI
``send`` is an await, so there is no non-blocking write to take a fast path
with.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Protocol

import trio
from graphql import OperationType

from .._app import Context
from .._core._delivery import Delivery, Framer
from .._core._operation import Operation
from .._execution import Prepared
from .._wire import OperationRequested
from .._wire._sse import STREAM_HEADERS, SseMachine
from ._client_watch import ClientWatch
from ._graphql_http import BadRequest, check_params, read_params
from ._responses import JSON, error_body, send_whole

if TYPE_CHECKING:
    from .._core._state import ServerState

log = logging.getLogger("meshsub_trio.http_stream")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The ``protocol`` label of SSE operations on /metrics.
SSE = "sse"


class StreamMachine(Framer, Protocol):
    """A body format: a framer that also opens the body and frames keep-alives."""

    def start(self) -> bytes:
        """The first chunk, written with the headers."""

    def keepalive(self) -> bytes | None:
        """A keep-alive, or None once the body has ended."""


class HttpStream:
    """The driver between one HTTP response and its operation."""

    def __init__(
        self,
        state: ServerState,
        context: Context,
        request: OperationRequested | None,
        receive: Receive,
        send: Send,
        *,
        machine: StreamMachine | None = None,
        headers: tuple[tuple[str, str], ...] = STREAM_HEADERS,
        protocol: str = SSE,
        keepalive: float | None = None,
    ) -> None:
        self.state = state
        self.app = state.app
        self.engine = state.engine
        self.config = state.config
        self.metrics = state.metrics
        self.context = context
        self.protocol = protocol
        #: The kind of sink, as interceptors and metrics name it.
        self.transport = protocol
        self.machine: StreamMachine = machine if machine is not None else SseMachine()
        self.headers = headers
        #: Seconds between keep-alives (0: none); the server's ``keepalive`` by default.
        self.keepalive = state.config.keepalive if keepalive is None else keepalive
        self.delivery = Delivery(
            self.machine, self.metrics, protocol=protocol, capacity=state.config.outbox_size
        )
        self.delivery.wake_writer = self._on_work
        self.request = request
        self._send = send
        self._work = trio.Event()
        self._nursery: trio.Nursery | None = None
        #: The body's writes, and the client they tell of (watched beside the writer).
        self._client = ClientWatch(
            receive, send, self.config.write_timeout, gone=self._abort, stalled=self._stalled
        )
        self.operation: Operation | None = None
        #: How the stream ended: complete, disconnect, stalled, shutdown.
        self.end = "complete"
        #: Errors to stream instead of running an operation (a request-level problem).
        self._refusal: list[dict[str, Any]] | None = None

    # ---- what the operation core calls ----------------------------------
    def operation_finished(self, operation: Operation) -> None:
        """Called exactly once, from the operation's ``finally``."""
        self.metrics.operation_finished(self.protocol)

    # ---- lifecycle -----------------------------------------------------
    async def run(self) -> None:
        """Answer with the stream and serve until it ends.

        The headers and the machine's first chunk go out at once (SSE-01,
        flushes proxies); then the operation runs. Every cleanup has run
        when this returns.
        """
        streams = self.state.http_streams
        streams.add(self)
        started = False
        try:
            try:
                await self._send(
                    {
                        "type": "http.response.start",
                        "status": 200,
                        "headers": [(k.encode(), v.encode()) for k, v in self.headers],
                    }
                )
            except Exception:  # reset before the headers: what it registered still goes
                self._abort("disconnect")
                return
            started = True
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await self.delivery.send(None, self.machine.start())
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._client.watch)
                if self.keepalive > 0:
                    nursery.start_soon(self._keepalive_loop)
                self._serve(nursery)
        finally:
            self._nursery = None
            if started and not self._client.finished and self.end == "complete":
                await self._end_when_cancelled()
            streams.discard(self)
            self.delivery.release()
            self._closed()

    def _serve(self, nursery: trio.Nursery) -> None:
        """Start what the stream serves: here its one operation (or the refusal)."""
        assert self.request is not None
        if self._refusal is not None:
            frame = self.machine.error(self.request.id, self._refusal)
            nursery.start_soon(self._send_last, frame or b"")
            return
        operation = Operation(self, self.request)
        self.operation = operation
        self.metrics.operation_started(self.protocol)
        if self.state.shutting_down:
            self.shutdown()
        nursery.start_soon(self._run_operation, operation)

    def _closed(self) -> None:
        """The nursery has exited (a subclass lets go of what it registered)."""

    async def _end_when_cancelled(self) -> None:
        """The host cancelled the stream before it ended (hypercorn at
        ``graceful_timeout``, with no shutdown announced first): end it as a
        shutdown would, so the client sees a whole body and reconnects.

        The operations have already run their cleanups; what they queued, the
        last words and the body's end are written, shielded, under a
        ``close_timeout`` deadline (which a host's uncancellable send ignores).
        """
        self.shutdown()
        self.delivery.close()
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.config.close_timeout
            frames = self.delivery.take()
            if frames and not await self._write(b"".join(frames), more=True, count=len(frames)):
                return
            await self._end_body()

    async def _send_last(self, frame: bytes) -> None:
        await self.delivery.send(None, frame)
        self.delivery.close()

    def refuse(self, errors: list[dict[str, Any]]) -> None:
        """Stream *errors* then ``complete`` instead of running the request."""
        self._refusal = errors

    async def _run_operation(self, operation: Operation) -> None:
        """The operation, then no more output: the writer ends the response."""
        try:
            await operation.run()
        finally:
            self.delivery.close()

    def shutdown(self) -> None:
        """Server shutdown: end the operation; the response ends after what is queued."""
        if self.end == "complete":
            self.end = "shutdown"
        if self.operation is not None:
            self.operation.cancel_scope.cancel()

    def _abort(self, end: str) -> None:
        """The client cannot hear us (gone, or not reading): stop everything now."""
        if self.end in ("complete", "shutdown"):
            self.end = end
        self._client.finished = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _stalled(self) -> None:
        """A write is past ``write_timeout``: the reader is dropped (once)."""
        if self.end in ("disconnect", "stalled"):
            return
        log.warning(
            "write stalled %.1fs: dropping a slow %s consumer",
            self.config.write_timeout,
            self.protocol,
            extra={"protocol": self.protocol, "write_timeout_s": self.config.write_timeout},
        )
        self._abort("stalled")

    async def _keepalive_loop(self) -> None:
        """A keep-alive (SSE ``:``, a multipart ``{}``) every ``keepalive`` seconds, under
        the write deadline (SSE-03, MP-03)."""
        while True:
            await trio.sleep(self.keepalive)
            if self.delivery.closed or (frame := self.machine.keepalive()) is None:
                return
            await self.delivery.send(None, frame)

    def _last_words(self) -> bytes | None:
        """A frame to end the body with, after everything queued (None: nothing).

        Asked by the writer only, so it follows whatever the operation left
        behind (a cohort's buffered events included).
        """
        return None

    # ---- writing -------------------------------------------------------
    async def _end_body(self) -> None:
        """The last words, if any, as the body's final chunk."""
        last = self._last_words()
        await self._write(last or b"", more=False, count=1 if last else 0)

    def _on_work(self) -> None:
        self._work.set()

    async def _write_loop(self) -> None:
        """What the delivery queued, as body chunks; once it is closed and empty, end the body."""
        delivery = self.delivery
        while True:
            while not delivery.has_work and not delivery.closed:
                self._work = trio.Event()
                await self._work.wait()
            frames = delivery.take()
            if frames and not await self._write(b"".join(frames), more=True, count=len(frames)):
                return
            if delivery.closed and not delivery.has_work:
                await self._end_body()
                assert self._nursery is not None
                self._nursery.cancel_scope.cancel()  # the watcher and the keep-alive
                return
            await trio.lowlevel.checkpoint()

    async def _write(self, data: bytes, *, more: bool, count: int) -> bool:
        """One body chunk under ``write_timeout``: a reader that stops reading is dropped."""
        if not await self._client.write(data, more=more):
            return False
        self.delivery.sent(count)
        # hypercorn's send() after a disconnect returns without a checkpoint.
        await trio.lowlevel.checkpoint()
        return True


async def serve_graphql_sse(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context,
    receive: Receive,
    send: Send,
) -> None:
    """graphql-sse distinct connections mode: one request, one operation, one stream.

    Only what makes the request unreadable is an HTTP error (405, 415, 400
    for malformed JSON or wrongly typed parameters), and a mutation over GET
    (405, ``Allow: POST``: GET must not change anything). Everything GraphQL
    says about the request (a missing query, syntax, validation) is streamed
    as ``next`` with the errors, then ``complete`` (protocols §6), because
    EventSource hides the body of an HTTP error.
    """
    if method not in ("GET", "POST"):
        await respond(send, 405, "Use GET or POST", [("allow", "GET, POST")])
        return
    try:
        params = read_params(method, headers, query_string, body)
        missing = "query" not in params
        if missing:
            params = {**params, "query": ""}
        query, variables, operation_name = check_params(params)
    except BadRequest as problem:
        await respond(send, problem.status, str(problem))
        return
    if (
        method == "GET"
        and not missing
        and await is_mutation(state, query, variables, operation_name, context)
    ):
        await respond(send, 405, "Mutations need POST", [("allow", "POST")])
        return
    extensions = params.get("extensions")
    request = OperationRequested("sse", query, variables, operation_name, extensions)
    stream = HttpStream(state, context, request, receive, send)
    if missing:
        stream.refuse([{"message": "Missing query"}])
    await stream.run()


async def is_mutation(
    state: ServerState,
    query: str,
    variables: dict[str, Any] | None,
    operation_name: str | None,
    context: Context,
) -> bool:
    """Whether a GET asks for a mutation (refused before the stream starts).

    A document that does not prepare is left to the operation, which streams
    its errors; the document cache makes the operation's own preparation cheap.
    """
    prepared = await state.engine.prepare_async(
        query, variables, operation_name, context, "HTTP stream"
    )
    if not isinstance(prepared, Prepared):
        return False
    try:
        return prepared.kind is OperationType.MUTATION
    finally:
        prepared.release()


async def respond(
    send: Send, status: int, message: str, extra: list[tuple[str, str]] | None = None
) -> None:
    await send_whole(send, status, error_body(message), JSON, extra or ())
