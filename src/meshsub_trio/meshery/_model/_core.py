"""The model's core: its state, committing, applying, and the storage accounting.

The record families (:mod:`._clusters`, :mod:`._designs`, :mod:`._performance`,
:mod:`._events`) build on this; :class:`._model.Model` composes them. See
:mod:`._model` for the message shapes and the ownership rules.
"""

from __future__ import annotations

import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import orjson
import trio

from ...brokers._broker import Broker, MemoryBroker
from . import _quota as quota
from ._quota import StorageLimits
from ._timefmt import utc_now

Message = dict[str, Any]
#: An owned record's key: (owner, id).
Key = tuple[str, str]


def _random_id() -> str:
    return str(uuid.uuid4())


class Committer(Protocol):
    """Who commits the model's changes when it is replicated (see ._replication)."""

    def commit(self, topic: str, message: Message) -> None:
        """Publish *message* (raising if refused) and apply it as replication requires."""

    async def flush(self) -> None:
        """Wait (bounded) until committed changes reached the shared bus."""


class ModelCore:
    """The state every record family reads and writes, and the one way to change it."""

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        now: Callable[[], str] = utc_now,
        new_id: Callable[[], str] = _random_id,
        system_id: str | None = None,
        event_history: int = 1000,
        results_per_profile: int = 1000,
        limits: StorageLimits | None = None,
    ) -> None:
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self.now = now
        self.new_id = new_id
        #: This Meshery instance (``Event.systemID``, ``meshery_instance_id``).
        self.system_id = system_id or new_id()
        self._event_history = event_history
        self._results_per_profile = results_per_profile
        #: The storage bounds, and what each user stores against them.
        self.limits = limits if limits is not None else StorageLimits()
        self.usage = quota.Usage()
        #: Users the model knows of (the simulator sends them events).
        self.users: set[str] = set()
        self._contexts: dict[Key, dict[str, Any]] = {}
        self._controllers: dict[tuple[str, str], dict[str, Any]] = {}
        self._objects: dict[str, dict[tuple[str, str, str], dict[str, str]]] = {}
        self._patterns: dict[Key, dict[str, Any]] = {}
        self._filters: dict[Key, dict[str, Any]] = {}
        self._profiles: dict[Key, dict[str, Any]] = {}
        self._results: dict[Key, deque[tuple[int, dict[str, Any]]]] = {}
        self._seq = 0
        self._meshmodel: set[tuple[str, str, str, str]] = set()
        self._events: dict[str, deque[dict[str, Any]]] = {}
        #: Set by a replicated bus: it then publishes and applies every change.
        self.committer: Committer | None = None
        #: When set, every BROKER controller reads as this status: this
        #: process's own link to a shared bus, a local fact never replicated.
        self.broker_status: str | None = None

    # ------------------------------------------------------------------ core

    def _commit(self, topic: str, message: Message) -> None:
        if self.committer is not None:
            self.committer.commit(topic, message)
            return
        self.broker.publish(topic, message)  # first: a refused message changes nothing
        self.apply(message)

    async def flush(self) -> None:
        """Wait until committed changes reached the bus (at once in memory)."""
        if self.committer is not None:
            await self.committer.flush()
        else:
            await trio.lowlevel.checkpoint()

    def apply(self, message: Mapping[str, Any]) -> None:
        """Apply one change message to this model's state (never publishes)."""
        handler = getattr(self, f"_apply_{message['type']}", None)
        if handler is None:
            raise ValueError(f"unknown message type {message['type']!r}")
        # A private copy: the message also goes to subscribers (and, in memory,
        # is the caller's). Messages are JSON by design, and a JSON round trip
        # copies them about 5x faster than deepcopy.
        handler(message["op"], orjson.loads(orjson.dumps(message)))

    def _store(
        self, store: dict[Key, dict[str, Any]], kind: str, owner: str, record: dict[str, Any]
    ) -> None:
        """Put *record* under ``(owner, id)``, keeping the usage accounting in step."""
        key = (str(owner), str(record["id"]))
        self.usage.replace(key[0], kind, store.get(key), record)
        store[key] = record

    def _unstore(
        self, store: dict[Key, dict[str, Any]], kind: str, owner: str | None, item_id: Any
    ) -> list[Key]:
        """Remove *owner*'s record (every owner's when None); the keys removed."""
        keys = _keys(store, owner, item_id)
        for key in keys:
            self.usage.replace(key[0], kind, store.pop(key), None)
        return keys

    # ---------------------------------------------------------------- limits

    def _check_object(self, kind: str, record: Any) -> int:
        """Refuse a record larger than ``limits.object_bytes``; its size."""
        size = quota.size_of(record)
        self.limits.check_object(kind, size)
        return size

    def _admit(
        self,
        owner: str,
        kind: str,
        record: Mapping[str, Any],
        previous: Mapping[str, Any] | None,
        *,
        freed: int = 0,
    ) -> None:
        """Refuse, before anything is committed, a record that breaks a storage
        limit: its size, the owner's count of that kind, the owner's bytes.
        *freed* is what the change removes besides *previous* (evicted results)."""
        size = self._check_object(kind, record)
        if previous is None and kind in quota.COUNTED:
            self.limits.check_count(kind, self.usage.count(owner, kind))
        growth = size - (quota.size_of(previous) if previous is not None else 0) - freed
        if growth > 0:  # shrinking is always allowed, even over a lowered limit
            self.limits.check_user_bytes(kind, self.usage.stored_bytes(owner) + growth)

    def stored_bytes(self, user_id: str) -> int:
        """What *user_id* stores against ``limits.user_bytes`` (JSON bytes)."""
        return self.usage.stored_bytes(user_id)


def _keys(store: Mapping[Key, Any], owner: str | None, item_id: Any) -> list[Key]:
    """The keys of *owner*'s record with this id (of every owner's when None)."""
    if owner is not None:
        key = (str(owner), str(item_id))
        return [key] if key in store else []
    return [key for key in store if key[1] == str(item_id)]


def _mine(store: Mapping[Key, dict[str, Any]], user_id: str, item_id: Any) -> dict[str, Any] | None:
    """The user's own record with this id: another user's is never theirs to see."""
    return None if item_id is None else store.get((str(user_id), str(item_id)))
