"""Storage bounds: no stored record, and no user's stored state, grows without limit.

Why: every record the model keeps lives in memory on every process (and on
disk when persisted), so anyone who may write must not be able to grow it
without bound. The limits, all checked before a change is committed (a
refused change changes nothing, anywhere):

* ``object_bytes``: any one stored record (design, filter, profile, K8s
  context, perf result, event, controller status, cluster object, MeshModel
  entry), measured as the JSON it is stored as;
* ``user_bytes``: everything one user keeps: designs, filters, performance
  profiles with their results, K8s contexts;
* ``records``: how many designs, filters, profiles and K8s contexts one user
  keeps, per kind.

Event history is a log rather than a store: each user's keeps at most the
model's ``event_history`` events and ``event_bytes`` bytes, the oldest
dropped first, so an event is never refused for room and no producer (the
simulator, a service account) has to handle that. Likewise the in-memory
broker's resume log (what clients resuming from a cursor replay) keeps at
most ``resume_log_bytes`` across all topics. It is shared by every user, so
each user holds a share of it (:func:`log_owner` says whose an entry is):
when it is full, a user over their share makes room from their own oldest
entries, and one within it takes room from whoever holds the most. A flood
then expires the flooder's cursors, not everyone's (:mod:`._resume_log`).

Sizes are exact JSON byte counts of what is stored, and the accounting is
updated where changes are applied, so it is a function of the applied state:
the same on every replica, and back to the same value once records are deleted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from . import _topics as topics

KIB = 1024
MIB = 1024 * KIB

#: Kinds counted against ``user_bytes``, with how errors name them.
STORED = {
    "design": "design",
    "filter": "filter",
    "profile": "performance profile",
    "context": "Kubernetes context",
    "result": "perf result",
}
#: Kinds whose number per user is capped by ``records``.
COUNTED = ("design", "filter", "profile", "context")
#: Every kind whose records the per-object cap applies to, with its name.
NAMES = {
    **STORED,
    "event": "event",
    "controller": "controller status",
    "cluster_object": "cluster object",
    "meshmodel": "MeshModel entry",
}


@dataclass(frozen=True)
class StorageLimits:
    """The model's storage bounds (see the module doc); ``None`` turns one off.

    Defaults, from Meshery's own data: the designs of Meshery's public catalog
    (meshery.io ``catalog/*/design.yml``, 17 sampled) are 13 to 528 KB, median
    about 120 KB, and a design stored as a JSON string grows by its escaped
    quotes (about 15%), so the largest is about 610 KB stored: 1 MiB per object
    keeps every one with room to spare (and is the default WebSocket and HTTP
    message limit). 64 MiB per user holds about 500 median designs, or a
    thousand fortio results of 10 KB each across profiles with room for
    designs. 1,000 records per kind matches the model's other counts (1,000
    events per user, 1,000 results per profile). 8 MiB of event history is
    1,000 events of 8 KB (the simulator's are about 450 bytes). 64 MiB of
    resume log is about 140,000 of the simulator's events: minutes of history
    for a client that reconnects, however busy the server.
    """

    object_bytes: int | None = 1 * MIB
    user_bytes: int | None = 64 * MIB
    records: int | None = 1000
    event_bytes: int | None = 8 * MIB
    resume_log_bytes: int | None = 64 * MIB

    def check_object(self, kind: str, size: int) -> None:
        limit = self.object_bytes
        if limit is not None and size > limit:
            raise StorageLimitExceeded(
                f"this {NAMES[kind]} is {size} bytes, over the limit of {limit} bytes "
                "per stored object",
                limit="object_bytes",
                value=limit,
            )

    def check_count(self, kind: str, count: int) -> None:
        limit = self.records
        if limit is not None and count >= limit:
            raise StorageLimitExceeded(
                f"this user already keeps {count} {NAMES[kind]}s, the most allowed "
                f"(limit: {limit} per user); delete some first",
                limit="records",
                value=limit,
            )

    def check_user_bytes(self, kind: str, total: int) -> None:
        limit = self.user_bytes
        if limit is not None and total > limit:
            raise StorageLimitExceeded(
                f"storing this {NAMES[kind]} would bring this user's stored data to "
                f"{total} bytes, over the limit of {limit} bytes per user; delete some first",
                limit="user_bytes",
                value=limit,
            )


class StorageLimitExceeded(ValueError):
    """A change refused because it breaks a storage limit; nothing was stored.

    A ValueError, so every caller that already reports bad input reports it;
    HTTP routes answer 413 and GraphQL names the limit in ``extensions``.
    """

    def __init__(self, message: str, *, limit: str, value: int) -> None:
        super().__init__(message)
        #: Which limit (a :class:`StorageLimits` field) and its value.
        self.limit = limit
        self.value = value


def size_of(record: Any) -> int:
    """The size of *record* as stored: its JSON, in bytes."""
    return len(orjson.dumps(record))


#: Per-user topics: the user id (escaped) is the rest of the name.
_USER_TOPICS = (topics.EVENTS_PREFIX, topics.CONFIGURATION_PREFIX)
#: Shared topics whose records name their owner: (record field, owner field).
_OWNED_RECORDS = {
    topics.PERF_PROFILES: ("profile", "user_id"),
    topics.K8S_CONTEXTS: ("context", "owner"),
}


def log_owner(topic: str, message: Any) -> str | None:
    """Whose share of the resume log an entry of *topic* counts against.

    The user a per-user topic names (their events, designs and filters); on a
    shared topic, the owner its record names (a perf result's, a profile's, a
    K8s context's, or a delete's ``user_id``/``owner``). None for cluster
    state (controllers, cluster objects, MeshModel), which is no user's: those
    entries share one holding, as if one more user's. With *message* None, what
    the topic's name alone tells (None on a shared topic): a results topic
    names its owner (:func:`.._topics.perf_results`), so each user's forgotten
    results topics get that user's floor in the resume log, not everyone's.
    """
    for prefix in _USER_TOPICS:
        if topic.startswith(prefix):
            user = topics.topic_user(topic)
            return user if user is not None else topic[len(prefix) :]  # an earlier name
    if not isinstance(message, Mapping):
        return topics.results_owner(topic) if message is None else None
    if topic.startswith(topics.PERF_RESULTS_PREFIX):
        field, key = "result", "user_id"
    elif topic in _OWNED_RECORDS:
        field, key = _OWNED_RECORDS[topic]
    else:
        return None
    record = message.get(field)
    owner = record.get(key) if isinstance(record, Mapping) else message.get(key)
    return owner if isinstance(owner, str) else None


class Usage:
    """Bytes and record counts per user and kind, kept in step with applied changes."""

    def __init__(self) -> None:
        self._bytes: Counter[tuple[str, str]] = Counter()
        self._counts: Counter[tuple[str, str]] = Counter()

    def replace(
        self, user: str, kind: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
    ) -> None:
        """Account for *old* (None: nothing) becoming *new* (None: removed)."""
        delta = (size_of(new) if new is not None else 0) - (size_of(old) if old is not None else 0)
        self._add(self._bytes, (user, kind), delta)
        self._add(self._counts, (user, kind), (new is not None) - (old is not None))

    def count(self, user: str, kind: str) -> int:
        return self._counts[(user, kind)]

    def bytes(self, user: str, kind: str) -> int:
        return self._bytes[(user, kind)]

    def stored_bytes(self, user: str) -> int:
        """What counts against ``user_bytes`` for *user*."""
        return sum(self._bytes[(user, kind)] for kind in STORED)

    @staticmethod
    def _add(counter: Counter[tuple[str, str]], key: tuple[str, str], delta: int) -> None:
        counter[key] += delta
        if not counter[key]:
            del counter[key]
