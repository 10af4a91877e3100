"""A budget of expensive synchronous work per pass of the event loop.

Preparing a new document is synchronous and costs up to tens of
milliseconds. A few are harmless; a burst of them started in the same
scheduler batch (a client pipelining many new documents) would run back to
back and hold the loop for all of them. :class:`Turns` lets work go at once
(no checkpoint, exactly as a plain call) while the current pass of the loop
has spent less than its budget, and makes later callers wait, in order, until
the loop has polled for I/O again. A pass then holds the loop for at most the
budget plus one piece of work.
"""

from __future__ import annotations

import trio


class Turns:
    """A fair gate that meters the time spent per pass of the event loop."""

    def __init__(self, budget: float = 0.02) -> None:
        #: Seconds of work one pass may run before callers wait for the next.
        self.budget = budget
        self._spent = 0.0
        self._reset_pending = False
        self._freed = trio.Event()
        self._queue = trio.Lock()

    async def take(self) -> None:
        """Return when the caller may run its work now (then report it to :meth:`spent`)."""
        if not self._exhausted and not self._queue.locked():
            return
        async with self._queue:  # first come, first served
            while self._exhausted:
                await self._freed.wait()

    @property
    def _exhausted(self) -> bool:
        """Whether this pass has spent its budget (work counted, no reset yet)."""
        return self._reset_pending and self._spent >= self.budget

    def spent(self, seconds: float) -> None:
        """Count *seconds* of work against this pass of the loop."""
        self._spent += seconds
        if not self._reset_pending:
            self._reset_pending = True
            self._freed = trio.Event()
            # Callbacks queued this way run once the loop has woken from its
            # I/O poll: every socket ready by then is served before more work.
            trio.lowlevel.current_trio_token().run_sync_soon(self._reset)

    def _reset(self) -> None:
        self._spent = 0.0
        self._reset_pending = False
        self._freed.set()
