"""This process's own changes that are applied locally but not yet back from the log.

Why: a replica applies the shared log in log order, so all replicas converge.
The process that makes a change also applies it at once (before its echo),
so a mutation reads its own write and the model's multi-step operations
(``upsert_context`` then its controllers) see their earlier steps. Those
early changes are *pending* until their echo. If a change from another
process is applied while some of ours are pending, the state would be "log
prefix, then ours, then theirs" where the log says "log prefix, then theirs,
then ours"; so ours are undone first and redone on top of theirs.

Early application is safe because every early change is a blind write: it
sets records (or removes them) to values carried in full by the message,
whatever was there, so it has a before-image that undoes it (:mod:`._undo`).
Appends (events, perf results) are not blind writes, since their order is
part of the state, so they are never applied early: every replica, the
origin included, applies them once, at their place in the log.

Conflicts are judged on write keys: a message writes record keys like
``("pattern", id)``; a key that is a prefix of another (``("controller",
connection)`` for a delete of all of a connection's controllers) covers it.
Only a conflicting change from elsewhere triggers the undo and redo. The
same undo takes a pending change back for good when the log refuses it or
never confirms it (:mod:`._own_changes`).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._undo import Restore

Key = tuple[str, ...]
Message = Mapping[str, Any]

#: Message types whose order is part of the state: applied only from the log.
APPENDS = frozenset({"event", "perf_result"})


def applies_at_once(message: Message) -> bool:
    """Whether the origin applies *message* before its echo (every blind write)."""
    return message.get("type") not in APPENDS


def write_keys(message: Message) -> tuple[Key, ...]:
    """The record keys *message* writes; ``()`` (covers everything) when unknown."""
    kind, op = message.get("type"), message.get("op")
    try:
        if kind == "k8s_context":
            return (("k8s_context", message["context"]["id"] if op == "upsert" else message["id"]),)
        if kind == "controller":
            if op == "upsert":
                item = message["item"]
                return (("controller", item["connectionID"], item["controller"]),)
            return (("controller", message["connectionID"]),)
        if kind == "cluster_object":
            if op == "clear":
                return (("cluster_object", message["cluster_id"]),)
            obj = message["object"]
            where = (obj["cluster_id"], obj["kind"], obj["namespace"], obj["name"])
            return (("cluster_object", *where),)
        if kind in ("pattern", "filter"):
            return ((kind, message[kind]["id"] if op == "upsert" else message["id"]),)
        if kind == "perf_profile":
            if op == "upsert":
                return (("perf_profile", message["profile"]["id"]),)
            return (("perf_profile", message["id"]), ("perf_result", message["id"]))
        if kind == "perf_result":
            result = message["result"]
            return (("perf_result", result["performance_profile"], result["meshery_id"]),)
        if kind == "meshmodel":
            entry = message["entry"]
            return (("meshmodel", *(entry[k] for k in ("entity", "model", "version", "name"))),)
        if kind == "event":
            event = message["event"]
            return (("event", event["userID"], event["id"]),)
    except (KeyError, TypeError):
        pass
    return ((),)


@dataclass(eq=False, slots=True)
class Pending:
    """One own change applied before its echo."""

    #: Its number in this process's envelopes, and its broker ticket (0: none).
    number: int
    ticket: int
    message: Message
    #: Puts back what it overwrote (retaken whenever it is redone).
    undo: Restore
    keys: tuple[Key, ...] = ()
    #: When it was committed (``time.monotonic``), for the bus's sweep.
    at: float = field(default_factory=time.monotonic)
    #: What the mutation that made it waits on (a :class:`._flights.Flight`).
    flight: object = None
    #: Why the log refused it, once it did: it is then taken back.
    refused: str | None = None


class PendingChanges:
    """Own early-applied changes, oldest first, with an index of the keys they write."""

    def __init__(self) -> None:
        self._items: deque[Pending] = deque()
        self._numbers: set[int] = set()
        #: By broker ticket, so that the log's answer for one finds it.
        self._tickets: dict[int, Pending] = {}
        self._keys: Counter[Key] = Counter()
        #: Every proper prefix of every pending key (``()`` included).
        self._prefixes: Counter[Key] = Counter()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Pending]:
        return iter(self._items)

    def __contains__(self, number: object) -> bool:
        return number in self._numbers

    def add(self, change: Pending) -> None:
        change.keys = write_keys(change.message)
        self._items.append(change)
        self._numbers.add(change.number)
        if change.ticket:
            self._tickets[change.ticket] = change
        self._count(change.keys, 1)

    def by_ticket(self, ticket: int) -> Pending | None:
        """The pending change published with broker *ticket*, if any."""
        return self._tickets.get(ticket)

    @property
    def oldest(self) -> int | None:
        """The number of the oldest pending change (the next echo expected)."""
        return self._items[0].number if self._items else None

    def pop_oldest(self) -> None:
        """Its echo came back, in its place: it is in the log now."""
        self._forget(self._items.popleft())

    def drop(self, doomed: Callable[[Pending], bool]) -> int:
        """Forget the pending changes *doomed* picks (the caller undid them); how many."""
        kept: deque[Pending] = deque()
        dropped = 0
        for change in self._items:
            if doomed(change):
                self._forget(change)
                dropped += 1
            else:
                kept.append(change)
        self._items = kept
        return dropped

    def conflicts(self, message: Message) -> bool:
        """Whether *message* writes a key that a pending change writes (or covers)."""
        if not self._items:
            return False
        for key in write_keys(message):
            if key in self._keys or key in self._prefixes:
                return True
            if any(key[:end] in self._keys for end in range(len(key))):
                return True
        return False

    def _forget(self, change: Pending) -> None:
        self._numbers.discard(change.number)
        self._tickets.pop(change.ticket, None)
        self._count(change.keys, -1)

    def _count(self, keys: tuple[Key, ...], step: int) -> None:
        for key in keys:
            _add(self._keys, key, step)
            for end in range(len(key)):
                _add(self._prefixes, key[:end], step)


def _add(counter: Counter[Key], key: Key, step: int) -> None:
    counter[key] += step
    if counter[key] <= 0:
        del counter[key]
