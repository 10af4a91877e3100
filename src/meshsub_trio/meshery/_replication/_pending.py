"""This process's own changes that are applied locally but not yet back from the log.

Why: a replica applies the shared log in log order, so all replicas converge.
The process that makes a change also applies it at once (before its echo),
so a mutation reads its own write and the model's multi-step operations
(``upsert_context`` then its controllers) see their earlier steps. Those
early changes are *pending* until their echo. If a change from another
process is applied while some of ours are pending, the state is "log prefix,
then ours, then theirs" where the log says "log prefix, then theirs, then
ours"; re-applying our pending changes on top restores the log's order.

That is exact because every early change is a blind write: it sets records
(or removes them) to values carried in full by the message, whatever was
there. Appends (events, perf results) are not blind writes, since their
order is part of the state, so they are never applied early: every replica,
the origin included, applies them once, at their place in the log.

Conflicts are judged on write keys: a message writes record keys like
``("pattern", id)``; a key that is a prefix of another (``("controller",
connection)`` for a delete of all of a connection's controllers) covers it.
Only a conflicting change from elsewhere triggers the re-application.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator, Mapping
from typing import Any

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


class PendingChanges:
    """Own early-applied changes, oldest first, with an index of the keys they write."""

    def __init__(self) -> None:
        self._items: deque[tuple[int, Message, tuple[Key, ...]]] = deque()
        self._keys: Counter[Key] = Counter()
        #: Every proper prefix of every pending key (``()`` included).
        self._prefixes: Counter[Key] = Counter()

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Message]:
        return (message for _, message, _ in self._items)

    def add(self, number: int, message: Message) -> None:
        keys = write_keys(message)
        self._items.append((number, message, keys))
        for key in keys:
            self._keys[key] += 1
            for end in range(len(key)):
                self._prefixes[key[:end]] += 1

    def confirm(self, number: int) -> tuple[bool, int]:
        """Our message *number* came back from the log.

        Returns (whether it was pending, how many older pending ones were
        skipped). Echoes come back in publish order, so a pending change
        older than *number* will never come back: it was lost on the way
        (the broker refused or abandoned it) and only this replica has it.
        """
        lost = 0
        while self._items and self._items[0][0] < number:
            self._pop()
            lost += 1
        if self._items and self._items[0][0] == number:
            self._pop()
            return True, lost
        return False, lost

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

    def _pop(self) -> None:
        _, _, keys = self._items.popleft()
        for key in keys:
            _decrement(self._keys, key)
            for end in range(len(key)):
                _decrement(self._prefixes, key[:end])


def _decrement(counter: Counter[Key], key: Key) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]
