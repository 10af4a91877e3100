"""Payloads waiting for a subscription's consumer: bounded, with a named overflow policy.

The connection's reader never waits for a consumer (one slow ``async for``
must not stall the other subscriptions on the socket), so :meth:`offer` never
blocks. When the buffer is full:

* ``Overflow.COALESCE`` keeps only the newest payload (state-shaped streams);
* ``Overflow.DROP_OLDEST`` drops the oldest queued payload and counts it;
* ``Overflow.CLOSE`` refuses the new payload (:meth:`offer` returns False)
  and leaves the decision to the caller: pause and resume from a cursor, or
  end the stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

import trio

from .. import Overflow


class StreamBuffer:
    """A bounded single-consumer queue of payloads; ``offer`` never blocks."""

    def __init__(
        self,
        capacity: int,
        policy: Overflow,
        *,
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.policy = policy
        #: Payloads discarded by DROP_OLDEST or COALESCE.
        self.dropped = 0
        self._items: deque[dict[str, Any]] = deque()
        self._wakeup = trio.Event()
        self._finished = False
        self._error: BaseException | None = None
        #: Called when the consumer has taken the buffer down to half its capacity.
        self.on_drained = on_drained

    def __len__(self) -> int:
        return len(self._items)

    @property
    def full(self) -> bool:
        return len(self._items) >= self.capacity

    @property
    def finished(self) -> bool:
        return self._finished

    def offer(self, item: dict[str, Any]) -> bool:
        """Queue *item*; False when ``Overflow.CLOSE`` refused it (buffer full)."""
        if self._finished:
            return False
        if self.full:
            if self.policy is Overflow.CLOSE:
                return False
            self.dropped += len(self._items) if self.policy is Overflow.COALESCE else 1
            if self.policy is Overflow.COALESCE:
                self._items.clear()
            else:
                self._items.popleft()
        self._items.append(item)
        self._wakeup.set()
        return True

    def finish(self, error: BaseException | None = None) -> None:
        """No more payloads: the consumer gets what is queued, then the end (or *error*)."""
        if self._finished:
            return
        self._finished = True
        self._error = error
        self._wakeup.set()

    async def get(self) -> dict[str, Any]:
        """The next payload; ``trio.EndOfChannel`` at a clean end, or the error."""
        while not self._items:
            if self._finished:
                await trio.lowlevel.checkpoint()
                if self._error is not None:
                    raise self._error
                raise trio.EndOfChannel
            self._wakeup = trio.Event()
            await self._wakeup.wait()
        await trio.lowlevel.checkpoint_if_cancelled()
        item = self._items.popleft()
        if self.on_drained is not None and len(self._items) <= self.capacity // 2:
            self.on_drained()
        return item
