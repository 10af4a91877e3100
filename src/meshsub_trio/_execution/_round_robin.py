"""A lock granted in turn to the connections waiting for it, not to the first come.

Costly new documents are prepared one at a time (:mod:`._documents`). With a
first-come lock, one connection that pipelines sixty of them (100 ms of CPU
each, the most one may take) puts every other connection's costly document
six seconds back. :class:`RoundRobinLock` keeps one queue per owner and
serves the owners in turn, so another connection waits for at most one of
the flooder's documents, however many it sent.

The owner is the connection a task works for: hosts set :data:`preparing_for`
when a connection starts (Trio tasks copy the context they were started in,
so every operation of the connection sees it). Work with no owner set shares
one queue, which is the first-come lock of before.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import asynccontextmanager
from contextvars import ContextVar

import trio

#: The connection the current task works for (its peer address, or any key).
preparing_for: ContextVar[Hashable] = ContextVar("preparing_for", default=None)


class RoundRobinLock:
    """Mutual exclusion, handed from owner to owner in turn."""

    def __init__(self) -> None:
        self._held = False
        #: Waiters per owner, owners in the order they are served next.
        self._queues: OrderedDict[Hashable, deque[trio.Event]] = OrderedDict()

    def locked(self) -> bool:
        return self._held

    def waiting(self) -> int:
        """Tasks waiting, over all owners."""
        return sum(len(queue) for queue in self._queues.values())

    @asynccontextmanager
    async def hold(self, owner: Hashable) -> AsyncIterator[None]:
        """Hold the lock for *owner*'s work; a waiter cancelled leaves its place."""
        await self._acquire(owner)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, owner: Hashable) -> None:
        if not self._held:  # a checkpoint either way, as trio.Lock's acquire
            await trio.lowlevel.checkpoint_if_cancelled()
            self._held = True
            await trio.lowlevel.cancel_shielded_checkpoint()
            return
        granted = trio.Event()
        queue = self._queues.get(owner)
        if queue is None:
            queue = self._queues[owner] = deque()
        queue.append(granted)
        try:
            await granted.wait()
        except BaseException:
            if granted.is_set():  # handed over after it was cancelled: pass it on
                self._release()
            else:
                queue.remove(granted)
                if not queue and self._queues.get(owner) is queue:
                    del self._queues[owner]
            raise

    def _release(self) -> None:
        """Hand the lock to the next owner in turn, or free it."""
        if not self._queues:
            self._held = False
            return
        owner, queue = next(iter(self._queues.items()))
        granted = queue.popleft()
        if queue:
            self._queues.move_to_end(owner)  # its next waiter goes after the others
        else:
            del self._queues[owner]
        granted.set()  # still held: it passes straight to the waiter
