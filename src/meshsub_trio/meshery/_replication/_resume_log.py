"""The in-memory broker's resume log, bounded in bytes as well as in entries.

Why: a :class:`~meshsub_trio.MemoryBroker` keeps the last 1,000 messages of
every topic so that clients can resume from a cursor. Meshery's messages
carry whole records (up to ``StorageLimits.object_bytes`` each), so that log
alone could hold a gigabyte per topic while the model stays within its
limits: one large design saved again and again, or many large events. And
it never forgets a topic, so the results topic of every profile ever created
would stay. :class:`ResumeLogBroker` bounds the bytes retained across all
topics, dropping the oldest entries first whatever their topic; a cursor
older than what is retained gets ``CursorExpired`` as before, so a client
reloads rather than silently missing events. A topic whose log empties, and
that nobody reads, is forgotten; one floor (the newest sequence evicted from
any forgotten topic) stands for all of them, so a cursor from before it
still expires instead of replaying nothing.

Sizes are the messages' JSON bytes. Entries put into the log by other means
(a database restoring it at start) are counted when their topic is next
written, and at once by :meth:`ResumeLogBroker.adopt`.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from ...brokers._broker import Delivery, MemoryBroker, _TopicLog
from ...brokers._buffer import EventBuffer, Overflow
from .._model._quota import size_of


class ResumeLogBroker(MemoryBroker):
    """A MemoryBroker whose retained log holds at most *log_bytes* (None: unbounded)."""

    def __init__(
        self,
        *,
        log_capacity: int = 1000,
        log_bytes: int | None = None,
        size: Callable[[Any], int] = size_of,
    ) -> None:
        super().__init__(log_capacity=log_capacity)
        self.log_bytes = log_bytes
        self._size = size
        #: Bytes of the entries currently retained, all topics together.
        self.retained_bytes = 0
        #: Per topic, the sizes of its retained entries, oldest first.
        self._sizes: dict[str, deque[int]] = {}
        #: (a lower bound of the topic's oldest retained seq, topic): who to evict next.
        self._oldest: list[tuple[int, str]] = []
        #: The newest seq evicted from a topic that was then forgotten.
        self.forgotten_upto = 0

    def adopt(self) -> None:
        """Count entries that were put into the log directly (a restore)."""
        for topic in list(self._logs):
            self._sync(topic)
        self._trim()

    def _sync(self, topic: str) -> None:
        """Recount *topic* if its log changed behind our back."""
        log = self._logs.get(topic)
        entries = log.entries if log is not None else ()
        sizes = self._sizes.get(topic)
        if sizes is not None and len(sizes) == len(entries):
            return
        self.retained_bytes -= sum(sizes or ())
        fresh = deque(self._size(entry.message) for entry in entries)
        self._sizes[topic] = fresh
        self.retained_bytes += sum(fresh)
        if entries:
            heapq.heappush(self._oldest, (entries[0].seq, topic))

    def _log(self, topic: str, message: Any) -> None:
        self._sync(topic)
        log = self._logs.get(topic)
        if log is None:
            # A new (or forgotten) topic: cursors from before the floor expire.
            log = self._logs[topic] = _TopicLog(self.log_capacity)
            log.evicted_upto = self.forgotten_upto
        sizes = self._sizes.setdefault(topic, deque())
        if len(log.entries) == log.entries.maxlen and sizes:
            self.retained_bytes -= sizes.popleft()  # the entry the count bound drops
        was_empty = not log.entries
        super()._log(topic, message)
        size = self._size(message)
        sizes.append(size)
        self.retained_bytes += size
        if was_empty:
            heapq.heappush(self._oldest, (self.last_seq, topic))
        self._trim()

    def _trim(self) -> None:
        """Evict the oldest entries, whatever their topic, until within budget."""
        budget = self.log_bytes
        while budget is not None and self.retained_bytes > budget and self._oldest:
            seq, topic = heapq.heappop(self._oldest)
            log = self._logs.get(topic)
            if log is None or not log.entries:
                continue
            first = log.entries[0].seq
            if first != seq:  # the bound went stale (the count bound evicted): requeue
                heapq.heappush(self._oldest, (first, topic))
                continue
            log.evicted_upto = log.entries.popleft().seq
            self.retained_bytes -= self._sizes[topic].popleft()
            if log.entries:
                heapq.heappush(self._oldest, (log.entries[0].seq, topic))
            else:
                self._forget_if_unread(topic)

    def _forget_if_unread(self, topic: str) -> None:
        log = self._logs.get(topic)
        if log is None or log.entries or log.readers:
            return
        self.forgotten_upto = max(self.forgotten_upto, log.evicted_upto)
        del self._logs[topic]
        self._sizes.pop(topic, None)

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
            self._logs[topic].evicted_upto = self.forgotten_upto
        try:
            async with super().subscribe_log(
                topic, after=after, capacity=capacity, policy=policy
            ) as buffer:
                yield buffer
        finally:
            self._forget_if_unread(topic)
