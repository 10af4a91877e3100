"""The embedded default's durability: the model's changes go to the database too.

:class:`DurableCommitter` takes over the model's commits (the same hook a
replicated bus uses): publish, apply, then queue the change for the
database writer. ``Model.flush`` then waits for the writer's commit, and
every mutation and REST publish awaits it before answering, so an
acknowledged change survives a SIGKILL.

:func:`load` is the other half: at start, the stored state is applied to
the empty model and the stored events and results go back into the
broker's log with their sequences, so state subscriptions show it at once
and event cursors from before the restart resume exactly. An entry a
previous version stored under an older name (a perf result under its profile
id's topic, or any under ids not yet escaped) goes back under its owner's
topic (:func:`.._model._topics.resumed_topic`), with that old topic's
horizon: cursors on it resume with the owner's entries only, or expire.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from typing import Any

import orjson
import trio

from ...brokers._broker import Delivery, MemoryBroker, _TopicLog
from .._model import _topics as topics
from .._model._model import Model
from ._datadir import MEMORY
from ._store import Store
from ._store_errors import StoreUnavailable
from ._tables import Retention

log = logging.getLogger("meshsub_trio.meshery.store")

#: How long the end of serving waits for the last changes to reach the disk.
DRAIN_TIMEOUT = 30.0


class DurableCommitter:
    """Publish, apply, then record for the database (see module doc)."""

    def __init__(self, model: Model, broker: MemoryBroker, store: Store, *, resume: int) -> None:
        self._model = model
        self._broker = broker
        self._store = store
        #: The newest log sequence handed out (the broker's when it keeps a log).
        self._seq = resume

    def commit(self, topic: str, message: dict[str, Any]) -> None:
        store = self._store
        store.check_room()  # first: a refused change changes nothing
        seq = max(self._seq, self._broker.last_seq)
        if seq + 1 > store.reserved:
            # Not one sequence beyond what a restart would skip (see Store.reserve).
            store.reserve(seq + store.reserve_block)
            raise StoreUnavailable("the database has not reserved log sequences yet")
        self._broker.publish(topic, message)
        self._model.apply(message)
        logged = self._broker.log_capacity > 0
        self._seq = self._broker.last_seq if logged else seq + 1
        if self._seq > store.reserved - store.reserve_block // 2:
            store.reserve(self._seq + store.reserve_block)
        store.record(self._seq, topic, message)

    async def flush(self) -> None:
        """Wait until every change committed so far is on disk."""
        await self._store.flush()


def load(model: Model, broker: MemoryBroker, store: Store) -> int:
    """Apply the stored state to *model*, refill *broker*'s log; returns the resume sequence."""
    stored = store.stored
    for body in stored.objects:
        model.apply(orjson.loads(body))
    logged: defaultdict[str, list[Delivery[Any]]] = defaultdict(list)
    horizons = dict(stored.horizons)
    for seq, topic, body in stored.appends:
        message = orjson.loads(body)
        model.apply(message)
        current = topics.resumed_topic(topic, message)
        if current != topic:  # stored by a previous version: its horizon comes along
            horizons[current] = max(horizons.get(current, 0), stored.horizons.get(topic, 0))
        logged[current].append(Delivery(seq, message))
    resume = store.start(system_id=model.system_id)
    if broker.log_capacity > 0:
        for topic, entries in logged.items():
            _restore_log(broker, topic, entries, horizons.get(topic, 0))
        broker.last_seq = max(broker.last_seq, resume)
    store.forget_loaded()
    return resume


def attach(model: Model, store: Store) -> DurableCommitter:
    """Load the stored state into *model*, then route its commits through the database."""
    broker = model.broker
    if not isinstance(broker, MemoryBroker):
        raise TypeError("a database keeps the model of an in-memory broker only")
    committer = DurableCommitter(model, broker, store, resume=load(model, broker, store))
    model.committer = committer
    return committer


def _restore_log(
    broker: MemoryBroker, topic: str, entries: list[Delivery[Any]], evicted_upto: int
) -> None:
    """Put *entries* back into *broker*'s retained log of *topic*, as ``publish`` had.

    Touches the broker's log directly: publishing again would hand out new
    sequences, and the old ones are what clients hold as cursors.
    """
    topic_log = broker._logs.get(topic)
    if topic_log is None:
        topic_log = broker._logs[topic] = _TopicLog(broker.log_capacity)
    topic_log.evicted_upto = max(topic_log.evicted_upto, evicted_upto)
    for entry in entries:
        if len(topic_log.entries) == topic_log.entries.maxlen:
            topic_log.evicted_upto = topic_log.entries[0].seq
        topic_log.entries.append(entry)


def open_store(
    data_dir: str | os.PathLike[str],
    broker: Any,
    *,
    durability: str,
    retention: Retention,
) -> Store | None:
    """The database in *data_dir* (None for ``":memory:"``), opened and read."""
    if os.fspath(data_dir) == MEMORY:
        return None
    if not isinstance(broker, MemoryBroker):
        raise ValueError(
            "data_dir keeps the model of the in-memory broker; a shared broker keeps it in its log"
        )
    return Store.open(data_dir, durability=durability, retention=retention)


async def drain(store: Store) -> None:
    """At the end of serving: wait (bounded) until every change is on disk."""
    with trio.CancelScope(shield=True), trio.move_on_after(DRAIN_TIMEOUT):
        try:
            await store.flush()
        except StoreUnavailable as error:
            log.error("changes not written at shutdown: %s", error)
