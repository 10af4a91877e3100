"""What the log answered for this replica's changes, and who hears of it.

A mutation answers once the log stored its changes (``flush``), and several
mutations flush at once. Each has a *flight*: the broker tickets it
published and what the log answered for them. Its flush waits for its own
newest ticket and judges only its own: judging every ticket since the last
flush told one caller of another's refusal (who then retried a change the
log had stored, making a duplicate).

A mutation is a Trio task, since a resolver or an HTTP handler commits and
flushes in one task (outside Trio, the thread's context). The flight is kept
in a context variable, and tasks inherit their parent's context, so a flight
also names the task that opened it: a child (a connection handler started
after a commit at start-up) opens its own rather than adding to its
parent's. A flush closes its flight and the next commit opens another.

Why the bus hears each answer as it arrives (the broker's ``on_settled``)
rather than asking later: the broker keeps only its newest refusals, and a
full stream refuses thousands between two sweeps, so a refusal asked for
later may be gone, leaving its change applied on this replica alone. Each
answer marks what still refers to it: the pending change (taken back by the
next flush or sweep) and the flight (whose flush reports it). Memory stays
bounded: a flight is a few numbers, held by its task's context; the index of
unanswered tickets holds only those, and each sweep drops the ones whose
answer was lost (older than a ticket answered a whole period before).
"""

from __future__ import annotations

import itertools
import time
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import trio

from ._own_changes import OwnChanges


class BrokerUnavailable(Exception):
    """The shared broker refused a change: nothing was applied anywhere."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"broker unavailable, change not accepted: {reason}")
        self.reason = reason


class ChangeUnconfirmed(BrokerUnavailable):
    """A change was sent but the log did not confirm it in time: it may still land.

    Answered as an error all the same: an answer that says "saved" must mean
    the log has it (a process that stopped meanwhile would have lost it).
    This replica takes the change back; should it still reach the log, every
    replica applies it from there.
    """

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, f"change not confirmed by the log: {reason}")
        self.reason = reason


@dataclass(eq=False, slots=True)
class Flight:
    """The tickets one mutation published since its last flush, as answered so far."""

    newest: int = 0
    #: How many of them the log refused, and the first one's reason.
    refused: int = 0
    reason: str = ""
    #: Flushed: its mutation's next commit opens a new flight.
    closed: bool = False
    #: The task that opened it (None: outside Trio; any task may flush it).
    task: object = None


def _current_task() -> object:
    try:
        return trio.lowlevel.current_task()
    except RuntimeError:  # not in Trio: the thread's context is the mutation
        return None


class Confirmations:
    """Flights, the log's answers, and the flush and sweep that act on them.

    *shared* is the broker with tickets (a NatsBroker: ``on_settled``,
    ``wait_settled``, ``settled_through``); *own* the replica's pending changes.
    """

    def __init__(self, shared: Any, own: OwnChanges) -> None:
        self.shared = shared
        self.own = own
        self._current: ContextVar[Flight | None] = ContextVar(
            f"meshery_flight_{own.origin}", default=None
        )
        #: Tickets not answered yet, oldest first, with the flight each belongs to.
        self._unanswered: dict[int, Flight] = {}
        #: ``settled_through`` at the previous sweep: an older ticket still
        #: unanswered lost its answer (the log answers in order).
        self._answered_before = 0
        shared.on_settled(self.settled)

    def sent(self, ticket: int) -> Flight:
        """Count *ticket* in the calling mutation's flight (opened if need be)."""
        flight, task = self._current.get(), _current_task()
        if flight is None or flight.closed or flight.task is not task:
            flight = Flight(task=task)
            self._current.set(flight)
        flight.newest = ticket
        self._unanswered[ticket] = flight
        return flight

    def settled(self, ticket: int, reason: str | None) -> None:
        """The log's answer for *ticket* (the broker calls this as it arrives)."""
        flight = self._unanswered.pop(ticket, None)
        if reason is None:
            return
        if flight is not None:
            flight.refused += 1
            flight.reason = flight.reason or reason
        self.own.refuse(ticket, reason)

    async def flush(self, timeout: float) -> None:
        """Wait until the log answered for the calling mutation's changes.

        Raises :class:`BrokerUnavailable` when it refused one of them, and
        :class:`ChangeUnconfirmed` when it did not answer within *timeout*;
        either way the changes it did not store are taken back.
        """
        flight = self._current.get()
        if flight is None or flight.closed or flight.task not in (None, _current_task()):
            await trio.lowlevel.checkpoint()  # nothing of this task's is in flight
            return
        flight.closed = True
        self._current.set(None)
        try:
            with trio.fail_after(timeout):
                await self.shared.wait_settled(flight.newest)
        except trio.TooSlowError:
            settled = self.shared.settled_through
            self.own.take_back(
                lambda change: (
                    change.refused is not None
                    or (change.flight is flight and change.ticket > settled)
                ),
                "not confirmed by the log in time",
            )
            if not flight.refused:
                raise ChangeUnconfirmed(f"no answer within {timeout:g} s") from None
        if flight.refused:
            self.own.take_back(lambda change: change.refused is not None, "refused by the log")
            raise BrokerUnavailable(f"the log did not store it ({flight.reason})")

    async def sweep(self, period: float) -> None:
        """Every *period*, take back what the log refused or left unanswered for
        longer than *period* (:meth:`.OwnChanges.sweep_once`), and forget the
        tickets whose answer was lost.

        For the changes no flush looked at: some writers never flush (the
        simulator, a cluster feed), and without this their refused changes
        would stay here until a later change of theirs came back from the log.
        """
        while True:
            await trio.sleep(period)
            self.sweep_once(time.monotonic() - period)

    def sweep_once(self, cutoff: float) -> int:
        """One sweep (see :meth:`sweep`); how many changes it took back."""
        lost = list(itertools.takewhile(lambda t: t <= self._answered_before, self._unanswered))
        for ticket in lost:
            del self._unanswered[ticket]
        self._answered_before = self.shared.settled_through
        return self.own.sweep_once(self.shared, cutoff)
