"""Where a reservation changes: here, or on the worker that has it (graphql-sse SSE-24..31).

A reservation lives on one worker at a time. Until its stream opens it lives
on its *home*, the worker that issued its token, which holds what is posted
before that (SSE-28) and counts it against the caps. When the stream opens on
another worker, the home hands it over (:func:`hand_over`): the pending
operations go to that worker, the *holder*, which runs them and every later
one; the home keeps only the holder's name, to route to it and to refuse a
second stream (SSE-23).

:func:`admit` and :func:`stop` are the only ways in, for a request that
arrives here and for one another worker passes on (:class:`Desk`): a home
whose stream is held elsewhere forwards them, and a holder whose stream has
gone answers 404, so each request is decided in exactly one place, with the
same checks a single process makes.

:func:`relay_running` puts the desk on the relay for as long as the server
runs (``ServerState.running``), on the broker the relay was made with.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import trio

from .._encoding import dumps
from .._wire import OperationRequested
from ..brokers import BrokerClosed
from ._reservations import (
    MAX_PENDING,
    MAX_PENDING_BYTES,
    Reservation,
    Reservations,
    reservations_of,
)
from ._sse_relay import GRACE, RelayError
from ._sse_tokens import owner_fingerprint

if TYPE_CHECKING:
    from .._core._state import ServerState
    from ._sse_relay import StreamRelay

log = logging.getLogger("meshsub_trio.sse_relay")

#: The refusal past ``max_operations``: the words a WebSocket's ``error`` uses.
OPERATION_LIMIT = "Subscription limit reached"
NOT_FOUND = (404, "Stream not found")

Outcome = tuple[int, str]


async def admit(
    state: ServerState,
    registry: Reservations,
    reservation: Reservation,
    request: OperationRequested,
    size: int,
    deadline: float | None = None,
) -> Outcome:
    """Run *request* on the reservation's stream or hold it for the stream:
    ``(202, "")``, or the refusal's status and message. (*deadline*: by when
    a holder must have it, for a request another worker passed on.)"""
    if reservation.holder is not None:
        message = {"k": "op", "t": reservation.token, "op": encode(request), "n": size}
        return await _forward(registry, reservation, message, deadline)
    stream = reservation.stream
    if reservation.is_active(request.id):  # posted twice while this one was preparing
        return 409, "Operation with ID already exists"
    if _at_limit(state, reservation):  # checked last: others may have come in meanwhile
        return 429, OPERATION_LIMIT
    if (stream is None or not stream.started) and len(reservation.pending) >= MAX_PENDING:
        return 429, "Too many operations before the stream opened"
    if stream is None:
        refused = registry.park(reservation, size)
        if refused == "reservation":
            return 429, "Too many operation bytes before the stream opened"
        if refused == "server":
            return 503, "Too many operations wait for their streams"
        reservation.pending[request.id] = request
        return 202, ""
    if stream.start_operation(request):
        return 202, ""
    return NOT_FOUND


async def stop(
    registry: Reservations, reservation: Reservation, op_id: str, deadline: float | None = None
) -> Outcome:
    """``DELETE``: the operation ends (or never starts) and sends nothing more (SSE-29)."""
    if reservation.holder is not None:
        message = {"k": "stop", "t": reservation.token, "id": op_id}
        return await _forward(registry, reservation, message, deadline)
    if reservation.pending.pop(op_id, None) is None and reservation.stream is not None:
        reservation.stream.stop(op_id)
    return 200, ""


def hand_over(registry: Reservations, reservation: Reservation, holder: str) -> dict[str, Any]:
    """The home's answer to a stream opening on worker *holder*: the pending
    operations, now the holder's (or 409: only one stream may serve a token)."""
    if reservation.opened:
        return {"s": 409, "m": "Stream already open"}
    pending = registry.hand_over(reservation, holder, trio.current_time())
    return {"s": 200, "ops": [encode(request) for request in pending]}


def give_back_home(registry: Reservations, reservation: Reservation) -> None:
    """A held stream ended before serving (a HEAD): its reservation, with what
    was posted for it, goes back to its home, to wait there for a stream."""
    home = reservation.home
    registry.drop(reservation, tell=False)
    reservation.stream = None
    relay = registry.relay
    if relay is not None and home is not None:
        ops = [encode(request) for request in reservation.pending.values()]
        owner = owner_fingerprint(reservation.owner)
        relay.tell(home, {"k": "back", "t": reservation.token, "o": owner, "ops": ops})


async def _forward(
    registry: Reservations,
    reservation: Reservation,
    message: dict[str, Any],
    deadline: float | None,
) -> Outcome:
    """Ask the holder (we are the home), by *deadline* if another worker asked
    us (less the time our answer needs to reach it).

    Only a holder that was asked and failed to answer loses the reservation
    (404, the token free again): one that is gone (its worker died: the
    broker says so at once) or wedged (no answer while the broker is up)
    has a useless stream. A question never sent (no time left for it, the
    broker's queue full or the broker down) says nothing of the holder: a
    503, and the stream lives on."""
    relay = registry.relay
    holder = reservation.holder
    assert relay is not None and holder is not None
    message["o"] = owner_fingerprint(reservation.owner)
    try:
        answer = await relay.call(holder, message, deadline=deadline)
    except RelayError as error:
        if _holder_failed(relay, error):
            registry.drop(reservation)
            return NOT_FOUND
        return error.status, str(error)
    status, text = _outcome(answer)
    if status == 404:  # the holder's stream has ended: its notice may still be on its way
        registry.drop(reservation)
    return status, text


def _holder_failed(relay: StreamRelay, error: RelayError) -> bool:
    """Whether *error* says the holder asked is dead or wedged (see :func:`_forward`)."""
    return error.gone or (error.unanswered and relay.link_up())


def _outcome(answer: dict[str, Any]) -> Outcome:
    status, text = answer.get("s"), answer.get("m", "")
    if not isinstance(status, int) or not isinstance(text, str):
        return 502, "A worker gave a malformed answer"
    return status, text


def _at_limit(state: ServerState, reservation: Reservation) -> bool:
    """Whether the token has ``max_operations`` already, held or running: the
    per-connection cap a WebSocket has (``pending`` alone also stops at
    ``MAX_PENDING``, whatever this is)."""
    limit = state.config.max_operations
    return limit is not None and reservation.operation_count() >= limit


def encode(request: OperationRequested) -> list[Any]:
    return [
        request.id, request.query, request.variables, request.operation_name, request.extensions,
    ]  # fmt: skip


def decode(item: Any) -> OperationRequested | None:
    """An operation as another worker sent it, or None if it is not one."""
    if not isinstance(item, list) or len(item) != 5:
        return None
    op_id, query, variables, name, extensions = item
    if not (
        isinstance(op_id, str)
        and isinstance(query, str)
        and isinstance(variables, dict | None)
        and isinstance(name, str | None)
        and isinstance(extensions, dict | None)
    ):
        return None
    return OperationRequested(op_id, query, variables, name, extensions)


class Place:
    """Where a request's reservation is decided: this worker's registry (it has
    *reservation*), or the worker that issued *token* (*home*), asked over the
    relay on behalf of *owner* (which the home checks again)."""

    def __init__(
        self,
        registry: Reservations,
        reservation: Reservation | None,
        home: str | None,
        token: str | None,
        owner: Any,
    ) -> None:
        self.registry = registry
        self.reservation = reservation
        self.home = home
        self.token = token
        self.owner = owner_fingerprint(owner)

    @property
    def known(self) -> bool:
        return self.reservation is not None or (self.home is not None and self.token is not None)

    def is_active(self, op_id: str) -> bool:
        """Taken here already (a reservation kept elsewhere is checked there)."""
        return self.reservation is not None and self.reservation.is_active(op_id)

    async def admit(self, state: ServerState, request: OperationRequested, size: int) -> Outcome:
        if self.reservation is not None:
            return await admit(state, self.registry, self.reservation, request, size)
        message = {"k": "op", "t": self.token, "op": encode(request), "n": size, "o": self.owner}
        return await self._ask(message)

    async def stop(self, op_id: str) -> Outcome:
        if self.reservation is not None:
            return await stop(self.registry, self.reservation, op_id)
        return await self._ask({"k": "stop", "t": self.token, "id": op_id, "o": self.owner})

    async def _ask(self, message: dict[str, Any]) -> Outcome:
        relay = self.registry.relay
        assert relay is not None and self.home is not None
        try:
            answer = await relay.call(self.home, message)
        except RelayError as error:
            if error.gone:  # its home has ended, and every reservation it kept
                return NOT_FOUND
            return error.status, str(error)
        return _outcome(answer)


#: What one worker may ask or tell another (see :meth:`Desk.handle`).
_KINDS = frozenset({"closed", "held", "back", "find", "open", "op", "stop"})


class Desk:
    """Answers the other workers' requests about the reservations kept here."""

    def _take_back(self, reservation: Reservation, ops: Any) -> None:
        """What a holder gives back (the operations posted for a stream that never
        served) waits here for the next stream, within the usual bounds."""
        pending: dict[str, OperationRequested] = {}
        parked = 0
        for item in ops[:MAX_PENDING] if isinstance(ops, list) else ():
            request = decode(item)
            if request is not None:
                pending[request.id] = request
                parked += len(dumps(item))
        if parked > MAX_PENDING_BYTES:
            self.registry.drop(reservation)
            return
        reservation.pending = pending
        self.registry.give_back(reservation, parked, trio.current_time())

    def __init__(self, state: ServerState, registry: Reservations, relay: StreamRelay) -> None:
        self.state = state
        self.registry = registry
        self.relay = relay

    async def handle(self, kind: str, message: dict[str, Any]) -> dict[str, Any] | None:
        """The answer to *message* (None for a notice, which nobody waits for)."""
        token, asker = message.get("t"), message.get("r")
        if not isinstance(token, str) or not isinstance(asker, str):
            return {"s": 400, "m": "Malformed request between workers"}
        if kind not in _KINDS:
            return {"s": 400, "m": f"Unknown request {kind[:32]!r} between workers"}
        reservation = self.registry.get(token, trio.current_time())
        deadline = message.get("d")
        # Our own question to a holder must be answered before the asker gives up.
        ours = deadline - GRACE if isinstance(deadline, float) else None
        if kind == "closed":  # the holder's stream has ended
            if reservation is not None and reservation.holder == asker:
                self.registry.drop(reservation)
            return None
        if kind == "held":  # the home asks whether the stream it handed us still runs
            runs = reservation is not None and reservation.home == asker and reservation.opened
            return {"s": 200} if runs else {"s": NOT_FOUND[0], "m": NOT_FOUND[1]}
        if reservation is None or message.get("o") != owner_fingerprint(reservation.owner):
            # Unknown, or someone else's: alike, as on one process (``Reservations.find``).
            return {"s": NOT_FOUND[0], "m": NOT_FOUND[1]}
        if kind == "back":  # its stream ended there before serving (a HEAD): it waits here again
            if reservation.holder == asker:
                self._take_back(reservation, message.get("ops"))
            return None
        if kind == "find":
            return {"s": 200}
        if kind == "open":
            return hand_over(self.registry, reservation, asker)
        if kind == "op":
            request, size = decode(message.get("op")), message.get("n")
            if request is None or not isinstance(size, int):
                return {"s": 400, "m": "Malformed request between workers"}
            status, text = await admit(self.state, self.registry, reservation, request, size, ours)
        else:  # "stop"
            op_id = message.get("id")
            if not isinstance(op_id, str):
                return {"s": 400, "m": "Malformed request between workers"}
            status, text = await stop(self.registry, reservation, op_id, ours)
        return {"s": status, "m": text}


@asynccontextmanager
async def relay_running(state: ServerState) -> AsyncIterator[None]:
    """While the server runs: its relay (``Config.sse_relay``, if any) answers
    the other processes from this desk, on the broker it was made with.

    Listening before the server accepts anyone, so no token is issued that
    another process could not ask about. A failure of the relay's task is
    logged and the task restarted: it costs single connection streams across
    processes for a moment, never the server.
    """
    relay = state.config.sse_relay
    if relay is None or relay.bus is None:
        yield
        return
    registry = reservations_of(state)
    relay.handler = Desk(state, registry, relay).handle
    async with trio.open_nursery() as nursery:
        await nursery.start(_keep_serving, relay)
        nursery.start_soon(_keep_checking, registry, relay)
        try:
            yield
        finally:
            relay.handler = None
            nursery.cancel_scope.cancel()


#: Holders asked at once by :func:`check_holders` (the rest wait their turn).
CHECKS_AT_ONCE = 32


async def check_holders(registry: Reservations, relay: StreamRelay) -> None:
    """Ask the holder of each handed-over reservation that is due whether its
    stream still runs; free the token of each that says no, is gone or is
    wedged (its "closed" notice was lost). One that cannot be asked now (the
    broker down, too busy) is asked again later."""
    due = registry.due(trio.current_time())
    if not due:
        return
    limiter = trio.CapacityLimiter(CHECKS_AT_ONCE)
    async with trio.open_nursery() as nursery:
        for reservation in due:
            nursery.start_soon(_check_holder, registry, relay, reservation, limiter)


async def _check_holder(
    registry: Reservations,
    relay: StreamRelay,
    reservation: Reservation,
    limiter: trio.CapacityLimiter,
) -> None:
    holder = reservation.holder
    if holder is None:
        return
    async with limiter:
        try:
            answer = await relay.call(holder, {"k": "held", "t": reservation.token})
        except RelayError as error:
            answer = {"s": 404} if _holder_failed(relay, error) else {}
    if reservation.holder != holder:  # dropped (or reserved anew) meanwhile
        return
    if answer.get("s") == 404:
        registry.drop(reservation)
    else:
        registry.recheck_later(reservation, trio.current_time())


async def _keep_checking(registry: Reservations, relay: StreamRelay) -> None:
    """:func:`check_holders` whenever one is due, for as long as the server runs."""
    while True:
        due = registry.next_recheck()
        await trio.sleep_until(
            due if due is not None else trio.current_time() + registry.handed_over_ttl
        )
        try:
            await check_holders(registry, relay)
        except Exception:
            log.exception("checking graphql-sse stream holders failed")


async def _keep_serving(
    relay: StreamRelay, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Serve *relay* until its broker closes, restarting it after a failure."""
    delay = 0.1
    while True:
        status = task_status if relay.listened == 0 else trio.TASK_STATUS_IGNORED
        try:
            await relay.serve(relay.bus, status)
            return  # the broker has closed
        except BrokerClosed:
            return
        except Exception:
            log.exception("graphql-sse relay failed: restarting it")
        await trio.sleep(delay)
        delay = min(delay * 2, 5.0)
