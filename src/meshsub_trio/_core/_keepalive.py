"""Keep-alive for every connection of a server from one task: a timing wheel.

A task per connection that sleeps, pings and waits for a pong costs each idle
connection a task, a cancel scope per interval and an Event (about 3 KiB and
19 tracked objects), and wakes the scheduler once per connection per
interval. At 20,000 idle connections that was 16.5% of a core; here the
server's one task wakes every *tick* and handles only the connections due.

The wheel is a dict of slots (``trio.current_time() // tick``), each an
insertion-ordered dict of connections, so adding and removing one is O(1)
and a tick scans the few slots due, never every connection. Each connection
alternates two phases:

- **ping** (due ``interval`` after its last ping): :meth:`Pingable.keepalive_probe`
  sends the ping frame and/or the protocol's keep-alive message, without
  waiting; if an answer is expected the connection moves to *check*;
- **check**: if the peer answered (:attr:`Pingable.heard`), its next ping
  is due ``interval`` after the last one's due time, so the cadence neither
  drifts nor slows when ``deadline`` is longer. With ``interval <= deadline``
  the check falls on that due time and doubles as the ping; while the answer
  is still out it looks again at each due time (an answer later than the
  interval is pinged on the cadence as soon as it is in). A peer silent
  ``deadline`` after its ping is dropped by :meth:`Pingable.keepalive_expired`.

Pings are rounded down to a slot and deadline checks up, so a peer is never
given less than ``deadline`` to answer, and a dead peer holds a connection
for at most ``interval + deadline + 2 * tick`` after its last sign of life
(``tick`` is a tenth of the shorter of the two; a ping may leave a tick late,
and a check is rounded up to a tick), which is :attr:`Config.dead_peer_bound`.
"""

from __future__ import annotations

import logging
import math
from typing import Protocol

import trio

log = logging.getLogger("meshsub_trio.keepalive")

#: A connection waits for its next ping / for its pong deadline.
PING = 0
CHECK = 1


class Pingable(Protocol):
    """What the wheel needs from a connection (its fields are the wheel's own)."""

    #: Set by the connection on any inbound traffic; cleared by each probe.
    heard: bool
    ka_slot: int
    ka_phase: int
    ka_pinged_at: float
    ka_due: float

    def keepalive_probe(self) -> bool:
        """Send this interval's keep-alive now; True when an answer is due."""

    def keepalive_expired(self) -> None:
        """Nothing arrived within the deadline after a probe: drop the peer."""

    def keepalive_failed(self, error: BaseException) -> None:
        """Keeping this connection alive raised *error* (a bug): end it."""


def wheel_tick(interval: float, deadline: float) -> float:
    """How often a wheel wakes: a tenth of the shorter period (the slack in its bound)."""
    return min(interval, deadline) / 10


class KeepAliveWheel:
    """One server's keep-alives, driven by :meth:`run`."""

    def __init__(self, interval: float, deadline: float) -> None:
        self.interval = interval
        self.deadline = deadline
        self.tick = wheel_tick(interval, deadline)
        self._slots: dict[int, dict[Pingable, None]] = {}

    def __len__(self) -> int:
        return sum(len(slot) for slot in self._slots.values())

    def add(self, connection: Pingable) -> None:
        """Keep *connection* alive from now on: first ping one interval away."""
        now = trio.current_time()
        connection.heard = True
        connection.ka_pinged_at = connection.ka_due = now
        self._schedule(connection, PING, now + self.interval)

    def discard(self, connection: Pingable) -> None:
        """Forget *connection* (it ended); nothing is kept for it."""
        slot = self._slots.get(connection.ka_slot)
        if slot is not None:
            slot.pop(connection, None)
            if not slot:
                del self._slots[connection.ka_slot]

    async def run(self) -> None:
        """Every tick: ping the connections due, drop those silent past the deadline."""
        tick = self.tick
        current = math.floor(trio.current_time() / tick)
        while True:
            # Wake on the slot boundaries themselves (a slot is not left for the
            # next tick by a wake-up just before it); catch up after a stall.
            current += 1
            await trio.sleep_until(current * tick)
            now = trio.current_time()
            current = max(current, math.floor(now / tick))
            for key in [k for k in self._slots if k <= current]:
                for connection in self._slots.pop(key):
                    try:
                        self._due(connection, now, current)
                    except Exception as error:  # one connection's bug ends it, not the wheel
                        self._failed(connection, error)

    def _failed(self, connection: Pingable, error: Exception) -> None:
        self.discard(connection)
        log.exception("keep-alive failed: ending the connection")
        try:
            connection.keepalive_failed(error)
        except Exception:  # ending it failed too: it is out of the wheel all the same
            log.exception("ending the connection after a keep-alive failure failed")

    def _due(self, connection: Pingable, now: float, current: int) -> None:
        if connection.ka_phase == CHECK:
            if not connection.heard:
                self._unanswered(connection, current)
                return
            # Answered: the next ping keeps the cadence of the due times (no
            # drift from tick rounding), but never bursts to catch up.
            next_due = connection.ka_due + self.interval
            if math.floor(next_due / self.tick) > current:
                self._schedule(connection, PING, next_due)
                return
            connection.ka_due = next_due
        # A ping in a later slot than its due time's (the loop stalled) moves the
        # cadence with it, so the next is not right behind; on time, nothing changes.
        connection.ka_due = max(connection.ka_due, current * self.tick)
        connection.ka_pinged_at = now
        if not connection.keepalive_probe():
            self._schedule(connection, PING, max(connection.ka_due + self.interval, now))
        elif self.interval <= self.deadline:
            # The check falls on the next ping's due time and doubles as it.
            self._schedule(connection, CHECK, connection.ka_due + self.interval, early=True)
        else:
            self._schedule(connection, CHECK, now + self.deadline)

    def _unanswered(self, connection: Pingable, current: int) -> None:
        """No answer yet: drop the peer at its deadline, and until then look
        again at each due time, so an answer later than the interval is pinged
        on the cadence rather than left waiting for the deadline."""
        expires_at = connection.ka_pinged_at + self.deadline
        if math.ceil(expires_at / self.tick) <= current:
            connection.keepalive_expired()
            return
        # Only a check that doubles as a ping gets here (interval <= deadline):
        # its due time passed, with no ping while one is unanswered.
        connection.ka_due += self.interval
        next_due = connection.ka_due + self.interval
        if next_due < expires_at:
            self._schedule(connection, CHECK, next_due, early=True)
        else:
            self._schedule(connection, CHECK, expires_at)

    def _schedule(
        self, connection: Pingable, phase: int, at: float, *, early: bool = False
    ) -> None:
        """Put *connection* in the slot of *at*: rounded down for a ping (or a
        check that doubles as one, *early*), up for a check against a deadline."""
        ticks = at / self.tick
        key = math.floor(ticks) if phase == PING or early else math.ceil(ticks)
        connection.ka_phase = phase
        connection.ka_slot = key
        if phase == PING:
            connection.ka_due = at
        slot = self._slots.get(key)
        if slot is None:
            self._slots[key] = slot = {}
        slot[connection] = None
