"""The broker: topics that publishers write to and local subscribers read from.

The in-memory broker is the embedded default. Publishing never waits: each
subscriber owns an :class:`EventBuffer` whose overflow policy decides what a
slow subscriber loses, so one slow reader never stalls the publisher or the
other readers. A NATS broker (scale-out) implements the same interface.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

from ._buffer import BufferClosed, EventBuffer, Overflow


class Broker(Protocol):
    """What the application model needs from a message bus."""

    def publish(self, topic: str, message: Any) -> None:
        """Hand *message* to every subscriber of *topic*; never blocks."""

    def subscribe(
        self, topic: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AsyncIterator[EventBuffer[Any]]:
        """An async context manager yielding a buffer of the topic's messages."""


class MemoryBroker:
    """An in-process broker: one buffer per subscriber, fan-out on publish."""

    def __init__(self) -> None:
        self._subscribers: defaultdict[str, set[EventBuffer[Any]]] = defaultdict(set)
        #: Messages discarded by subscribers' overflow policies, per topic.
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self.published = 0

    def subscriber_count(self, topic: str) -> int:
        return len(self._subscribers.get(topic, ()))

    def publish(self, topic: str, message: Any) -> None:
        self.published += 1
        for buffer in tuple(self._subscribers.get(topic, ())):
            try:
                if not buffer.put(message):
                    self.dropped[topic] += 1
            except BufferClosed:
                self._subscribers[topic].discard(buffer)

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AsyncIterator[EventBuffer[Any]]:
        buffer: EventBuffer[Any] = EventBuffer(capacity, policy)
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
