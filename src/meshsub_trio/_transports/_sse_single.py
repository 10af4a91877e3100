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

Under ``serve --workers N``, or across ``serve --broker nats://`` processes
sharing ``MESHSUB_STREAM_SECRET``, these requests land on any process, so they
are one server's: a token says which process issued it and proves it
(:mod:`._sse_tokens`); a request this worker cannot decide goes to the worker
that can, over the broker (:mod:`._sse_relay`), and is decided there exactly
as here (:mod:`._sse_desk`). Why this shape, and not a registry in JetStream
KV: the broker's public interface is publish/subscribe, a KV round trip per
request would be the same hop without the home's one-thread atomicity, and a
token that proves itself lets every worker refuse a forged one for free
(docs/workers.md, "graphql-sse single connection mode across workers").
"""

from __future__ import annotations

import math
from collections.abc import MutableMapping
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
from ._reservations import Reservation, ReservationRefused, Reservations, reservations_of
from ._responses import JSON, send_whole
from ._sse_desk import Outcome, Place, decode, encode, give_back_home
from ._sse_relay import RelayError
from ._sse_tokens import owner_fingerprint

#: The content type of a token and of an empty acknowledgement.
TEXT = "text/plain; charset=utf-8"

if TYPE_CHECKING:
    from .._core._state import ServerState
    from ._sse_relay import StreamRelay

TOKEN_HEADER = "x-graphql-event-stream-token"
_ALLOW = [("allow", "GET, POST, PUT, DELETE")]
#: On a 503 for want of the broker or another worker: a new try may well succeed.
_RETRY = [("retry-after", "1")]


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
        #: Whether the response head is out (with ``started`` False at the end: a HEAD).
        self.head_out = False

        async def sending(message: MutableMapping[str, Any]) -> None:
            await send(message)
            if message["type"] == "http.response.start":
                self.head_out = True

        super().__init__(state, context, None, receive, sending, machine=self.single, protocol=SSE)
        self.reservation = reservation
        self.operations: dict[str, Operation] = {}
        #: Whether it serves yet (before, what is posted waits in the reservation).
        self.started = False

    def is_active(self, op_id: str) -> bool:
        return self.single.is_active(op_id)

    def _serve(self, nursery: trio.Nursery) -> None:
        """Start what was posted before the stream opened (SSE-28); then wait for more.

        Nothing, if the response has already ended with its head (a ``HEAD``,
        answered as a ``GET`` whose route is cancelled once its head is out):
        the reservation is then left as it was (:meth:`_let_go`)."""
        if trio.current_effective_deadline() == -math.inf:
            return
        self.started = True
        pending, self.reservation.pending = self.reservation.pending, {}
        for request in pending.values():
            self.start_operation(request)
        if self.state.shutting_down:
            self.shutdown()

    def start_operation(self, request: OperationRequested) -> bool:
        """Run *request* in this stream's nursery (or, before it serves, when it
        does); False if the stream is ending."""
        nursery = self._nursery
        if self.delivery.closed or self.single.closed:
            return False
        if nursery is None:
            if self.started:
                return False
            self.reservation.pending[request.id] = request
            return True
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
        self._let_go()
        self.single.close()
        for operation in tuple(self.operations.values()):
            operation.cancel_scope.cancel()
        self.delivery.close()

    def _abort(self, end: str) -> None:
        """Client gone or stalled: the token is free before the operations' cleanups
        run (so whoever waits for those sees it dropped), then everything stops."""
        self._let_go()
        super()._abort(end)

    def _closed(self) -> None:
        self.single.close()
        self._let_go()

    def _let_go(self) -> None:
        """The stream has ended: its token is free again. Unless its response
        ended with its head, before serving (a HEAD: nothing posted for it has
        run): then its reservation waits for a stream again, here or, handed
        over by another worker, back there."""
        registry = reservations_of(self.state)
        reservation = self.reservation
        if reservation.stream is not self:  # given back already
            return
        if self.started or not self.head_out:
            registry.drop(reservation)
            return
        if reservation.home is not None:
            give_back_home(registry, reservation)
            return
        parked = sum(len(dumps(encode(request))) for request in reservation.pending.values())
        registry.give_back(reservation, parked, trio.current_time())


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
    relay = registry.relay
    now = trio.current_time()
    accept = headers.get("accept")
    token = stream_token(headers, query_string)
    reservation = registry.find(token, context.auth, now)
    home = _home_elsewhere(relay, reservation, token, context.auth)
    if method == "PUT":
        await _reserve(send, accept, registry, reservation, home, token, context.auth, now)
        return
    if method in ("GET", "POST") and wants_event_stream(accept):
        if reservation is not None and reservation.opened:
            await respond(send, 409, "Stream already open")
        elif reservation is not None:
            stream = SingleStream(state, context, reservation, receive, send)
            registry.open(reservation, stream)
            await stream.run()
        elif home is not None and token is not None:
            await _open_here(state, registry, home, token, context, receive, send, method,
                             headers, query_string, body)  # fmt: skip
        else:  # SSE-23: no reservation, so an ordinary distinct-mode request
            await serve_graphql_sse(
                state, method, headers, query_string, body, context, receive, send
            )
        return
    if method not in ("GET", "POST", "DELETE"):
        await respond(send, 405, "Use GET, POST, PUT or DELETE", _ALLOW)
        return
    if reservation is not None and reservation.home is not None and not _serving(reservation):
        # Its stream is still opening here: its home decides (and holds what is
        # posted meanwhile, or passes it back here once it has handed it over).
        home, reservation = reservation.home, None
    place = Place(registry, reservation, home, token, context.auth)
    if not place.known:
        await respond(send, 404, "Stream not found")
    elif method == "DELETE":
        op_id = _query_param(query_string, "operationId")
        if op_id is None:
            await respond(send, 400, "Operation ID is missing")
            return
        await _answer(send, await place.stop(op_id))
    else:
        await _execute(state, method, headers, query_string, body, context, place, send)


def _home_elsewhere(
    relay: StreamRelay | None, found: Reservation | None, token: str | None, owner: Any
) -> str | None:
    """The other worker that issued *token* to *owner*, when this one has no
    reservation for it (None on one process, and for a token this worker issued:
    its registry is the whole truth about those)."""
    if relay is None or found is not None or token is None:
        return None
    home = relay.tokens.home_of(token, owner)
    return None if home == relay.worker else home


def _serving(reservation: Reservation) -> bool:
    stream = reservation.stream
    return isinstance(stream, SingleStream) and stream.started


async def _open_here(
    state: ServerState,
    registry: Reservations,
    home: str,
    token: str,
    context: Context,
    receive: Receive,
    send: Send,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
) -> None:
    """The stream of a token another worker issued opens on this one.

    Registered here before its home is asked, so an operation the home passes
    on as soon as it has handed the reservation over finds it (and waits in
    it until the stream runs); dropped again if the home refuses.
    """
    relay = registry.relay
    assert relay is not None
    reservation = registry.hold(token, context.auth, home)
    stream = SingleStream(state, context, reservation, receive, send)
    registry.open(reservation, stream)
    try:
        answer = await relay.call(
            home, {"k": "open", "t": token, "o": owner_fingerprint(context.auth)}
        )
    except BaseException as error:
        if isinstance(error, RelayError) and error.gone:
            answer = {"s": 404}  # its home has ended, and the reservation with it
        else:
            # No answer in time, or cancelled: the home may have handed it over
            # all the same, so it is told (it frees only what it handed to us).
            registry.drop(reservation)
            if not isinstance(error, RelayError):
                raise
            await respond(send, error.status, str(error), _RETRY)
            return
    status = answer.get("s")
    if status != 200:
        registry.drop(reservation, tell=False)
        if status == 404:  # SSE-23: gone (expired) at home, so a distinct-mode request
            await serve_graphql_sse(
                state, method, headers, query_string, body, context, receive, send
            )
        else:
            text = answer.get("m")
            await respond(send, status if isinstance(status, int) else 502, str(text))
        return
    ops = answer.get("ops")
    for item in ops if isinstance(ops, list) else ():
        request = decode(item)
        if request is not None:
            reservation.pending.setdefault(request.id, request)
    await stream.run()


async def _reserve(
    send: Send,
    accept: str | None,
    registry: Reservations,
    taken: Reservation | None,
    home: str | None,
    token: str | None,
    owner: Any,
    now: float,
) -> None:
    """``PUT``: a new token (SSE-20), unless the one it carries is live (SSE-22) or
    too many reservations wait already.

    A token that is unknown, expired or someone else's is not reused (tokens
    are the server's to choose): the client gets a new one. One another
    worker issued is live if that worker says so.
    """
    if accept and not _accepts_text(accept):
        await respond(send, 406, "Reserve with Accept: text/plain or */*")
        return
    relay = registry.relay
    if taken is None and home is not None and relay is not None:
        try:
            found = await relay.call(home, {"k": "find", "t": token, "o": owner_fingerprint(owner)})
        except RelayError:
            found = {}  # its home is unreachable, and so is the reservation: a new one
        if found.get("s") == 200:
            taken = Reservation(str(token), owner, now)
    if taken is not None:
        await respond(send, 409, "Stream already registered")
        return
    try:
        if relay is not None:  # a token issued before we listen could not be found
            await relay.wait_ready()
        reservation = registry.reserve(owner, now)
    except ReservationRefused as refused:
        retry = [("retry-after", str(refused.retry_after))]
        await respond(send, refused.status, str(refused), retry)
        return
    except RelayError as error:
        await respond(send, error.status, str(error), _RETRY)
        return
    await send_whole(send, 201, reservation.token.encode(), TEXT)


async def _execute(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context,
    place: Place,
    send: Send,
) -> None:
    """An operation for a reserved stream: checked here (errors are this request's
    answer, SSE-26), then 202 and its results on the stream (SSE-24), decided
    where the reservation is kept (:mod:`._sse_desk`)."""
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
    if place.is_active(op_id):
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
        await send_whole(send, 400, dumps({"errors": errors}), JSON)
        return
    prepared.release()
    request = OperationRequested(op_id, query, variables, operation_name, extensions)
    await _answer(send, await place.admit(state, request, len(body) + len(query_string)))


async def _answer(send: Send, outcome: Outcome) -> None:
    """A decision as the HTTP answer: an empty 202 or 200, else the error's JSON."""
    status, text = outcome
    if status in (200, 202):
        await send_whole(send, status, b"", TEXT)
    else:
        await respond(send, status, text, _RETRY if status == 503 else None)


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
