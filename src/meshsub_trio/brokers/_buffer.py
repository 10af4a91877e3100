"""A bounded event buffer whose overflow behaviour is a named, counted policy.

Producers never wait on a consumer: they call :meth:`EventBuffer.put`, which
never blocks. What happens when the buffer is full is the buffer's
:class:`Overflow` policy, and every overflow is counted, so a slow subscriber
can never stall a publisher or another subscriber.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import Any, Generic, TypeVar

import trio

T = TypeVar("T")

_EMPTY: deque[Any] = deque(maxlen=0)  # shared placeholder, never appended to


class Overflow(enum.Enum):
    """What a full buffer does with one more event."""

    #: Keep only the newest value: right for state-shaped streams, where the
    #: latest snapshot supersedes every older one.
    COALESCE = "coalesce"
    #: Drop the oldest queued event to make room, and count it.
    DROP_OLDEST = "drop_oldest"
    #: End the stream with :class:`BufferOverflow`: the consumer fell too far
    #: behind to be trusted with a partial log.
    CLOSE = "close"


class BufferOverflow(Exception):
    """Raised to the consumer of an ``Overflow.CLOSE`` buffer that overflowed."""

    def __init__(self, capacity: int) -> None:
        super().__init__(f"subscriber fell more than {capacity} events behind")
        self.capacity = capacity


class BufferClosed(Exception):
    """Raised by :meth:`EventBuffer.put` after the consumer went away."""


class EventBuffer(Generic[T]):
    """A bounded single-consumer queue; ``put`` never blocks.

    The consumer iterates it with ``async for``; the iteration ends when the
    producer calls :meth:`close`, and raises :class:`BufferOverflow` when an
    ``Overflow.CLOSE`` buffer overflowed.
    """

    __slots__ = (
        "_consumer_closed",
        "_error",
        "_items",
        "_overflowed",
        "_producer_closed",
        "_wakeup",
        "capacity",
        "dropped",
        "policy",
    )

    def __init__(self, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.policy = policy
        #: How many events this buffer dropped or coalesced away.
        self.dropped = 0
        self._items: deque[T] = _EMPTY  # allocated on first put: idle buffers stay small
        self._wakeup: trio.Event | None = None  # made when a consumer waits
        self._producer_closed = False
        self._consumer_closed = False
        self._overflowed = False
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T) -> bool:
        """Queue *item*; return False when the policy discarded something."""
        if self._consumer_closed:
            raise BufferClosed()
        if self._producer_closed or self._overflowed:
            return False
        kept = True
        if self._items is _EMPTY:
            self._items = deque()
        if len(self._items) >= self.capacity:
            kept = False
            if self.policy is Overflow.CLOSE:
                self.dropped += 1
                self._overflowed = True
                self._items = _EMPTY
                self._wake()
                return False
            if self.policy is Overflow.COALESCE:
                self.dropped += len(self._items)  # every value the newest supersedes
                self._items.clear()
            else:
                self.dropped += 1
                self._items.popleft()
        self._items.append(item)
        self._wake()
        return kept

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def close(self, error: BaseException | None = None) -> None:
        """The producer is done: the consumer sees the end after the queued events.

        With *error*, the consumer gets that exception instead of a clean end.
        """
        self._producer_closed = True
        self._error = error
        self._wake()

    def detach(self) -> None:
        """The consumer is gone: later ``put`` calls raise :class:`BufferClosed`."""
        self._consumer_closed = True
        self._items = _EMPTY

    @property
    def consumer_closed(self) -> bool:
        return self._consumer_closed

    def get_nowait(self) -> T:
        """Take the oldest event, or raise ``trio.WouldBlock``."""
        if self._overflowed:
            raise BufferOverflow(self.capacity)
        if self._items:
            return self._items.popleft()
        if self._producer_closed:
            if self._error is not None:
                raise self._error
            raise trio.EndOfChannel()
        raise trio.WouldBlock()

    async def get(self) -> T:
        """Wait for the next event; raise ``trio.EndOfChannel`` at the end."""
        while True:
            try:
                item = self.get_nowait()
            except trio.WouldBlock:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                continue
            await trio.lowlevel.checkpoint_if_cancelled()
            return item

    def __aiter__(self) -> EventBuffer[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
