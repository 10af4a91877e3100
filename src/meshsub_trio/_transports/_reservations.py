"""graphql-sse single connection mode: who reserved which stream (SSE-20..31).

A reservation is made by ``PUT`` and belongs to the user who made it (the
context's ``auth``): another user's token reads exactly like an unknown
one, so a token cannot be probed or borrowed. A reservation nobody opens a
stream for expires after ``ttl`` seconds; one whose stream has closed is
dropped at once, so the token can be reserved again (SSE-31).

No task and no timer: expiry is checked against the clock passed in, on
every lookup and every new reservation (which also sweeps the stale ones),
so what a client abandons costs nothing once it has expired.

What waits for a stream is bounded, since a client could otherwise fill
memory with reservations (and the operations posted to them) faster than
they expire: at most :data:`MAX_WAITING_PER_OWNER` unopened reservations per
user and :data:`MAX_WAITING` per server, holding at most :data:`MAX_PENDING`
operations of :data:`MAX_PENDING_BYTES` each and :data:`MAX_PARKED_BYTES` in
all. All are counters kept as reservations come and go, so a check costs O(1).

Across processes (a registry with a relay, :mod:`._sse_relay`: ``serve
--workers N``, or ``serve --broker nats://`` processes sharing a secret) the
same registry is each worker's share of one server's: tokens are minted to
be checked anywhere (:mod:`._sse_tokens`); a reservation is kept by the worker
that issued it (its *home*), which applies every bound above to it exactly as
one process does, until its stream opens on another worker and it is handed
over (``holder``: the home keeps only that name). The worker holding a
stream for a token issued elsewhere keeps it as a *held* reservation
(``home``: told when the stream ends). A notice can be lost (a broker outage,
a worker killed), so the home asks the holder again every
:data:`HANDED_OVER_TTL` seconds and frees the token if it is no longer held.
So the per-reservation bounds and the expiry hold cluster-wide unchanged;
the per-server and per-user bounds are each worker's (a cluster of N workers
holds at most N times as many unopened reservations and parked bytes, each
worker no more than one process).
"""

from __future__ import annotations

import math
import secrets
from collections import deque
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from .._wire import OperationRequested

if TYPE_CHECKING:
    from .._core._state import ServerState
    from ._sse_relay import StreamRelay
    from ._sse_single import SingleStream

#: Seconds a reservation waits for its stream (graphql-sse's own client opens it at once).
RESERVATION_TTL = 10.0
#: Seconds a home keeps a reservation handed over to another worker without
#: asking that worker whether its stream still runs (its "closed" notice may
#: have been lost: a broker outage, a worker killed before it could send it).
HANDED_OVER_TTL = 60.0
#: Unopened reservations one user may hold: graphql-sse's client holds one per
#: tab, opened within a round trip, so this is far beyond honest use.
MAX_WAITING_PER_OWNER = 64
#: Unopened reservations one server holds, whoever made them (anonymous ones
#: have only this bound: without ``authenticate`` every client is one owner).
MAX_WAITING = 10_000
#: Operations one reservation holds before its stream opens (graphql-sse's
#: client posts once the stream is open): this, not ``max_operations`` (which
#: may be unlimited), bounds what the waiting tokens hold, parsed, in memory.
MAX_PENDING = 16
#: Request bytes those operations may hold, per reservation and per server:
#: sixteen posts of a 1 MiB body each, on 64 tokens, parked a gigabyte.
MAX_PENDING_BYTES = 256 * 1024
MAX_PARKED_BYTES = 32 * 1024 * 1024


class ReservationRefused(Exception):
    """Too many reservations wait for their streams: the ``PUT`` is refused.

    ``status`` is 429 for one user's cap, 503 for the server's (not the
    caller's fault); ``retry_after`` is when every reservation that waits
    now has opened or expired.
    """

    def __init__(self, status: int, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class Reservation:
    """One token: its owner, its stream once open, and operations posted before that."""

    __slots__ = (
        "expires", "holder", "home", "key", "owner", "pending", "pending_bytes", "stream",
        "token", "waiting",
    )  # fmt: skip

    def __init__(self, token: str, owner: Any, expires: float) -> None:
        self.token = token
        self.owner = owner
        #: What the per-owner count is kept under (None: not counted per owner).
        self.key = _owner_key(owner)
        self.expires = expires
        #: The open stream (None until the client connects it).
        self.stream: SingleStream | None = None
        #: Operations accepted before the stream opened: started when it does (SSE-28).
        self.pending: dict[str, OperationRequested] = {}
        #: The request bytes behind them (counted until the stream opens or it ends).
        self.pending_bytes = 0
        #: Counted against the caps: registered, and no stream yet.
        self.waiting = False
        #: The worker whose stream serves it, when that is another (kept by its home).
        self.holder: str | None = None
        #: The worker that issued it, when that is another (kept where its stream is).
        self.home: str | None = None

    @property
    def opened(self) -> bool:
        """Whether a stream serves it, here or on another worker."""
        return self.stream is not None or self.holder is not None

    def operation_count(self) -> int:
        """Operations held for the stream or running on it (``max_operations`` caps them)."""
        stream = self.stream
        return len(self.pending) + (len(stream.operations) if stream is not None else 0)

    def is_active(self, op_id: str) -> bool:
        """Whether *op_id* is taken: waiting for the stream, or running on it."""
        if op_id in self.pending:
            return True
        return self.stream is not None and self.stream.is_active(op_id)


class Reservations:
    """The reservations of one server."""

    def __init__(
        self,
        ttl: float = RESERVATION_TTL,
        *,
        max_waiting: int = MAX_WAITING,
        max_waiting_per_owner: int = MAX_WAITING_PER_OWNER,
        relay: StreamRelay | None = None,
    ) -> None:
        self.ttl = ttl
        #: The link to the other workers (None: one process, tokens are its own).
        self.relay = relay
        self.max_waiting = max_waiting
        self.max_waiting_per_owner = max_waiting_per_owner
        self._by_token: dict[str, Reservation] = {}
        # Reservations in the order they expire (the ttl is fixed): a sweep pops
        # from the front, so it costs only what it removes.
        self._expiry: deque[Reservation] = deque()
        #: Reservations waiting for their stream, in all and per owner.
        self.waiting = 0
        self._waiting_by_owner: dict[Hashable, int] = {}
        #: Request bytes parked on reservations whose streams have not opened.
        self.parked_bytes = 0
        self.max_parked_bytes = MAX_PARKED_BYTES
        self.handed_over_ttl = HANDED_OVER_TTL
        # Handed-over reservations, by when their holder is to be asked again
        # (in that order: the ttl is fixed); one entry per reservation.
        self._recheck: deque[tuple[float, Reservation]] = deque()

    def __len__(self) -> int:
        return len(self._by_token)

    def reserve(self, owner: Any, now: float) -> Reservation:
        """A new reservation for *owner*, with an unguessable token.

        Raises :class:`ReservationRefused` when too many already wait. The
        sweep runs first, so expired ones are never counted.
        """
        self._sweep(now)
        retry_after = math.ceil(self.ttl)
        if self.waiting >= self.max_waiting:
            raise ReservationRefused(503, "Too many streams being reserved", retry_after)
        key = _owner_key(owner)
        by_owner = self._waiting_by_owner
        if key is not None and by_owner.get(key, 0) >= self.max_waiting_per_owner:
            raise ReservationRefused(429, "Too many reservations waiting", retry_after)
        relay = self.relay
        token = relay.tokens.mint(owner) if relay is not None else secrets.token_urlsafe(24)
        reservation = Reservation(token, owner, now + self.ttl)
        self._by_token[token] = reservation
        self._expiry.append(reservation)
        reservation.waiting = True
        self.waiting += 1
        if key is not None:
            by_owner[key] = by_owner.get(key, 0) + 1
        return reservation

    def open(self, reservation: Reservation, stream: SingleStream) -> None:
        """Its stream has connected: it no longer waits, nor counts against the caps."""
        reservation.stream = stream
        self._stop_waiting(reservation)

    def find(self, token: str | None, owner: Any, now: float) -> Reservation | None:
        """*owner*'s live reservation for *token*, else None (unknown, expired, someone else's)."""
        if token is None:
            return None
        reservation = self.get(token, now)
        if reservation is None or reservation.owner != owner:
            return None
        return reservation

    def get(self, token: str, now: float) -> Reservation | None:
        """The live reservation for *token*, whoever owns it (another worker asks
        only for a token it checked was issued to its caller)."""
        reservation = self._by_token.get(token)
        if reservation is None:
            return None
        if not reservation.opened and now >= reservation.expires:
            self.drop(reservation)
            return None
        return reservation

    def hold(self, token: str, owner: Any, home: str) -> Reservation:
        """A stream opens here for a token another worker (*home*) issued: kept
        here while it runs (never counted, never expired: a stream serves it)."""
        reservation = Reservation(token, owner, math.inf)
        reservation.home = home
        self._by_token[token] = reservation
        return reservation

    def hand_over(
        self, reservation: Reservation, holder: str, now: float
    ) -> list[OperationRequested]:
        """Its stream has opened on worker *holder*: it stops waiting here, and what
        was posted for it goes there. Kept until the holder says its stream has
        ended, or fails to say it still runs (:meth:`due`)."""
        reservation.holder = holder
        pending, reservation.pending = list(reservation.pending.values()), {}
        self._stop_waiting(reservation)
        self.recheck_later(reservation, now)
        return pending

    def give_back(self, reservation: Reservation, parked: int, now: float) -> bool:
        """Its stream ended before serving anything (its response ended with its
        head: a ``HEAD``): it waits for a stream again as before, with what is
        in ``pending`` (*parked* bytes), unless it has expired meanwhile
        (dropped: False)."""
        if self._by_token.get(reservation.token) is not reservation or reservation.waiting:
            return False
        if now >= reservation.expires or reservation.home is not None:
            self.drop(reservation, tell=False)
            return False
        reservation.stream = None
        reservation.holder = None
        reservation.waiting = True
        self.waiting += 1
        key = reservation.key
        if key is not None:
            self._waiting_by_owner[key] = self._waiting_by_owner.get(key, 0) + 1
        reservation.pending_bytes = parked
        self.parked_bytes += parked
        return True

    def recheck_later(self, reservation: Reservation, now: float) -> None:
        """Its holder said its stream runs: ask again in :attr:`handed_over_ttl`."""
        self._recheck.append((now + self.handed_over_ttl, reservation))

    def due(self, now: float) -> list[Reservation]:
        """The handed-over reservations whose holder is to be asked now (each is
        then dropped, or put back with :meth:`recheck_later`)."""
        due = []
        recheck = self._recheck
        while recheck and now >= recheck[0][0]:
            reservation = recheck.popleft()[1]
            if (
                reservation.holder is not None
                and self._by_token.get(reservation.token) is reservation
            ):
                due.append(reservation)
        return due

    def next_recheck(self) -> float | None:
        """When :meth:`due` has something next (None: nothing is handed over)."""
        return self._recheck[0][0] if self._recheck else None

    def drop(self, reservation: Reservation, *, tell: bool = True) -> None:
        """Its stream has closed (or it expired): the token is free again.

        A held reservation's home is told (unless *tell* is False: it never
        handed it over), once, so that it frees the token too.
        """
        if self._by_token.get(reservation.token) is not reservation:
            self._stop_waiting(reservation)
            return
        del self._by_token[reservation.token]
        self._stop_waiting(reservation)
        if tell and reservation.home is not None and self.relay is not None:
            self.relay.tell(reservation.home, {"k": "closed", "t": reservation.token})

    def park(self, reservation: Reservation, size: int) -> str | None:
        """Count *size* request bytes held for *reservation*'s stream, or say why not
        (``"reservation"``: its own bound, a 429; ``"server"``: everyone's, a 503)."""
        if reservation.pending_bytes + size > MAX_PENDING_BYTES:
            return "reservation"
        if self.parked_bytes + size > self.max_parked_bytes:
            return "server"
        reservation.pending_bytes += size
        self.parked_bytes += size
        return None

    def _stop_waiting(self, reservation: Reservation) -> None:
        """Uncount it, once, whichever way it stopped waiting."""
        if not reservation.waiting:
            return
        self.parked_bytes -= reservation.pending_bytes
        reservation.pending_bytes = 0
        reservation.waiting = False
        self.waiting -= 1
        key = reservation.key
        if key is not None:
            left = self._waiting_by_owner[key] - 1
            if left:
                self._waiting_by_owner[key] = left
            else:
                del self._waiting_by_owner[key]

    def _sweep(self, now: float) -> None:
        expiry = self._expiry
        while expiry and now >= expiry[0].expires:
            reservation = expiry.popleft()
            if not reservation.opened:
                self.drop(reservation)


def _owner_key(owner: Any) -> Hashable | None:
    """The key *owner*'s reservations are counted under: None for no owner
    (anonymous) or an unhashable one, which only the server-wide cap bounds."""
    if owner is None:
        return None
    try:
        hash(owner)
    except TypeError:
        return None
    key: Hashable = owner
    return key


_REGISTRIES: WeakKeyDictionary[ServerState, Reservations] = WeakKeyDictionary()


def reservations_of(state: ServerState) -> Reservations:
    """The reservations of the server that *state* belongs to (made on first use),
    linked to the other processes when its config has a relay (``Config.sse_relay``)."""
    registry = _REGISTRIES.get(state)
    if registry is None:
        registry = _REGISTRIES[state] = Reservations(relay=state.config.sse_relay)
    return registry
