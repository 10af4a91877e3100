"""One long-poll request as an operation's delivery sink: GraphQL for clients that can only poll.

``POST`` a GraphQL HTTP path with ``Accept: application/x-meshsub-poll+json``
and ``?wait=S``. The document is prepared first (parsed and validated, waiting
its turn as every new document does), beside a watcher for the client
leaving; then the operation (the same :class:`Operation` a WebSocket or an
SSE stream runs) starts in its own cancel scope inside the request's
nursery. When the answer is taken the operation is cancelled, so its cleanup
runs exactly once however the request ends. The client leaving ends the
request at any point, with no answer.

A query or mutation (or a refused document) has one result, and it is the
answer whatever ``wait`` says: an empty answer would leave a client unable
to tell whether its mutation was applied, and its retry would apply it
twice. It is bounded as a plain GraphQL request is: by the client leaving
and, on shutdown, by the server's grace for requests in flight.

A subscription is answered as soon as a payload is queued (with whatever
else is queued by then), or after ``wait`` seconds with none, counted from
when its document was prepared, or at once on shutdown.

``wait=0`` answers with what is there now: everything the subscription
produces before it first has to wait. The scheduler runs until every task of
the operation (its own, and those it started, such as a shared streamer's)
is waiting on something not ready yet (I/O, a timer, a thread, another task)
or has ended, for at most :data:`~._settle.MAX_PASSES` passes (an operation
that never waits); see :mod:`._settle`. Preparing the document comes before
that and does not count, however long its turn takes. So a state-shaped
stream's current state and a cursor stream's replay from memory are in the
answer; a value that needs a timer or a network round trip first is not
(poll again, or with a wait).

The answer is ``{"payloads": [...], "complete": bool, "seen": digest}``.
Cursor streams carry ``extensions.cursor`` in each payload: the next poll
sends the last one back and resumes with nothing lost or repeated. A
state-shaped stream answers its current state at once; ``seen`` (a digest of
the last payload) sent back as ``extensions.seen`` lets the next poll skip
an unchanged snapshot and wait for a real change instead of spinning.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from hashlib import blake2b
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import trio
from graphql import OperationType, get_operation_ast

from .._app import Context
from .._core._delivery import Delivery
from .._core._operation import Operation
from .._encoding import dumps
from .._wire import OperationRequested
from ._client_watch import until_disconnect
from ._graphql_http import BadRequest, check_params, read_params
from ._responses import JSON, error_body, send_whole
from ._settle import adopting, settle, watching

if TYPE_CHECKING:
    from .._core._state import ServerState

log = logging.getLogger("meshsub_trio.poll")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: The media type that asks a GraphQL HTTP path for a long-poll answer.
POLL_MEDIA_TYPE = "application/x-meshsub-poll+json"
#: The ``protocol`` (and transport) label of long-poll operations.
POLL = "poll"
DEFAULT_WAIT_S = 25.0
MAX_WAIT_S = 60.0


def wants_poll(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for a long-poll answer."""
    if not accept:
        return False
    return any(item.split(";")[0].strip().lower() == POLL_MEDIA_TYPE for item in accept.split(","))


def digest(payload: bytes) -> str:
    """A short, stable name for a payload's bytes (the ``seen`` of an answer)."""
    return blake2b(payload, digest_size=12).hexdigest()


def parse_wait(query_string: bytes) -> float:
    """``?wait=S`` in seconds (default 25, at most 60); raises ValueError."""
    raw = dict(parse_qsl(query_string.decode("latin-1"))).get("wait", "").strip()
    if not raw:
        return DEFAULT_WAIT_S
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        raise ValueError(f"wait must be a number of seconds from 0 to {MAX_WAIT_S:g}")
    return wait


class PollFramer:
    """The envelope of a poll: payloads as they are, ``complete`` as a state.

    ``next`` returns the payload itself (the answer joins them into a JSON
    list). The first payload is dropped when it is the snapshot the client
    already has (``seen``). ``complete`` and ``error`` end it; after that
    every frame request answers None, as the other framers do.
    """

    __slots__ = ("_first", "ended", "seen")

    def __init__(self, seen: str | None) -> None:
        self.seen = seen
        self.ended = False
        self._first = True

    def next(self, _id: str, payload: bytes) -> bytes | None:
        if self.ended:
            return None
        first, self._first = self._first, False
        if first and self.seen is not None and digest(payload) == self.seen:
            return None  # the state the client has: wait for a change
        return payload

    def complete(self, _id: str) -> bytes | None:
        if self.ended:
            return None
        self.ended = True
        return b""  # a marker only: the answer says ``complete``

    def error(self, _id: str, errors: list[dict[str, Any]]) -> bytes | None:
        if self.ended:
            return None
        self.ended = True
        return dumps({"errors": errors})  # as graphql-sse streams it: no ``data``


class PollSink:
    """The driver between one long-poll request and one operation."""

    #: The kind of sink, as interceptors and metrics name it.
    transport = POLL

    def __init__(
        self,
        state: ServerState,
        context: Context,
        request: OperationRequested,
        wait: float,
        receive: Receive,
    ) -> None:
        self.state = state
        self.app = state.app
        self.engine = state.engine
        self.config = state.config
        self.metrics = state.metrics
        self.context = context
        self.protocol = POLL
        extensions = request.extensions or {}
        seen = extensions.get("seen")
        self.framer = PollFramer(seen if isinstance(seen, str) else None)
        self.delivery = Delivery(
            self.framer, self.metrics, protocol=POLL, capacity=state.config.outbox_size
        )
        self.delivery.wake_writer = self._on_work
        self.request = request
        self.wait = wait
        self._receive = receive
        self._work = trio.Event()
        #: Set when the operation's task has ended.
        self._ended = trio.Event()
        #: A query, mutation or refused document: answered with its result only.
        self._single = False
        self.operation: Operation | None = None
        #: How the request ended: answered, timeout, disconnect, shutdown.
        self.end = "answered"

    def operation_finished(self, operation: Operation) -> None:
        """Called exactly once, from the operation's ``finally``."""
        self.metrics.operation_finished(POLL)

    def shutdown(self) -> None:
        """Server shutdown: answer now with what is queued; a query or mutation
        still answers its result (the server's grace for requests in flight bounds it)."""
        if self._single:
            return
        self.end = "shutdown"
        self._work.set()

    def _on_work(self) -> None:
        self._work.set()

    async def run(self) -> bytes | None:
        """The answer's body, or None when the client left before it."""
        streams = self.state.http_streams
        streams.add(self)
        frames: list[bytes] | None = None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_client, nursery.cancel_scope)
                frames = await self._answer(nursery)
        finally:
            streams.discard(self)
            self.delivery.release()
        if frames is None:
            return None  # the client left: no one to answer
        payloads = [frame for frame in frames if frame]
        self.delivery.sent(len(payloads))
        if not payloads and self.end == "answered":
            self.end = "timeout"
        seen = dumps(digest(payloads[-1])) if payloads else b"null"
        complete = b"true" if self.framer.ended else b"false"
        return (
            b'{"payloads":[' + b",".join(payloads) + b'],"complete":' + complete
            + b',"seen":' + seen + b"}"
        )  # fmt: skip

    async def _answer(self, nursery: trio.Nursery) -> list[bytes]:
        """Prepare, run the operation until its answer is due, take it, end the operation."""
        self._single = await self._one_result()
        operation = Operation(self, self.request)
        self.operation = operation
        self.metrics.operation_started(POLL)
        if self._single:
            # Its result (or errors) is the answer, however long it takes: an
            # empty answer would leave a client unable to tell whether a
            # mutation was applied. The client leaving still ends it.
            nursery.start_soon(self._run_operation, operation)
            await self._ended.wait()
        elif self.wait == 0:
            with watching() as watch:
                with adopting(watch):
                    nursery.start_soon(self._run_operation, operation)
                await settle(watch, lambda: self.state.shutting_down)
        else:
            nursery.start_soon(self._run_operation, operation)
            if self.state.shutting_down:
                self.shutdown()
            await self._wait_for_work()
        # Take and cancel in one step: nothing is produced in between.
        frames = self.delivery.take()
        self.delivery.close()
        operation.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
        return frames

    async def _one_result(self) -> bool:
        """Prepare the document, waiting its turn as every new document does
        (``DocumentCache.fetch``), so that none of this counts as the operation's
        own waiting; then whether the operation has one result: a query, a
        mutation, or errors. The operation finds the document cached."""
        request = self.request
        document = await self.engine.documents.fetch(request.query)
        if document.node is None:
            # Refused: its errors are the answer. A refusal of the moment (not
            # cached: validation ran out of time) is prepared again by the
            # operation and may then run, so it is answered as a subscription
            # would be (a refused document applies nothing: a retry is safe).
            return document.lasting
        ast = get_operation_ast(document.node, request.operation_name)
        return ast is None or ast.operation is not OperationType.SUBSCRIPTION

    async def _watch_client(self, request: trio.CancelScope) -> None:
        """The client leaving ends the whole request, whatever it was waiting for."""
        await until_disconnect(self._receive)
        self.end = "disconnect"
        request.cancel()

    async def _wait_for_work(self) -> None:
        """Until something is queued (then one more pass, to gather what is ready),
        the wait is over or shutdown."""
        with trio.move_on_after(self.wait):
            while not (self.delivery.has_work or self.end == "shutdown"):
                self._work = trio.Event()
                await self._work.wait()
            if self.end != "shutdown":
                # Let producers already scheduled (a burst, a replay) add theirs.
                await trio.lowlevel.checkpoint()

    async def _run_operation(self, operation: Operation) -> None:
        try:
            await operation.run()
        finally:
            self._ended.set()
            self._work.set()


async def serve_graphql_poll(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context,
    receive: Receive,
    send: Send,
) -> None:
    """One long-poll: POST only; a malformed request or ``wait`` is a plain HTTP error.

    GraphQL's own errors (syntax, validation, a cursor the log cannot serve)
    are an answer: one payload with ``errors`` and no ``data``, ``complete``.
    """
    if method != "POST":
        await send_whole(send, 405, error_body("Long-poll needs POST"), JSON, [("allow", "POST")])
        return
    try:
        wait = parse_wait(query_string)
        params = read_params(method, headers, query_string, body)
        query, variables, operation_name = check_params(params)
    except BadRequest as problem:
        await send_whole(send, problem.status, error_body(str(problem)), JSON)
        return
    except ValueError as problem:
        await send_whole(send, 400, error_body(str(problem)), JSON)
        return
    extensions = params.get("extensions")
    if extensions is not None and not isinstance(extensions, dict):
        await send_whole(send, 400, error_body("extensions must be an object"), JSON)
        return
    request = OperationRequested(POLL, query, variables, operation_name, extensions)
    sink = PollSink(state, context, request, wait, receive)
    answer = await sink.run()
    if answer is not None:
        await send_whole(send, 200, answer, JSON, [("cache-control", "no-store")])
