"""The broker: topics that publishers write to and local subscribers read from.

The in-memory broker is the embedded default. Publishing never waits: each
subscriber owns an :class:`EventBuffer` whose overflow policy decides what a
slow subscriber loses, so one slow reader never stalls the publisher or the
other readers. A NATS broker (scale-out) implements the same interface.
"""

from __future__ import annotations

import enum
import math
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

import trio

from ._buffer import BufferClosed, EventBuffer, Overflow

T = TypeVar("T")


class Broker(Protocol):
    """What the application model needs from a message bus."""

    def publish(self, topic: str, message: Any) -> None:
        """Hand *message* to every subscriber of *topic*; never blocks."""

    def subscribe(
        self, topic: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AbstractAsyncContextManager[EventBuffer[Any]]:
        """A buffer of the topic's messages while the context is open.

        A context manager, not an iterator: leaving it detaches the buffer,
        so a subscriber can never outlive its scope.
        """


class NoResponders(Exception):
    """A request to a subject nobody serves: the bus said so at once, rather
    than leaving the asker to wait out its timeout."""

    def __init__(self, subject: str) -> None:
        super().__init__(f"no responders on {subject!r}")
        self.subject = subject


class ConnectionState(enum.Enum):
    """A broker's link to its message bus (the in-memory broker is always CONNECTED)."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    #: The bus went away; local subscribers stay attached and the broker retries.
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Delivery(Generic[T]):
    """One logged message and its cursor.

    ``seq`` grows with every logged message of the broker (not per topic), and
    is the same on every process sharing the log, so a client can resume from
    it anywhere.
    """

    seq: int
    message: T


class CursorError(Exception):
    """A resume cursor the log cannot serve without a gap."""

    def __init__(self, topic: str, cursor: int, reason: str) -> None:
        super().__init__(f"cursor {cursor} on {topic!r}: {reason}")
        self.topic = topic
        self.cursor = cursor


class CursorExpired(CursorError):
    """Messages after the cursor were already evicted from the retained log.

    Raised instead of silently skipping them: the client must resync from a
    snapshot.
    """

    def __init__(self, topic: str, cursor: int, oldest: int) -> None:
        super().__init__(topic, cursor, f"older than the retained log (oldest cursor {oldest})")
        #: The oldest cursor that can still be resumed from.
        self.oldest = oldest


class LogBroker(Broker, Protocol):
    """A broker that also keeps a bounded, resumable log and reports its link state."""

    @property
    def state(self) -> ConnectionState: ...

    async def wait_state_change(self, seen: ConnectionState) -> ConnectionState:
        """Return the current state as soon as it differs from *seen*."""

    def subscribe_log(
        self,
        topic: str,
        *,
        after: int | None = None,
        capacity: int = 256,
        policy: Overflow = Overflow.CLOSE,
    ) -> AbstractAsyncContextManager[EventBuffer[Delivery[Any]]]:
        """An async context manager yielding a buffer of :class:`Delivery` items.

        ``after=None``: only messages logged from now on. ``after=N``: every
        message with ``seq > N`` (replayed), then live ones, with no gap and no
        duplicate at the switch. Raises :class:`CursorExpired` when the log no
        longer holds everything after *N*, :class:`CursorError` when *N* is
        ahead of the log.
        """


class ReplayBuffer(EventBuffer[T]):
    """An event buffer that first serves a lossless backlog, then live events.

    The backlog is the replayed part of a log: it must not be subject to the
    overflow policy, which only applies to live events a publisher cannot wait
    for. The backlog can be extended while it is being read.
    """

    def __init__(
        self, capacity: int = 256, policy: Overflow = Overflow.CLOSE, backlog: Iterable[T] = ()
    ) -> None:
        super().__init__(capacity, policy)
        self._backlog: deque[T] = deque(backlog)

    def __len__(self) -> int:
        return len(self._backlog) + super().__len__()

    def get_nowait(self) -> T:
        if self._backlog:
            return self._backlog.popleft()
        return super().get_nowait()

    def detach(self) -> None:
        self._backlog.clear()
        super().detach()


class _TopicLog:
    """The retained tail of one topic in a :class:`MemoryBroker`."""

    __slots__ = ("entries", "evicted_upto", "readers")

    def __init__(self, capacity: int) -> None:
        self.entries: deque[Delivery[Any]] = deque(maxlen=capacity)
        #: The seq of the newest evicted entry: cursors below it have expired.
        self.evicted_upto = 0
        self.readers: set[EventBuffer[Delivery[Any]]] = set()


class MemoryBroker:
    """An in-process broker: one buffer per subscriber, fan-out on publish.

    It also keeps the last *log_capacity* messages of every topic (0 turns
    the log off) for :meth:`subscribe_log`; cursors count every logged
    message of this broker, so they are only meaningful within one process.
    """

    def __init__(self, *, log_capacity: int = 1000) -> None:
        self._subscribers: defaultdict[str, set[EventBuffer[Any]]] = defaultdict(set)
        #: Messages discarded by subscribers' overflow policies, per topic.
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self.published = 0
        self.log_capacity = log_capacity
        self._logs: dict[str, _TopicLog] = {}
        #: The cursor of the newest logged message.
        self.last_seq = 0
        self._closed = False

    @property
    def state(self) -> ConnectionState:
        return ConnectionState.CLOSED if self._closed else ConnectionState.CONNECTED

    async def wait_state_change(self, seen: ConnectionState) -> ConnectionState:
        """Never changes while open (it has no bus to lose), so this waits forever."""
        if seen is not self.state:
            await trio.lowlevel.checkpoint()
            return self.state
        await trio.sleep(math.inf)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """End every subscriber's stream cleanly (the broker is going away)."""
        self._closed = True
        for buffers in self._subscribers.values():
            for buffer in buffers:
                buffer.close()
        for log in self._logs.values():
            for reader in log.readers:
                reader.close()

    def subscriber_count(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))

    def log_reader_count(self, topic: str | None = None) -> int:
        """Readers attached through :meth:`subscribe_log` (to *topic*, or to any)."""
        if topic is not None:
            log = self._logs.get(topic)
            return 0 if log is None else len(log.readers)
        return sum(len(log.readers) for log in self._logs.values())

    def publish(self, topic: str, message: Any) -> None:
        self.published += 1
        for buffer in tuple(self._subscribers.get(topic, ())):
            try:
                if not buffer.put(message):
                    self.dropped[topic] += 1
            except BufferClosed:
                self._subscribers[topic].discard(buffer)
        if self.log_capacity > 0:
            self._log(topic, message)

    def _log(self, topic: str, message: Any) -> None:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = _TopicLog(self.log_capacity)
        self.last_seq += 1
        delivery = Delivery(self.last_seq, message)
        if len(log.entries) == log.entries.maxlen:
            log.evicted_upto = log.entries[0].seq
        log.entries.append(delivery)
        for reader in tuple(log.readers):
            try:
                if not reader.put(delivery):
                    self.dropped[topic] += 1
            except BufferClosed:
                log.readers.discard(reader)

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AsyncIterator[EventBuffer[Any]]:
        buffer: EventBuffer[Any] = EventBuffer(capacity, policy)
        if self._closed:
            buffer.close()
        self._subscribers[topic].add(buffer)
        try:
            yield buffer
        finally:
            buffer.detach()
            subscribers = self._subscribers.get(topic)
            if subscribers is not None:
                subscribers.discard(buffer)
                if not subscribers:
                    del self._subscribers[topic]

    @asynccontextmanager
    async def subscribe_log(
        self,
        topic: str,
        *,
        after: int | None = None,
        capacity: int = 256,
        policy: Overflow = Overflow.CLOSE,
    ) -> AsyncIterator[EventBuffer[Delivery[Any]]]:
        """See :meth:`LogBroker.subscribe_log`.

        The replayed part is lossless (at most *log_capacity* entries); the
        live part follows *policy*, since a publisher never waits. With the
        default ``Overflow.CLOSE`` a reader that falls behind gets
        ``BufferOverflow`` and can resume from its last cursor.
        """
        if self.log_capacity <= 0:
            raise RuntimeError("this MemoryBroker keeps no log (log_capacity=0)")
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = _TopicLog(self.log_capacity)
        backlog: list[Delivery[Any]] = []
        if after is not None:
            if after > self.last_seq:
                raise CursorError(topic, after, f"ahead of the log (newest cursor {self.last_seq})")
            if after < log.evicted_upto:
                raise CursorExpired(topic, after, log.evicted_upto)
            backlog = [entry for entry in log.entries if entry.seq > after]
        # No checkpoint between reading the backlog and joining the readers:
        # publish() cannot run in between, so there is no gap and no duplicate.
        buffer: ReplayBuffer[Delivery[Any]] = ReplayBuffer(capacity, policy, backlog)
        if self._closed:
            buffer.close()
        log.readers.add(buffer)
        try:
            yield buffer
        finally:
            buffer.detach()
            log.readers.discard(buffer)
