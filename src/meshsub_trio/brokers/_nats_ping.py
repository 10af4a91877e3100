"""Server round trips (PING/PONG) that are safe to stop waiting for.

Why not ``await nc.flush(timeout)``: in nats-py 2.16 a flush that is
cancelled, or that times out, cancels its PONG future but leaves it queued;
when the PONG then arrives, ``_process_pong`` calls ``set_result`` on the
cancelled future, the ``InvalidStateError`` ends the read loop, and the
connection silently stops receiving (observed: a Trio cancel scope around a
subscribe killed the connection, and the next drain hung).

So every flush runs in its own asyncio task with an effectively infinite
timeout, and callers wait on that task with ``asyncio.wait``, which neither
times out nor gets cancelled *into* it. The task ends when its PONG arrives.
A PONG that never comes (its PING was lost in a disconnect; nats-py then
starts a new PONG queue) leaves the task pending; :meth:`Pinger.abandon`
cancels those once the connection is closed, when no PONG can arrive.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nats.aio.client import Client

_NEVER = 365 * 24 * 3600  # nats-py's own flush timeout: never reached in practice


class Pinger:
    """Round trips to the server that callers may abandon without harm."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        self._tasks: set[asyncio.Task[Any]] = set()

    async def round_trip(self, timeout: float) -> bool:
        """(asyncio) True once the server answered a PING sent now; False on timeout."""
        if not self._nc.is_connected:
            return False
        task = asyncio.get_running_loop().create_task(self._nc.flush(timeout=_NEVER))
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done) and not task.cancelled() and task.exception() is None

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed flush is reported by the caller's False

    async def abandon(self) -> None:
        """(asyncio) Cancel round trips still waiting; only once the connection is closed."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
