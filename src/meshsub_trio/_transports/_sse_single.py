"""graphql-sse single connection mode: one event stream, many operations (SSE-20..32).

For HTTP/1 browsers, which allow few connections per host: ``PUT`` reserves a
stream (201, the token as text); ``GET`` or ``POST`` with
``Accept: text/event-stream`` and the token (``X-GraphQL-Event-Stream-Token``
or ``?token=``) opens it; each operation is a ``POST`` with the token and
``extensions.operationId``, answered 202 while its results go to the stream
as ``{"id", "payload"}``; ``DELETE ?operationId=`` stops one.

The stream is a :class:`SingleStream`: an :class:`HttpStream` (one nursery:
writer, keep-alive, disconnect watcher) whose operations, like a WebSocket
connection's, are each one task in its own cancel scope in that nursery.
The stream ending (client gone, write deadline, shutdown) ends them all and
drops the reservation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import trio

from .._app import Context
from .._core._operation import Operation
from .._encoding import dumps
from .._execution import Prepared, format_errors
from .._wire import OperationRequested
from .._wire._machine import MAX_OPERATION_ID
from .._wire._sse import SseSingleMachine, wants_event_stream
from ._graphql_http import BadRequest, check_params, choose_media_type, read_params
from ._http_stream import SSE, HttpStream, Receive, Send, is_mutation, respond, serve_graphql_sse
from ._reservations import (
    MAX_PENDING,
    Reservation,
    ReservationRefused,
    Reservations,
    reservations_of,
)

if TYPE_CHECKING:
    from .._core._state import ServerState

TOKEN_HEADER = "x-graphql-event-stream-token"
#: The refusal past ``max_operations``: the words a WebSocket's ``error`` uses.
OPERATION_LIMIT = "Subscription limit reached"
_ALLOW = [("allow", "GET, POST, PUT, DELETE")]


def stream_token(headers: dict[str, str], query_string: bytes) -> str | None:
    """The reservation token a request carries, in the header or the URL (SSE-21)."""
    token = headers.get(TOKEN_HEADER)
    if token:
        return token
    return _query_param(query_string, "token")


def is_single_connection(
    method: str, headers: dict[str, str], query_string: bytes, body: bytes
) -> bool:
    """Whether a request on a GraphQL path belongs to single connection mode.

    A ``PUT`` without a body reserves (one with a body stays GraphQL over
    HTTP's 405); anything carrying a token is for a reserved stream.
    """
    if method == "PUT":
        return not body
    return stream_token(headers, query_string) is not None


class SingleStream(HttpStream):
    """The one event stream of a reservation, serving every operation posted to it."""

    def __init__(
        self,
        state: ServerState,
        context: Context,
        reservation: Reservation,
        receive: Receive,
        send: Send,
    ) -> None:
        self.single = SseSingleMachine()
        super().__init__(state, context, None, receive, send, machine=self.single, protocol=SSE)
        self.reservation = reservation
        self.operations: dict[str, Operation] = {}

    def is_active(self, op_id: str) -> bool:
        return self.single.is_active(op_id)

    def _serve(self, nursery: trio.Nursery) -> None:
        """Start what was posted before the stream opened (SSE-28); then wait for more."""
        pending, self.reservation.pending = self.reservation.pending, {}
        for request in pending.values():
            self.start_operation(request)
        if self.state.shutting_down:
            self.shutdown()

    def start_operation(self, request: OperationRequested) -> bool:
        """Run *request* in this stream's nursery; False if the stream is ending."""
        nursery = self._nursery
        if nursery is None or self.delivery.closed or self.single.closed:
            return False
        self.single.open(request.id)
        operation = Operation(self, request)
        self.operations[request.id] = operation
        self.metrics.operation_started(self.protocol)
        nursery.start_soon(operation.run)
        return True

    def stop(self, op_id: str) -> None:
        """``DELETE``: the operation ends and sends nothing more (SSE-29)."""
        operation = self.operations.get(op_id)
        if operation is not None and self.single.stop(op_id):
            operation.stop()

    def operation_finished(self, operation: Operation) -> None:
        if self.operations.get(operation.id) is operation:
            del self.operations[operation.id]
            self.single.release(operation.id)
        super().operation_finished(operation)

    def shutdown(self) -> None:
        """Server shutdown: end every operation, then the body after what is queued."""
        if self.end == "complete":
            self.end = "shutdown"
        reservations_of(self.state).drop(self.reservation)
        self.single.close()
        for operation in tuple(self.operations.values()):
            operation.cancel_scope.cancel()
        self.delivery.close()

    def _abort(self, end: str) -> None:
        """Client gone or stalled: the token is free before the operations' cleanups
        run (so whoever waits for those sees it dropped), then everything stops."""
        reservations_of(self.state).drop(self.reservation)
        super()._abort(end)

    def _closed(self) -> None:
        self.single.close()
        reservations_of(self.state).drop(self.reservation)


async def serve_sse_single(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context,
    receive: Receive,
    send: Send,
) -> None:
    """One request of single connection mode (see :func:`is_single_connection`)."""
    registry = reservations_of(state)
    now = trio.current_time()
    accept = headers.get("accept")
    reservation = registry.find(stream_token(headers, query_string), context.auth, now)
    if method == "PUT":
        await _reserve(send, accept, registry, reservation, context.auth, now)
        return
    if method in ("GET", "POST") and wants_event_stream(accept):
        if reservation is None:  # SSE-23: no reservation, so an ordinary distinct-mode request
            await serve_graphql_sse(
                state, method, headers, query_string, body, context, receive, send
            )
        elif reservation.stream is not None:
            await respond(send, 409, "Stream already open")
        else:
            stream = SingleStream(state, context, reservation, receive, send)
            registry.open(reservation, stream)
            await stream.run()
        return
    if method not in ("GET", "POST", "DELETE"):
        await respond(send, 405, "Use GET, POST, PUT or DELETE", _ALLOW)
    elif reservation is None:
        await respond(send, 404, "Stream not found")
    elif method == "DELETE":
        op_id = _query_param(query_string, "operationId")
        if op_id is None:
            await respond(send, 400, "Operation ID is missing")
            return
        if reservation.pending.pop(op_id, None) is None and reservation.stream is not None:
            reservation.stream.stop(op_id)
        await _text(send, 200, b"")
    else:
        await _execute(state, method, headers, query_string, body, context, reservation, send)


async def _reserve(
    send: Send,
    accept: str | None,
    registry: Reservations,
    taken: Reservation | None,
    owner: Any,
    now: float,
) -> None:
    """``PUT``: a new token (SSE-20), unless the one it carries is live (SSE-22) or
    too many reservations wait already.

    A token that is unknown, expired or someone else's is not reused (tokens
    are the server's to choose): the client gets a new one.
    """
    if accept and not _accepts_text(accept):
        await respond(send, 406, "Reserve with Accept: text/plain or */*")
        return
    if taken is not None:
        await respond(send, 409, "Stream already registered")
        return
    try:
        reservation = registry.reserve(owner, now)
    except ReservationRefused as refused:
        retry = [("retry-after", str(refused.retry_after))]
        await respond(send, refused.status, str(refused), retry)
        return
    await _text(send, 201, reservation.token.encode())


async def _execute(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context,
    reservation: Reservation,
    send: Send,
) -> None:
    """An operation for a reserved stream: checked here (errors are this request's
    answer, SSE-26), then 202 and its results on the stream (SSE-24)."""
    if choose_media_type(headers.get("accept")) is None:
        await respond(send, 406, "Accept application/json")
        return
    try:
        params = read_params(method, headers, query_string, body)
        query, variables, operation_name = check_params(params)
    except BadRequest as problem:
        await respond(send, problem.status, str(problem))
        return
    extensions: dict[str, Any] = params.get("extensions") or {}
    op_id = extensions.get("operationId")
    if not isinstance(op_id, str) or not op_id:
        await respond(send, 400, "Operation ID is missing")
        return
    if len(op_id) > MAX_OPERATION_ID:
        await respond(send, 400, f"Operation ID is longer than {MAX_OPERATION_ID} characters")
        return
    if reservation.is_active(op_id):
        await respond(send, 409, "Operation with ID already exists")
        return
    if method == "GET" and await is_mutation(state, query, variables, operation_name, context):
        await respond(send, 405, "Mutations need POST", [("allow", "POST")])
        return
    prepared = await state.engine.prepare_async(
        query, variables, operation_name, context, "HTTP stream"
    )
    if not isinstance(prepared, Prepared):
        errors = format_errors(prepared, f"operation {op_id[:64]}")
        await _json(send, 400, dumps({"errors": errors}))
        return
    prepared.release()
    request = OperationRequested(op_id, query, variables, operation_name, extensions)
    stream = reservation.stream
    if reservation.is_active(op_id):  # posted twice while this one was preparing
        await respond(send, 409, "Operation with ID already exists")
    elif _at_limit(state, reservation):  # checked last: others may have come in meanwhile
        await respond(send, 429, OPERATION_LIMIT)
    elif stream is None and len(reservation.pending) >= MAX_PENDING:
        await respond(send, 429, "Too many operations before the stream opened")
    elif stream is None:
        refused = reservations_of(state).park(reservation, len(body) + len(query_string))
        if refused == "reservation":
            await respond(send, 429, "Too many operation bytes before the stream opened")
        elif refused == "server":
            await respond(send, 503, "Too many operations wait for their streams")
        else:
            reservation.pending[op_id] = request
            await _text(send, 202, b"")
    elif stream.start_operation(request):
        await _text(send, 202, b"")
    else:
        await respond(send, 404, "Stream not found")


def _at_limit(state: ServerState, reservation: Reservation) -> bool:
    """Whether the token has ``max_operations`` already, held or running: the
    per-connection cap a WebSocket has (``pending`` alone also stops at
    ``MAX_PENDING``, whatever this is)."""
    limit = state.config.max_operations
    return limit is not None and reservation.operation_count() >= limit


def _accepts_text(accept: str) -> bool:
    for item in accept.split(","):
        media = item.split(";")[0].strip().lower()
        if media in ("*/*", "text/*", "text/plain"):
            return True
    return False


def _query_param(query_string: bytes, name: str) -> str | None:
    for key, value in parse_qsl(query_string.decode("latin-1")):
        if key == name and value:
            return value
    return None


async def _text(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"text/plain; charset=utf-8")]
    await _body(send, status, body, headers)


async def _json(send: Send, status: int, body: bytes) -> None:
    await _body(send, status, body, [(b"content-type", b"application/json; charset=utf-8")])


async def _body(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
