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
starts a new PONG queue) leaves the task pending; :meth:`Pinger.forget_lost`
cancels those once nats-py has started that new queue, and
:meth:`Pinger.abandon` the rest once the connection is closed, when no PONG
can arrive.

:meth:`Pinger.watch` is the probe behind ``NatsOptions.stale_timeout``. A
server that stops answering without closing its sockets (hung, SIGSTOPped,
a partition that sends no reset) is invisible to the socket layer, and
nats-py's own PINGs notice it only after three intervals, or never while its
writes are stuck behind a full socket buffer (its reconnect then waits for
that buffer to drain before it even reports the disconnect). So the probe
times PONGs itself and, when one is late, aborts the transport: nats-py
then reads end-of-file, as after any lost connection, and reconnects.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nats.aio.client import Client

_NEVER = 365 * 24 * 3600  # nats-py's own flush timeout: never reached in practice

logger = logging.getLogger(__name__)


class Pinger:
    """Round trips to the server that callers may abandon without harm."""

    def __init__(self, nc: Client) -> None:
        self._nc = nc
        #: Round trips still waiting, each with the connection its PING went out
        #: on (nats-py's reconnect count then), or None until it went out.
        self._tasks: dict[asyncio.Task[Any], int | None] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    async def round_trip(self, timeout: float) -> bool:
        """(asyncio) True once the server answered a PING sent now; False on timeout."""
        if not self._nc.is_connected:
            return False
        task = asyncio.get_running_loop().create_task(self._flush())
        self._tasks[task] = None
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done) and not task.cancelled() and task.exception() is None

    async def _flush(self) -> None:
        task = asyncio.current_task()
        if task in self._tasks:
            # nats-py queues the PING's future before its first await, so this
            # names the connection whose PONG queue holds it.
            self._tasks[task] = self._nc.stats["reconnects"]
        await self._nc.flush(timeout=_NEVER)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.pop(task, None)
        if not task.cancelled():
            task.exception()  # retrieved: a failed flush is reported by the caller's False

    def forget_lost(self) -> None:
        """(asyncio) After a reconnect: cancel round trips whose PING went out before it.

        Safe: each connection gets a new PONG queue, so nothing will resolve
        (or touch) the futures of PINGs sent on an earlier one. Without this
        every outage would leave its unanswered round trips pending until close.
        """
        current = self._nc.stats["reconnects"]
        for task, connection in list(self._tasks.items()):
            if connection is not None and connection < current:
                task.cancel()

    async def watch(self, bound: float, on_silent: Callable[[], Awaitable[None]]) -> None:
        """(asyncio) Probe the server until cancelled; await *on_silent* when it is silent.

        A PING goes out every ``bound / 2`` seconds and is given ``bound / 2``
        for its PONG, so a server silent from time t fails the probe sent at
        the latest at t + bound/2, by t + bound. *on_silent* runs only while
        nats-py still thinks the link it probed is up.

        A probe whose PING went out on a connection that has since been
        replaced says nothing about the new one: its PONG can never come
        (:meth:`forget_lost` cancels it at the reconnect), so it is not
        silence. The connection is told apart by nats-py's reconnect count,
        not by ``nc._transport``, which nats-py reuses (and reconnects) as
        the same object: comparing that let a probe lost to an outage
        report the fresh connection silent and abort it just after the
        reconnect, taking with it whatever requests were in flight.
        """
        half = bound / 2
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            nc = self._nc
            # Bumped in the same step that marks a reconnect CONNECTED.
            probed = nc.stats["reconnects"]
            answered = not nc.is_connected or await self.round_trip(half)
            if not answered and nc.is_connected and nc.stats["reconnects"] == probed:
                await on_silent()
            await asyncio.sleep(max(0.0, started + half - loop.time()))

    async def abandon(self) -> None:
        """(asyncio) Cancel round trips still waiting; only once the connection is closed."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def drop_connection(nc: Client) -> None:
    """(asyncio) End nats-py's current connection at once, so that it reconnects.

    Aborting the socket skips the wait for unsent bytes to drain (which, to
    a silent server, never ends); nats-py's reader then sees end-of-file and
    reconnects as after any lost connection. Bytes still in the socket's
    buffer are lost, as in any disconnect; what nats-py had not yet written
    it keeps and sends after reconnecting. Falls back to ``force_reconnect``
    for a transport without a socket to abort.
    """
    writer = getattr(nc._transport, "_io_writer", None)
    transport = getattr(writer, "transport", None)
    if isinstance(transport, asyncio.Transport):
        transport.abort()
        return
    logger.debug("no socket to abort under %r: asking nats-py to reconnect", nc._transport)
    await nc.force_reconnect()
