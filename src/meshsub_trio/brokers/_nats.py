"""A broker backed by NATS, for running several server processes behind one bus.

nats-py is an asyncio library; this broker runs it inside
``trio_asyncio.open_loop()`` and is shaped by what crossing that boundary
costs (stack notes §5): never cross per message.

* Outbound: ``publish`` is synchronous, encodes with orjson and appends to a
  bounded queue (:mod:`._nats_outbox`); one asyncio task publishes batches.
* Inbound: one NATS subscription per topic per process, however many local
  subscribers it has; or, for topics under a shared wildcard
  (:meth:`NatsBroker.share_subscription`), one per wildcard, dispatched by
  the message's subject. Its asyncio callback hands the raw payload to Trio with
  ``send_nowait`` into one bounded channel; a Trio task decodes each message
  once and fans it out through a :class:`MemoryBroker`, i.e. through the same
  per-subscriber :class:`EventBuffer` policies as the in-memory broker. Only
  when that channel is full does the callback cross into Trio and wait, which
  pushes back on nats-py's per-subscription queue instead of dropping.
* Messages published here reach local subscribers through NATS too, so every
  process sees one order.
* Resume: :meth:`NatsBroker.subscribe_log` over JetStream (:mod:`._nats_log`).
* Request/reply: :meth:`NatsBroker.request`, :meth:`NatsBroker.serve_requests`
  and :meth:`NatsBroker.reply` (:mod:`._nats_requests`), where a subject
  nobody serves is :class:`NoResponders` at once.
* Outages: nats-py reconnects forever; :attr:`NatsBroker.state` mirrors the
  link, publishes wait in the bounded queue, core subscriptions are restored
  by nats-py, and log readers are resynced from their last sequence. A
  server that is connected but silent (hung, SIGSTOPped) counts as an
  outage within ``NatsOptions.stale_timeout`` (:mod:`._nats_ping`).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_asyncio import trio_as_aio

from ._broker import Delivery, NoResponders
from ._buffer import EventBuffer, Overflow
from ._nats_link import _TopicInterest
from ._nats_log import LogBuffer, LogFeed, LogStream, subject_matches
from ._nats_options import NatsOptions, _check_subject, _check_topic
from ._nats_outbox import BrokerClosed, NotStored, PublishQueueFull, Settled
from ._nats_requests import NatsRequests, Request

__all__ = [
    "BrokerClosed",
    "LogStream",
    "NatsBroker",
    "NatsOptions",
    "NoResponders",
    "NotStored",
    "PublishQueueFull",
    "Request",
]


class NatsBroker(NatsRequests):
    """The Broker interface over NATS (see module doc). Use :meth:`connect`."""

    def __init__(self, servers: Sequence[str], options: NatsOptions) -> None:
        super().__init__(servers, options)
        for pattern in options.shared_subjects:
            self.share_subscription(pattern)

    # ------------------------------------------------------------ publish

    def publish(self, topic: str, message: Any, *, stored: bool = False) -> int:
        """Queue *message* for *topic*; never blocks.

        Raises :class:`PublishQueueFull` when the outgoing queue is at its
        bound (the message is not sent), :class:`BrokerClosed` after close.
        With *stored* (the topic must be in the log's stream), returns a
        ticket for :meth:`wait_stored`; else 0.
        """
        _check_topic(topic)
        if stored and (self.options.log is None or not self.options.log.covers(topic)):
            raise ValueError(f"topic {topic!r} is not captured by the log: nothing would store it")
        payload = self._encode(message)
        return self._outbox.put(topic, payload, ack=stored)

    async def wait_stored(self, ticket: int, after: int = 0) -> None:
        """Wait until the log stored every message published with ``stored=True``
        up to *ticket*; raise :class:`NotStored` if one after *after* was refused.

        Unbounded (an answer lost with the connection never comes): bound it.
        """
        await self._outbox.wait_stored(ticket, after)

    async def wait_settled(self, ticket: int) -> None:
        """Wait until the log answered for every ticket up to *ticket*, stored
        or refused (learn which from :meth:`on_settled`). Bound it."""
        await self._outbox.wait_settled(ticket)

    def on_settled(self, callback: Settled) -> Callable[[], None]:
        """Call *callback(ticket, reason)* for every answer of the log, as it
        arrives (reason None: stored); returns what stops the calls.

        Why: :meth:`refused` keeps only the newest refusals; a caller that
        must know of each (to take back a refused change) keeps its own.
        *callback* runs on the event loop's thread, synchronously: keep it short.
        """
        self._outbox.on_settled.append(callback)
        return lambda: self._outbox.on_settled.remove(callback)

    @property
    def settled_through(self) -> int:
        """The newest ticket answered: the log stored, or refused, each one up to it."""
        return self._outbox.settled_through

    def refused(self, after: int, upto: int) -> dict[int, str]:
        """Tickets in ``(after, upto]`` the log refused, with its reasons (the
        newest 1,024 refusals are remembered: for each one, see :meth:`on_settled`)."""
        return self._outbox.refused(after, upto)

    async def flush(self) -> None:
        """Wait until every message published so far was flushed to the server."""
        await self._outbox.wait_flushed()

    # -------------------------------------------------------- subscribe

    def share_subscription(self, pattern: str) -> None:
        """Serve every topic matching wildcard *pattern* through one NATS subscription.

        Why: nats-py gives each subscription its own queue and task, so with
        one subscription per topic every message of many distinct topics is
        a task wake-up (and a trip through trio-asyncio's loop) of its own;
        one subscription takes a whole read's messages in one go. The price:
        while any local subscriber is under *pattern*, this process receives
        every message under it (dropped undecoded when nobody here wants
        it), so share a pattern when this process subscribes to most of its
        topics, not when N workers each want a few. Call before subscribing
        to any topic it covers; patterns must not overlap, so each message
        reaches a topic through exactly one subscription.
        """
        _check_subject(pattern)
        tokens = pattern.split(".")
        if "*" not in tokens and ">" not in tokens:
            raise ValueError(f"shared subject {pattern!r} has no wildcard")
        for other in self._shared:
            if _overlap(pattern, other):
                raise ValueError(f"shared subject {pattern!r} overlaps {other!r}")
        for subject in self._topics:
            if subject_matches(pattern, subject):
                raise RuntimeError(f"topic {subject!r} already has its own subscription")
        self._shared.append(pattern)

    def _nats_subject(self, topic: str) -> str:
        """The subject *topic* is subscribed through: its shared pattern, else itself."""
        for pattern in self._shared:
            if subject_matches(pattern, topic):
                return pattern
        return topic

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AsyncIterator[EventBuffer[Any]]:
        """A buffer of *topic*'s messages from every process, from now on.

        When this yields, the server has registered the interest (or, during
        an outage, nats-py will register it on reconnect).
        """
        _check_topic(topic)
        if self._closing:
            raise BrokerClosed("the NATS broker is closed")
        subject = self._nats_subject(topic)
        async with self._local.subscribe(topic, capacity=capacity, policy=policy) as buffer:
            interest = self._topics.get(subject)
            if interest is None:
                interest = self._topics[subject] = _TopicInterest()
            interest.refs += 1
            try:
                async with interest.lock:
                    if interest.sub is None:
                        # Shielded: a subscription created but not recorded
                        # would leak; the setup is bounded by flush_timeout.
                        with trio.CancelScope(shield=True):
                            interest.sub = await self._aio(self._nats_subscribe)(
                                subject, subject != topic
                            )
                await trio.lowlevel.checkpoint_if_cancelled()
                yield buffer
            finally:
                interest.refs -= 1
                with trio.CancelScope(shield=True), trio.move_on_after(self.options.flush_timeout):
                    await self._release(subject, interest)

    async def _nats_subscribe(self, subject: str, shared: bool) -> Any:
        """(asyncio) Subscribe, and confirm with the server when connected."""
        sub = await self._nc.subscribe(
            subject,
            cb=self._callback(None if shared else subject),
            pending_msgs_limit=self.options.sub_pending_msgs,
            pending_bytes_limit=self.options.sub_pending_bytes,
        )
        await self._pinger.round_trip(self.options.flush_timeout)
        return sub

    async def _release(self, topic: str, interest: _TopicInterest) -> None:
        async with interest.lock:
            if interest.refs > 0 or interest.sub is None:
                return
            sub, interest.sub = interest.sub, None
            if self._topics.get(topic) is interest:
                del self._topics[topic]
            if not self._nc.is_closed:
                with contextlib.suppress(Exception):
                    await self._aio(sub.unsubscribe)()

    def _callback(self, topic: str | None) -> Any:
        """nats-py's callback: *topic*'s messages, or (None) each under its own subject."""
        send = self._inbound_send

        async def deliver(msg: Any) -> None:
            item = (topic or msg.subject, msg.data)
            try:
                send.send_nowait(item)
            except trio.WouldBlock:
                # The fan-out is behind: wait (one crossing) rather than drop;
                # nats-py keeps queueing for this subscription meanwhile.
                self.inbound_waits += 1
                with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                    await trio_as_aio(send.send, loop=self._loop)(item)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                pass

        return deliver

    @asynccontextmanager
    async def subscribe_log(
        self,
        topic: str,
        *,
        after: int | None = None,
        capacity: int = 256,
        policy: Overflow = Overflow.CLOSE,
    ) -> AsyncIterator[EventBuffer[Delivery[Any]]]:
        """Messages of *topic* as :class:`Delivery` items, resumable from a cursor.

        ``after=None``: from now on; ``after=N``: everything after stream
        sequence *N*, then live, with no gap and no duplicate. *topic* may
        be a wildcard subject (``app.>``): one reader then sees every
        matching topic in the stream's single order (what a model replica
        needs). Raises CursorExpired/CursorError as the in-memory broker
        does. The reader is
        lossless: when its buffer (*capacity*) is full, JetStream holds the
        rest, so *policy* never triggers.

        During an outage, or when the link drops while the reader starts,
        this waits for the link and then starts from *after* (bound it with
        a cancel scope); what JetStream refuses (the stream missing and
        impossible to create) is a RuntimeError at once. Raises
        :class:`BrokerClosed` once the broker closes.
        """
        log = self.options.log
        if log is None or self._js is None:
            raise RuntimeError("this NatsBroker has no JetStream log (options.log=None)")
        _check_subject(topic)
        if not log.covers(topic):
            raise ValueError(f"topic {topic!r} is not captured by stream {log.name} {log.subjects}")
        if self._closing:
            raise BrokerClosed("the NATS broker is closed")
        buffer = LogBuffer(capacity, policy)
        feed = LogFeed(self._js, log, topic, buffer)
        self._feeds.add(feed)  # from the start: a reconnect just after it resyncs it
        try:
            await self._start_log(feed, after)
        except BaseException:
            self._feeds.discard(feed)
            feed.give_up()
            if not self._closing:  # else the connection goes, and its consumers with it
                with trio.CancelScope(shield=True), trio.move_on_after(self.options.flush_timeout):
                    await self._aio(feed.close)()
            raise
        try:
            yield buffer
        finally:
            self._feeds.discard(feed)
            self.log_resyncs += feed.resyncs
            buffer.detach()
            if not self._closing:  # else closing already stopped it (and the loop may be gone)
                with trio.CancelScope(shield=True), trio.move_on_after(self.options.flush_timeout):
                    await self._aio(feed.close)()

    # ------------------------------------------------------ introspection

    def subscriber_count(self, topic: str) -> int:
        """Local subscribers of *topic* (the NATS subscription is shared by them)."""
        return self._local.subscriber_count(topic)

    def nats_subscription_count(self) -> int:
        """NATS subscriptions this process holds (a shared pattern counts once)."""
        return sum(1 for interest in self._topics.values() if interest.sub is not None)

    @property
    def dropped(self) -> defaultdict[str, int]:
        """Messages discarded by local subscribers' overflow policies, per topic."""
        return self._local.dropped

    def stats(self) -> dict[str, int]:
        box = self._outbox
        return {
            "published": box.enqueued,
            "publish_rejected": box.rejected,
            "publish_flushed": box.flushed,
            "publish_failed": box.failed,
            "publish_abandoned": box.abandoned,
            "publish_queued": len(box),
            "received": self.received,
            "inbound_waits": self.inbound_waits,
            "slow_consumer": self.slow_consumer,
            "decode_errors": self.decode_errors,
            "dropped": sum(self._local.dropped.values()),
            "log_readers": len(self._feeds) - self.log_starting,
            "log_starting": self.log_starting,
            "log_start_retries": self.log_start_retries,
            "log_resyncs": self.log_resyncs + sum(feed.resyncs for feed in self._feeds),
            "stale_detections": self.stale_detections,
            "pings_waiting": len(self._pinger),
        }


def _overlap(a: str, b: str) -> bool:
    """Whether some subject matches both patterns (``*`` one token, a final ``>`` one or more)."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right, strict=False):
        if x == ">" or y == ">":
            return True
        if x != y and x != "*" and y != "*":
            return False
    return len(left) == len(right)
