"""This replica's own early-applied changes: confirmed by their echo, or taken back.

A blind write is applied at once (:mod:`._pending` says why) and stays
*pending* until the log gives it back. Three things can happen meanwhile:

* its echo arrives in its place (the usual case): it is in the log now;
* an entry from elsewhere writes what it writes: every pending change is
  undone (newest first, with its before-image, :mod:`._undo`), the entry
  is applied, and the pending changes are redone on top, which is the
  log's order;
* the log refuses it, does not confirm it in time, or a later own change
  comes back without it: it is taken back the same way, undone with
  everything newer, forgotten, the rest redone. Only this replica ever
  had it, so no replica keeps it now.

Why roll back rather than apply only once the log confirms: the model's
operations are synchronous and read their own earlier steps
(``delete_context`` looks at the contexts left after its delete to decide
whether the connection's controllers go too; the storage limits are
checked against what the user already stores, including a design saved a
moment ago), and a mutation's answer is computed from the applied state.
Deferring the apply would make those read a state without the change. So
the early apply stays, and a refusal, which is rare (an outage, a full
stream), pays for the undo.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from .._model._model import Model
from ._pending import Pending, PendingChanges
from ._undo import before_image

log = logging.getLogger("meshsub_trio.meshery.replication")

Message = Mapping[str, Any]


class OwnChanges:
    """The pending own changes of one replica, and every way they end (see module doc).

    *apply* applies a message from the log (or a redo) to the model,
    counting and logging what the model refuses.
    """

    def __init__(self, origin: str, apply: Callable[[Message], None]) -> None:
        self.origin = origin
        self._apply = apply
        self.pending = PendingChanges()
        self.model: Model | None = None
        self.confirmed = 0
        self.rebases = 0
        self.lost_own = 0
        #: Own changes taken back: refused, unconfirmed in time, or lost.
        self.rolled_back = 0

    def __len__(self) -> int:
        return len(self.pending)

    def apply_own(self, number: int, ticket: int, message: Message, flight: object = None) -> None:
        """Apply a change just published as *number* (broker *ticket*), keeping its undo."""
        model = self.model
        assert model is not None, "attach() the model first"
        undo = before_image(model, message)
        self.pending.add(Pending(number, ticket, message, undo, flight=flight))
        model.apply(message)

    def refuse(self, ticket: int, reason: str) -> None:
        """The log refused *ticket*: mark its change, for the next flush or sweep.

        Marked, not taken back here: this runs in the broker's callback, in
        the middle of whatever else the loop was doing.
        """
        change = self.pending.by_ticket(ticket)
        if change is not None:
            change.refused = reason

    def on_entry(self, message: Message, own: int | None) -> None:
        """A log entry: our change number *own* coming back, or (None) another's."""
        pending = self.pending
        if own is not None and own == pending.oldest:
            pending.pop_oldest()
            self.confirmed += 1
            return  # applied when committed, and the log agrees with its place
        lost = own is not None and pending.oldest is not None and pending.oldest < own
        if not lost and own not in pending:
            if not pending.conflicts(message):
                self._apply(message)
                return
            self.rebases += 1
        self._rewind(lambda: self._settle(message, own))

    def _settle(self, message: Message, own: int | None) -> None:
        """Apply a log entry where the log has it: under our pending changes (undone now).

        Echoes come back in publish order, so own changes older than an own
        echo will never come back: lost on the way (refused, abandoned).
        They stay undone.
        """
        if own is not None:
            lost = self.pending.drop(lambda change: change.number < own)
            if lost:
                self.lost_own += lost
                self.rolled_back += lost
                log.error(
                    "replica %s: %d own change(s) never reached the log: taken back",
                    self.origin,
                    lost,
                )
            if self.pending.drop(lambda change: change.number == own):
                self.confirmed += 1
        self._apply(message)

    def take_back(self, doomed: Callable[[Pending], bool], why: str) -> int:
        """Roll back the pending changes *doomed* picks; how many."""
        if not any(doomed(change) for change in self.pending):
            return 0
        dropped = 0

        def drop() -> None:
            nonlocal dropped
            dropped = self.pending.drop(doomed)

        self._rewind(drop)
        self.rolled_back += dropped
        log.warning("replica %s: %d own change(s) taken back: %s", self.origin, dropped, why)
        return dropped

    def _rewind(self, settle: Callable[[], None]) -> None:
        """Undo every pending change (newest first), run *settle* on the log's
        state, then redo the changes still pending, in order, on top of it."""
        model = self.model
        if model is None:
            settle()
            return
        for change in reversed(list(self.pending)):
            change.undo(model)
        settle()
        for change in self.pending:
            change.undo = before_image(model, change.message)
            self._apply(change.message)

    def sweep_once(self, shared: Any, cutoff: float) -> int:
        """Take back the pending changes the log refused (:meth:`refuse`), and
        those *shared* has not answered for if committed before *cutoff*
        (``time.monotonic``); how many."""
        if not self.pending:
            return 0
        settled = shared.settled_through

        def doomed(change: Pending) -> bool:
            return change.refused is not None or (change.ticket > settled and change.at < cutoff)

        return self.take_back(doomed, "refused by the log, or unconfirmed for too long")
