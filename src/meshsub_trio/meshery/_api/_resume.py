"""One topic after a client's cursor: the shared log's history, then the local live feed.

Why two sources: live deliveries come from this process's replicator (one
log reader for every topic, fanned out locally after the model applied
them); the history a client missed is read from the shared log itself. The
switch is exact because the replicator records, per topic, the sequence of
the newest message it handed out. Read atomically with attaching the live
buffer, that sequence (``upto``) splits the topic in two: everything up to it
comes from the history reader, everything after it arrives live. So the
history reader stops at ``upto`` (and its log consumer is closed at once),
and no message is missed or repeated at the switch.

Nothing is dropped silently either: the live buffer fills while the history
is replayed, so it ends the stream on overflow (``Overflow.CLOSE``) instead
of dropping, and the feed then opens a new segment after the last sequence
it delivered, i.e. resumes itself.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any

import trio

from ...brokers._broker import Delivery
from ...brokers._buffer import BufferOverflow, EventBuffer

Buffer = EventBuffer[Delivery[Any]]
#: ``open_live(capacity)``: attach to the local live feed of the topic.
OpenLive = Callable[[int], AbstractAsyncContextManager[Buffer]]
#: ``open_history(after, capacity)``: a shared-log reader of the topic after a sequence.
OpenHistory = Callable[[int, int], AbstractAsyncContextManager[Buffer]]


class ResumeFeed:
    """Deliveries of one topic with ``seq > after``, in log order, each once."""

    def __init__(
        self,
        *,
        after: int,
        capacity: int,
        open_live: OpenLive,
        newest: Callable[[], int],
        open_history: OpenHistory,
        unwrap: Callable[[Any], Any],
    ) -> None:
        #: The newest sequence delivered (or the client's cursor).
        self.after = after
        self._capacity = capacity
        self._open_live = open_live
        self._newest = newest
        self._open_history = open_history
        self._unwrap = unwrap
        self._live: Buffer | None = None
        self._history: Buffer | None = None
        self._upto = 0
        self._live_stack = AsyncExitStack()
        self._history_stack = AsyncExitStack()
        #: How many times the live buffer overflowed and the feed resumed itself.
        self.reopened = 0

    async def open(self) -> None:
        """Attach live, then (if the client is behind) open the history reader."""
        self._live = await self._live_stack.enter_async_context(self._open_live(self._capacity))
        self._upto = self._newest()  # no checkpoint since attaching: the split is exact
        if self.after < self._upto:
            self._history = await self._history_stack.enter_async_context(
                self._open_history(self.after, self._capacity)
            )

    async def aclose(self) -> None:
        try:
            await self._history_stack.aclose()
        finally:
            await self._live_stack.aclose()

    async def get(self) -> Delivery[Any]:
        """The next delivery; ``trio.EndOfChannel`` once the broker closed."""
        while True:
            if self._history is not None:
                raw = await self._history.get()
                if raw.seq >= self._upto:
                    # Normally raw.seq == upto. Beyond it only if the log evicted
                    # the rest meanwhile: then live has it too and skips it by seq.
                    self._history = None
                    await self._history_stack.aclose()
                if raw.seq <= self.after:
                    continue
                self.after = raw.seq
                message = self._unwrap(raw.message)
                if message is None:
                    continue
                return Delivery(raw.seq, message)
            assert self._live is not None
            try:
                delivery = await self._live.get()
            except BufferOverflow:
                await self._reopen()
                continue
            if delivery.seq > self.after:
                self.after = delivery.seq
                return delivery

    async def _reopen(self) -> None:
        self.reopened += 1
        await self.aclose()
        self._live_stack = AsyncExitStack()
        self._history_stack = AsyncExitStack()
        await self.open()

    def __aiter__(self) -> ResumeFeed:
        return self

    async def __anext__(self) -> Delivery[Any]:
        try:
            return await self.get()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
