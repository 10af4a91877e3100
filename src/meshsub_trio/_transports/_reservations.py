"""graphql-sse single connection mode: who reserved which stream (SSE-20..31).

A reservation is made by ``PUT`` and belongs to the user who made it (the
context's ``auth``): another user's token reads exactly like an unknown
one, so a token cannot be probed or borrowed. A reservation nobody opens a
stream for expires after ``ttl`` seconds; one whose stream has closed is
dropped at once, so the token can be reserved again (SSE-31).

No task and no timer: expiry is checked against the clock passed in, on
every lookup and every new reservation (which also sweeps the stale ones),
so what a client abandons costs nothing once it has expired.
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from .._wire import OperationRequested

if TYPE_CHECKING:
    from .._core._state import ServerState
    from ._sse_single import SingleStream

#: Seconds a reservation waits for its stream (graphql-sse's own client opens it at once).
RESERVATION_TTL = 10.0


class Reservation:
    """One token: its owner, its stream once open, and operations posted before that."""

    __slots__ = ("expires", "owner", "pending", "stream", "token")

    def __init__(self, token: str, owner: Any, expires: float) -> None:
        self.token = token
        self.owner = owner
        self.expires = expires
        #: The open stream (None until the client connects it).
        self.stream: SingleStream | None = None
        #: Operations accepted before the stream opened: started when it does (SSE-28).
        self.pending: dict[str, OperationRequested] = {}

    def is_active(self, op_id: str) -> bool:
        """Whether *op_id* is taken: waiting for the stream, or running on it."""
        if op_id in self.pending:
            return True
        return self.stream is not None and self.stream.is_active(op_id)


class Reservations:
    """The reservations of one server."""

    def __init__(self, ttl: float = RESERVATION_TTL) -> None:
        self.ttl = ttl
        self._by_token: dict[str, Reservation] = {}
        # Reservations in the order they expire (the ttl is fixed): a sweep pops
        # from the front, so it costs only what it removes.
        self._expiry: deque[Reservation] = deque()

    def __len__(self) -> int:
        return len(self._by_token)

    def reserve(self, owner: Any, now: float) -> Reservation:
        """A new reservation for *owner*, with an unguessable token."""
        self._sweep(now)
        token = secrets.token_urlsafe(24)
        reservation = Reservation(token, owner, now + self.ttl)
        self._by_token[token] = reservation
        self._expiry.append(reservation)
        return reservation

    def find(self, token: str | None, owner: Any, now: float) -> Reservation | None:
        """*owner*'s live reservation for *token*, else None (unknown, expired, someone else's)."""
        if token is None:
            return None
        reservation = self._by_token.get(token)
        if reservation is None:
            return None
        if reservation.stream is None and now >= reservation.expires:
            del self._by_token[token]
            return None
        if reservation.owner != owner:
            return None
        return reservation

    def drop(self, reservation: Reservation) -> None:
        """Its stream has closed: the token is free again."""
        if self._by_token.get(reservation.token) is reservation:
            del self._by_token[reservation.token]

    def _sweep(self, now: float) -> None:
        expiry = self._expiry
        while expiry and now >= expiry[0].expires:
            reservation = expiry.popleft()
            if reservation.stream is None:
                self.drop(reservation)


_REGISTRIES: WeakKeyDictionary[ServerState, Reservations] = WeakKeyDictionary()


def reservations_of(state: ServerState) -> Reservations:
    """The reservations of the server that *state* belongs to (made on first use)."""
    registry = _REGISTRIES.get(state)
    if registry is None:
        registry = _REGISTRIES[state] = Reservations()
    return registry
