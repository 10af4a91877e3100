"""The in-memory broker's resume log: bounded in bytes, and shared fairly between users.

Why a byte bound: a :class:`~meshsub_trio.MemoryBroker` keeps the last 1,000
messages of every topic so that clients can resume from a cursor. Meshery's
messages carry whole records (up to ``StorageLimits.object_bytes`` each), so
that log alone could hold a gigabyte per topic while the model stays within
its limits. And it never forgets a topic, so the results topic of every
profile ever created would stay. :class:`ResumeLogBroker` bounds the bytes
retained across all topics.

Why shares: that bound is one for every user, so evicting simply the oldest
entries let one user's flood (events in a loop, one design saved again and
again) push out everyone's history and expire everyone's cursors. Each entry
is held by a user (``owner(topic, message)``: :func:`.._model._quota.log_owner`;
None for the entries of no user, cluster state, which share one holding as if
one more user's). When the log is over its cap, the holder that wrote makes
room from its own oldest entries if it holds more than its share (the cap
split evenly between the holders); otherwise the holder holding the most does
(:mod:`._log_shares`). So a holder within its share never loses an entry to
another's writes, and a flooder, once over its share, only expires its own
cursors. A cursor older than what its topic retains still gets
``CursorExpired``, so a client reloads rather than silently missing events.

In a topic several holders write (perf profiles, K8s contexts: never resumed
from), evicting one holder's entry from the middle raises that topic's floor:
cursors on it from before that entry expire, whoever holds them.

A topic whose log empties, and that nobody reads, is forgotten; a floor per
holder the topic's name tells (``owner(topic, None)``: the newest sequence
evicted from its forgotten topics) stands for them, so a cursor from before
it still expires instead of replaying nothing, and one user's forgotten
topics never expire another's cursors.

Sizes are the messages' JSON bytes. Entries put into the log by other means
(a database restoring it at start) are counted by :meth:`ResumeLogBroker.adopt`
(and when a topic is next written, should one be found uncounted).

``evicted`` counts what left the log, by why: ``"over_share"`` (the byte cap,
from the writer, over its share), ``"heaviest"`` (the byte cap, from the
holder holding the most, for a writer within its share, or at a restore) and
``"topic_count"`` (a topic's count bound, ``log_capacity``).
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

from ...brokers._broker import Delivery, MemoryBroker, _TopicLog
from ...brokers._buffer import EventBuffer, Overflow
from .._model._quota import log_owner, size_of
from ._log_shares import Owner, Shares

#: ``owner(topic, message)``: whose share an entry counts against (None: no user's).
OwnerOf = Callable[[str, Any], Owner]
#: The reasons ``ResumeLogBroker.evicted`` counts (see module doc).
EVICTIONS = ("over_share", "heaviest", "topic_count")


class _Nobody:
    """The writer at a restore: nobody, so the heaviest holder makes room."""


_NOBODY = _Nobody()


class ResumeLogBroker(MemoryBroker):
    """A MemoryBroker whose retained log holds at most *log_bytes* (None: unbounded),
    shared between the holders *owner* tells apart (see module doc)."""

    def __init__(
        self,
        *,
        log_capacity: int = 1000,
        log_bytes: int | None = None,
        size: Callable[[Any], int] = size_of,
        owner: OwnerOf = log_owner,
    ) -> None:
        super().__init__(log_capacity=log_capacity)
        self.log_bytes = log_bytes
        self._size = size
        self._owner = owner
        #: Bytes of the entries currently retained, all topics together.
        self.retained_bytes = 0
        #: Per topic, its retained entries' sizes and holders (parallel to its entries).
        self._sizes: dict[str, deque[int]] = {}
        self._owners: dict[str, deque[Owner]] = {}
        self._shares = Shares(self._retains)
        #: Per holder a topic's name tells, the newest seq evicted from its forgotten topics.
        self._floors: dict[Owner, int] = {}
        #: Entries evicted, by why (see module doc).
        self.evicted: Counter[str] = Counter()

    @property
    def forgotten_upto(self) -> int:
        """The newest sequence evicted from any forgotten topic."""
        return max(self._floors.values(), default=0)

    def held_bytes(self) -> dict[Owner, int]:
        """Bytes retained per holder (a copy)."""
        return self._shares.holdings()

    def stats(self) -> dict[str, int]:
        return {
            "retained_bytes": self.retained_bytes,
            "holders": len(self._shares),
            **{f"evicted_{why}": self.evicted[why] for why in EVICTIONS},
        }

    # ------------------------------------------------------------ accounting

    def adopt(self) -> None:
        """Count every entry anew, including those put into the log directly (a restore)."""
        self.retained_bytes = 0
        self._sizes.clear()
        self._owners.clear()
        self._shares = Shares(self._retains)
        tagged = [_tagged(topic, log) for topic, log in self._logs.items()]
        for seq, topic, message in heapq.merge(*tagged):  # oldest first, all topics
            self._count(topic, seq, message)
        self._trim(_NOBODY)

    def _count(self, topic: str, seq: int, message: Any) -> Owner:
        size, owner = self._size(message), self._owner(topic, message)
        self._sizes.setdefault(topic, deque()).append(size)
        self._owners.setdefault(topic, deque()).append(owner)
        self._shares.add(owner, seq, topic, size)
        self.retained_bytes += size
        return owner

    def _retains(self, seq: int, topic: str) -> bool:
        """Whether *topic* still retains *seq* (its entries leave from the head,
        or from the middle only through :meth:`_evict`, which its holder asked)."""
        log = self._logs.get(topic)
        return log is not None and bool(log.entries) and log.entries[0].seq <= seq

    # ------------------------------------------------------------- appending

    def record(self, topic: str, seq: int, message: Any) -> None:
        """Publish *message* under *seq*, a sequence a shared log gave it.

        Why: a replica reads every entry of the shared log in order, so it can
        keep its own resume history of it, held by the same shares, instead of
        resuming clients from the shared log, whose retention is one for all
        users. Sequences only grow; gaps (entries not recorded) are fine.
        """
        if seq <= self.last_seq:
            raise ValueError(f"log sequence {seq} is not after {self.last_seq}")
        self.last_seq = seq - 1
        self.publish(topic, message)

    def _log(self, topic: str, message: Any) -> None:
        log = self._logs.get(topic)
        if log is not None and len(log.entries) != len(self._sizes.get(topic, ())):
            self.adopt()  # entries put in behind our back: recount before going on
            log = self._logs.get(topic)  # (which may have trimmed it away)
        if log is None:
            # A new (or forgotten) topic: cursors from before its floor expire.
            log = self._logs[topic] = _TopicLog(self.log_capacity)
            log.evicted_upto = self._floors.get(self._owner(topic, None), 0)
        if len(log.entries) == log.entries.maxlen:
            self._evict(topic, log.entries[0].seq, "topic_count")
        super()._log(topic, message)  # appends (and fans out) with seq last_seq
        writer = self._count(topic, self.last_seq, message)
        self._trim(writer)

    def _trim(self, writer: Owner | _Nobody) -> None:
        """Evict until within budget: the writer's own oldest entries while it is
        over its share, else the heaviest holder's."""
        budget = self.log_bytes
        shares = self._shares
        while budget is not None and self.retained_bytes > budget and len(shares):
            if not isinstance(writer, _Nobody) and shares.over_share(writer, budget):
                victim, why = writer, "over_share"
            else:
                victim, why = shares.heaviest(), "heaviest"
            seq, topic = shares.pop_oldest(victim)
            self._evict(topic, seq, why)
            self._forget_if_unread(topic)

    def _evict(self, topic: str, seq: int, why: str) -> None:
        """Remove entry *seq* of *topic* from the log and from its holder's holding."""
        log = self._logs[topic]
        sizes, owners = self._sizes[topic], self._owners[topic]
        if log.entries[0].seq == seq:
            log.entries.popleft()
            size, owner = sizes.popleft(), owners.popleft()
        else:  # a topic several holders write: bounded by its count capacity
            index = bisect_left(log.entries, seq, key=lambda entry: entry.seq)
            del log.entries[index]
            size, owner = sizes[index], owners[index]
            del sizes[index]
            del owners[index]
        log.evicted_upto = max(log.evicted_upto, seq)
        self.retained_bytes -= size
        self._shares.drop(owner, size)
        self.evicted[why] += 1

    def _forget_if_unread(self, topic: str) -> None:
        log = self._logs.get(topic)
        if log is None or log.entries or log.readers:
            return
        holder = self._owner(topic, None)
        self._floors[holder] = max(self._floors.get(holder, 0), log.evicted_upto)
        del self._logs[topic]
        self._sizes.pop(topic, None)
        self._owners.pop(topic, None)

    @asynccontextmanager
    async def subscribe_log(
        self,
        topic: str,
        *,
        after: int | None = None,
        capacity: int = 256,
        policy: Overflow = Overflow.CLOSE,
    ) -> AsyncIterator[EventBuffer[Delivery[Any]]]:
        """As MemoryBroker's, a forgotten topic expiring old cursors; a topic
        nobody wrote and nobody reads any more is not kept."""
        if topic not in self._logs and self.log_capacity > 0:
            self._logs[topic] = _TopicLog(self.log_capacity)
            self._logs[topic].evicted_upto = self._floors.get(self._owner(topic, None), 0)
        try:
            async with super().subscribe_log(
                topic, after=after, capacity=capacity, policy=policy
            ) as buffer:
                yield buffer
        finally:
            self._forget_if_unread(topic)


def _tagged(topic: str, log: _TopicLog) -> Iterator[tuple[int, str, Any]]:
    """*topic*'s retained entries as ``(seq, topic, message)``, oldest first."""
    for entry in log.entries:
        yield entry.seq, topic, entry.message
