"""The NATS broker's outgoing queue: a synchronous append, drained by one asyncio task.

Why this shape: crossing from Trio into asyncio costs ~40 µs per call and a
per-message crossing also defeats nats-py's write batching (measured: 4.5k
msgs/s), so Trio code never awaits a publish. ``put`` appends the encoded
message to a bounded deque and returns; a single asyncio task hands whatever
has queued up to nats-py in one go and then flushes once (one PING/PONG) per
batch, so a burst costs a few socket writes and one round trip.

While the connection is down the task waits for it to come back and the
messages stay here, within the same bound: that bound is the only buffer a
publisher can fill, and a full queue is an error the caller sees at once
(:class:`PublishQueueFull`), never a silent drop.

A message put with ``ack=True`` gets a *ticket* and goes out with a reply
subject under :attr:`Outbox.ack_prefix`; JetStream answers there once it has
stored the message (or why it could not). A flush only says nats-server has
the bytes; a ticket says the log kept them, which is what a caller that
promises durability must wait for (:meth:`Outbox.wait_stored`).

Every answer also goes, as it arrives, to the callbacks in
:attr:`Outbox.on_settled`: the outbox itself keeps only the newest 1,024
refusals (for ``wait_stored``'s window), so a caller that must never miss
one (a replica taking back a refused change) keeps what it still needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
import trio

if TYPE_CHECKING:
    from nats.aio.client import Client

    from ._nats_ping import Pinger

logger = logging.getLogger(__name__)


class PublishQueueFull(Exception):
    """``publish`` found the outgoing queue at its bound; the message was not queued."""

    def __init__(self, max_messages: int, max_bytes: int) -> None:
        super().__init__(
            f"NATS outgoing queue full ({max_messages} messages / {max_bytes} bytes): "
            "the server is unreachable or slower than the publishers"
        )
        self.max_messages = max_messages
        self.max_bytes = max_bytes


class BrokerClosed(Exception):
    """The broker is closing or closed: nothing more can be published."""


class NotStored(Exception):
    """The log did not store a message published for a ticket (JetStream's reason).

    ``tickets``: every ticket of the window waited for that the log refused,
    so that a caller can take back exactly what did not reach the log.
    """

    def __init__(self, reason: str, tickets: tuple[int, ...] = ()) -> None:
        super().__init__(reason)
        self.tickets = tickets


#: Failed tickets remembered for waiters (failures are rare; the oldest go first).
_MAX_FAILURES = 1024

#: Told of every answer as it arrives: the ticket, and why the log refused it (None: stored).
Settled = Callable[[int, "str | None"], None]


class Outbox:
    """A bounded queue of ``(subject, payload)``; ``put`` never blocks (see module doc)."""

    def __init__(
        self, *, max_messages: int, max_bytes: int, batch: int, flush_timeout: float
    ) -> None:
        if max_messages < 1 or max_bytes < 1:
            raise ValueError("the outgoing queue bounds must be positive")
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self._batch = batch
        self._flush_timeout = flush_timeout
        self._queue: deque[tuple[str, bytes, int]] = deque()
        self._bytes = 0
        self._closed = False
        #: Where JetStream's acknowledgements come back (set once connected).
        self.ack_prefix = ""
        self._tickets = 0
        #: Every ticket up to this one was answered (stored, refused or given up).
        self.settled_through = 0
        self._failures: dict[int, str] = {}
        #: Called (synchronously, before waiters wake) for every answer.
        self.on_settled: list[Settled] = []
        #: Counters: accepted, refused because full, handed to nats-py and
        #: flushed, refused by nats-py while connected (logged), and still
        #: queued when the broker closed.
        self.enqueued = 0
        self.rejected = 0
        self.flushed = 0
        self.failed = 0
        self.abandoned = 0
        self._wakeup = asyncio.Event()
        self._progress = trio.Event()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, subject: str, payload: bytes, *, ack: bool = False) -> int:
        """Queue one message or raise :class:`PublishQueueFull`/:class:`BrokerClosed`.

        With *ack*, the message's ticket (see :meth:`wait_stored`); else 0.
        """
        if self._closed:
            raise BrokerClosed("the NATS broker is closed")
        if len(self._queue) >= self.max_messages or self._bytes + len(payload) > self.max_bytes:
            self.rejected += 1
            raise PublishQueueFull(self.max_messages, self.max_bytes)
        ticket = 0
        if ack:
            self._tickets = ticket = self._tickets + 1
        self._queue.append((subject, payload, ticket))
        self._bytes += len(payload)
        self.enqueued += 1
        if not self._wakeup.is_set():
            self._wakeup.set()
        return ticket

    async def wait_stored(self, ticket: int, after: int = 0) -> None:
        """(Trio) Wait until JetStream answered for every ticket up to *ticket*.

        Raises :class:`NotStored` when any ticket after *after* up to *ticket*
        was refused. The caller bounds the wait: an answer lost with the
        connection never comes.
        """
        await self.wait_settled(ticket)
        refused = self.refused(after, ticket)
        if refused:
            raise NotStored(next(iter(refused.values())), tuple(refused))
        await trio.lowlevel.checkpoint()

    async def wait_settled(self, ticket: int) -> None:
        """(Trio) Wait until JetStream answered for every ticket up to *ticket*,
        whatever it answered (see :attr:`on_settled`). Bound the wait."""
        while self.settled_through < ticket:
            await self._progress.wait()

    def refused(self, after: int, upto: int) -> dict[int, str]:
        """The tickets in ``(after, upto]`` the log refused, oldest first, with why.

        Looks through the failures kept (a bounded few), not every ticket of
        the window: a window from 0 would otherwise cost a look-up per
        message ever sent.
        """
        return {t: reason for t, reason in self._failures.items() if after < t <= upto}

    async def on_ack(self, msg: Any) -> None:
        """(asyncio, nats-py's callback) JetStream's answer for one ticket."""
        try:
            ticket = int(msg.subject.rsplit(".", 1)[1])
        except (IndexError, ValueError):
            return
        reason: str | None = None
        status = (msg.headers or {}).get("Status") if hasattr(msg, "headers") else None
        if status == "503":
            reason = "no JetStream stream captures the subject"
        else:
            try:
                answer = orjson.loads(msg.data)
            except orjson.JSONDecodeError:
                answer = {"error": {"description": "an answer that is not JSON"}}
            error = answer.get("error") if isinstance(answer, dict) else None
            if isinstance(error, dict):
                reason = str(error.get("description", error))
            elif error is not None:
                reason = str(error)
        self._settle(ticket, reason)

    def _settle(self, ticket: int, reason: str | None) -> None:
        if reason is not None:
            self._failures[ticket] = reason
            while len(self._failures) > _MAX_FAILURES:
                del self._failures[next(iter(self._failures))]
        for callback in self.on_settled:
            try:
                callback(ticket, reason)
            except Exception:  # a listener's bug must not stop the answers
                logger.exception("a listener of the log's answers failed")
        if ticket > self.settled_through:
            self.settled_through = ticket
        self._notify()

    def close(self) -> None:
        """Refuse further messages; those already queued are still sent."""
        self._closed = True

    async def wait_flushed(self) -> None:
        """(Trio) Wait until everything queued before the call was flushed or abandoned."""
        target = self.enqueued
        while self.flushed + self.failed + self.abandoned < target:
            await self._progress.wait()

    def abandon(self) -> int:
        """Give up on what is still queued (closing while disconnected); count it."""
        count = len(self._queue)
        for _subject, _payload, ticket in self._queue:
            if ticket:
                self._settle(ticket, "the broker closed before sending it")
        self._queue.clear()
        self._bytes = 0
        self.abandoned += count
        self._notify()
        return count

    def _notify(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    async def run(self, nc: Client, pinger: Pinger, connected: asyncio.Event) -> None:
        """(asyncio) The drain task: batches to nats-py, one flush per batch."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._queue:
                if not nc.is_connected:
                    # nats-py says disconnected at once but runs the link's
                    # disconnect callback later, in a task of its own: until
                    # then *connected* is still set, and waiting on it would
                    # return at once, every time, and never let that task
                    # (nor any other, Trio's included) run. Cleared here, it
                    # is set again by the reconnect callback, which nats-py
                    # only runs once it is connected again.
                    connected.clear()
                    await connected.wait()
                    continue
                handed = await self._send_batch(nc)
                if handed:
                    # One PING/PONG: the server has the batch. If it fails,
                    # nats-py keeps unsent data in its own buffer and writes
                    # it after reconnecting, so there is nothing to resend.
                    if not await pinger.round_trip(self._flush_timeout):
                        logger.debug("NATS flush did not complete")
                    self.flushed += handed
                    self._notify()

    async def _send_batch(self, nc: Client) -> int:
        handed = 0
        queue = self._queue
        while queue and handed < self._batch:
            subject, payload, ticket = queue[0]
            try:
                if ticket:
                    await nc.publish(subject, payload, reply=f"{self.ack_prefix}.{ticket}")
                else:
                    await nc.publish(subject, payload)
            except Exception as exc:
                if not nc.is_connected:  # the link dropped mid-batch: keep the rest queued
                    logger.debug("NATS publish deferred: %r", exc)
                    break
                # Refused while connected: retrying would spin, so drop it loudly.
                logger.warning("NATS refused a message on %r: %r", subject, exc)
                queue.popleft()
                self._bytes -= len(payload)
                self.failed += 1
                if ticket:
                    self._settle(ticket, f"NATS refused it: {exc!r}")
                self._notify()
                continue
            queue.popleft()
            self._bytes -= len(payload)
            handed += 1
        return handed
