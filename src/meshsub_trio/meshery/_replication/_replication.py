"""The Meshery model replicated over a shared log: many processes, one server.

State lives in each process's in-memory :class:`Model`, so every process
applies every change, in one order: the order of the shared log (a JetStream
stream over ``meshery.>``, whose sequence numbers are the same everywhere).

* ``commit`` (the model's changes): publish an envelope ``{origin, n, topic,
  message}`` on the message's topic. If the broker refuses it (its bounded
  outgoing queue is full during an outage, or it is closed), nothing is
  applied and :class:`BrokerUnavailable` says so. Otherwise blind writes are
  applied at once (read-your-writes) and remembered as pending; appends are
  applied only from the log (see :mod:`._pending`).
* A pending change the log refuses, or does not confirm within
  ``flush_timeout``, is taken back (rolled back to its before-image): by
  the flush of the mutation that made it (whose caller alone gets
  BROKER_UNAVAILABLE: :mod:`._confirmations`), by a sweep every
  ``flush_timeout`` for changes no one flushed, and when a later
  own change comes back from the log without it. So no replica keeps a
  change the others never get, nor one its caller was told failed. An
  unconfirmed change may still reach the log later; every replica, this one
  included, then applies it from there. Why a rollback and not "apply once
  confirmed": :mod:`._own_changes`.
* One replicator task reads the whole log from the start (a late process
  replays the history and converges) and, for each entry, applies it unless
  it is our own pending change coming back; a foreign change that conflicts
  with pending ones goes under them (they are undone, it is applied, they are
  redone), which is the log's order. Then the entry goes to this process's
  local subscribers, so a streamer only ever sees a change after its model
  applied it, in log order, with its log sequence (the resume cursor).
* ``subscribe_log(topic, after=cursor)`` resumes a client: history from this
  replica's own record of the log, in users' fair shares (:mod:`._history`;
  the shared log for older cursors), then the live local feed (:mod:`._resume`).

The replicator's reader is lossless, so the stream's retention is the real
bound: a replica further behind than it, or started after history was
evicted, cannot see what is gone (logged and counted: ``gaps``; it goes on
from the oldest entry retained). Size the retention above what the state
needs, or give the bus a snapshot store (:mod:`._snapshots`, as
``create_app`` does on NATS): a process then starts from the newest snapshot.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import trio

from ...brokers._broker import ConnectionState, CursorExpired, Delivery, LogBroker, MemoryBroker
from ...brokers._buffer import BufferOverflow, EventBuffer, Overflow
from ...brokers._nats_outbox import BrokerClosed, PublishQueueFull
from .._api._resume import ResumeFeed
from .._model import _topics as topics
from .._model._model import Model
from ._confirmations import BrokerUnavailable, ChangeUnconfirmed, Confirmations
from ._history import ReplicaHistory, message_of
from ._link import mirror_link
from ._own_changes import OwnChanges
from ._pending import applies_at_once
from ._snapshots import SnapshotStore, Snapshotter

log = logging.getLogger("meshsub_trio.meshery.replication")

__all__ = ["SYNC_TOPIC", "BrokerUnavailable", "ChangeUnconfirmed", "ReplicatedBus"]

#: Barrier markers: a replica that reads its own marker back has applied
#: everything logged before it (see :meth:`ReplicatedBus.barrier`).
SYNC_TOPIC = "meshery.replica.sync"


class ReplicatedBus:
    """The Broker that a replicated Model and its streamers use (see module doc).

    *shared* is a log broker shared by every process (a connected
    :class:`~meshsub_trio.NatsBroker`). Call :meth:`attach` with the model,
    and keep :meth:`running` open while serving.
    """

    def __init__(
        self,
        shared: LogBroker,
        *,
        subject: str = "meshery.>",
        capacity: int = 1024,
        flush_timeout: float = 5.0,
        origin: str | None = None,
        snapshots: SnapshotStore | None = None,
        history_bytes: int | None = None,
    ) -> None:
        self.shared = shared
        #: Takes and restores snapshots of the model, when given a snapshot store.
        self.snapshotter = Snapshotter(snapshots) if snapshots is not None else None
        #: The log sequence this replica started from (a snapshot's): every
        #: topic's history up to it is in the shared log, none of it is local.
        self._floor = 0
        #: This replica's resume history, held in users' shares (:mod:`._history`).
        self.history = ReplicaHistory(log_bytes=history_bytes)
        #: This process's identity in envelopes (new at every start).
        self.origin = origin or uuid.uuid4().hex[:16]
        self.subject = subject
        self.capacity = capacity
        self.flush_timeout = flush_timeout
        self.model: Model | None = None
        self._plain = MemoryBroker(log_capacity=0)
        self._deliveries = MemoryBroker(log_capacity=0)
        self._own = OwnChanges(self.origin, self._apply)
        self._sent = 0
        #: What the log answered for our changes, when the shared broker says
        #: (NATS does: tickets, :mod:`._confirmations`).
        self._confirms = Confirmations(shared, self._own) if hasattr(shared, "on_settled") else None
        #: The newest log sequence handed to local subscribers, overall and per topic.
        self.last_seq = 0
        self._topic_seq: dict[str, int] = {}
        #: Set once the replicator has applied the log up to our start marker.
        self.caught_up = trio.Event()
        self._barriers: dict[int, trio.Event] = {}
        self._running = False
        self.applied = 0
        self.apply_errors = 0
        self.ignored = 0
        self.gaps = 0
        self.reader_restarts = 0

    def attach(self, model: Model) -> None:
        """Take over *model*'s commits; it must use this bus as its broker."""
        self.model = self._own.model = model
        model.committer = self

    # ------------------------------------------------------------ publishing

    def commit(self, topic: str, message: dict[str, Any]) -> None:
        """Publish a model change; apply blind writes at once (see module doc)."""
        number, ticket = self._send(topic, message)
        flight = self._confirms.sent(ticket) if self._confirms is not None else None
        if applies_at_once(message):
            self._own.apply_own(number, ticket, message, flight)

    def publish(self, topic: str, message: Any) -> None:
        """Publish a model message that every replica applies from the log."""
        _number, ticket = self._send(topic, message)
        if self._confirms is not None:
            self._confirms.sent(ticket)

    def _send(self, topic: str, message: Any) -> tuple[int, int]:
        """Publish an envelope; its number and broker ticket (0: none)."""
        # While the link is down a change is refused, not queued: it would be
        # answered before the log had it, and lost if this process stopped.
        if self.shared.state is not ConnectionState.CONNECTED:
            raise BrokerUnavailable(f"the shared broker is {self.shared.state.name.lower()}")
        number = self._sent + 1
        envelope = {"origin": self.origin, "n": number, "topic": topic, "message": message}
        ticket = 0
        try:
            if self._confirms is not None:
                publish: Any = self.shared.publish  # NatsBroker's, with tickets
                ticket = publish(topic, envelope, stored=True)
            else:
                self.shared.publish(topic, envelope)
        except PublishQueueFull as error:
            raise BrokerUnavailable(str(error)) from error
        except BrokerClosed as error:
            raise BrokerUnavailable("the broker is closed") from error
        self._sent = number
        return number, ticket

    async def flush(self) -> None:
        """Wait until the log stored what the calling mutation (task) committed,
        within ``flush_timeout``.

        Raises :class:`BrokerUnavailable` when the log refused one of its
        changes, and :class:`ChangeUnconfirmed` when it did not answer in time. A shared
        broker without store confirmations (a test's) is flushed instead.
        """
        if self._confirms is not None:
            await self._confirms.flush(self.flush_timeout)
            return
        flush = getattr(self.shared, "flush", None)
        if flush is None or self.shared.state is not ConnectionState.CONNECTED:
            await trio.lowlevel.checkpoint()
            return
        with trio.move_on_after(self.flush_timeout):
            await flush()

    async def barrier(self) -> None:
        """Wait until this replica applied everything logged before the call.

        A marker goes through the log; the log has one order, so once the
        replicator reads it back, every change logged earlier (by any process)
        is applied here. Needs :meth:`running`; waits out an outage.
        """
        number, _ticket = self._send(SYNC_TOPIC, {"type": "replica", "op": "sync"})
        passed = self._barriers[number] = trio.Event()
        try:
            await passed.wait()
        finally:
            self._barriers.pop(number, None)

    def notify_local(self, topic: str, message: Any) -> None:
        """Wake this process's subscribers of *topic* only (no log entry, no cursor)."""
        self._plain.publish(topic, message)

    # ------------------------------------------------------- the Broker API

    @property
    def state(self) -> ConnectionState:
        return self.shared.state

    async def wait_state_change(self, seen: ConnectionState) -> ConnectionState:
        return await self.shared.wait_state_change(seen)

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AsyncIterator[EventBuffer[Any]]:
        """*topic*'s messages, each after this process's model applied it."""
        async with self._plain.subscribe(topic, capacity=capacity, policy=policy) as buffer:
            yield buffer

    @asynccontextmanager
    async def subscribe_log(
        self,
        topic: str,
        *,
        after: int | None = None,
        capacity: int = 256,
        policy: Overflow = Overflow.CLOSE,
    ) -> AsyncIterator[Any]:
        """*topic*'s messages as :class:`Delivery` items whose seq is the shared log's.

        ``after=None``: from now on (the live feed, with *policy*).
        ``after=N``: every message after *N*, replayed from the shared log,
        then live, each once (:class:`ResumeFeed`, lossless); raises
        CursorExpired/CursorError like the shared broker.
        """
        if after is None:
            async with self._deliveries.subscribe(
                topic, capacity=capacity, policy=policy
            ) as buffer:
                yield buffer
            return
        if after > self.last_seq:
            # Ahead of this replica: another one's cursor, or a bogus one. The
            # shared log refuses a cursor ahead of it (CursorError).
            async with self.shared.subscribe_log(topic, after=after, capacity=1):
                pass
        feed = ResumeFeed(
            after=after,
            capacity=capacity,
            open_live=lambda size: self._deliveries.subscribe(
                topic, capacity=max(size, self.capacity), policy=Overflow.CLOSE
            ),
            newest=lambda: max(self._topic_seq.get(topic, 0), self._floor),
            open_history=lambda start, size: self.history.open(self.shared, topic, start, size),
            unwrap=message_of,
        )
        try:
            await feed.open()
            yield feed
        finally:
            with trio.CancelScope(shield=True):
                await feed.aclose()

    # ------------------------------------------------------------ replicator

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run the replicator (and the BROKER status mirror); yield once caught up.

        Caught up means every change logged before this process started has
        been applied, so a late process serves the same state as the others
        from its first request. Entering again while running just waits for that.
        """
        if self._running:
            await self.caught_up.wait()
            yield
            return
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                if self.snapshotter is not None and self.model is not None:
                    self.last_seq = self._floor = await self.snapshotter.restore(self.model)
                    self.history.start_at(self._floor)
                    nursery.start_soon(self.snapshotter.run, self._capture)
                nursery.start_soon(self._replicate)
                if self._confirms is not None:
                    nursery.start_soon(self._confirms.sweep, self.flush_timeout)
                if self.model is not None:
                    nursery.start_soon(mirror_link, self.shared, self.model, self._wake_controllers)
                log.info("replica %s: replaying the shared log", self.origin)
                await self.barrier()
                self.caught_up.set()
                log.info("replica %s: caught up at log sequence %d", self.origin, self.last_seq)
                try:
                    yield
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._running = False

    def _capture(self) -> tuple[int, list[dict[str, Any]]] | None:
        """This replica's state as "the log up to last_seq" (None while own
        changes are pending: those are applied but not yet in the log)."""
        if self.model is None or len(self._own):
            return None
        return self.last_seq, self.model.state_messages()

    def _wake_controllers(self) -> None:
        self.notify_local(topics.CONTROLLERS, {"type": "controller", "op": "link"})

    async def _replicate(self) -> None:
        """Apply and fan out every log entry, from the start, until the broker closes."""
        after = self.last_seq
        while True:
            try:
                async with self.shared.subscribe_log(
                    self.subject, after=after, capacity=self.capacity, policy=Overflow.CLOSE
                ) as entries:
                    async for delivery in entries:
                        self._on_entry(delivery)
                # The broker closed: so does every local stream.
                self._plain.close()
                self._deliveries.close()
                self.history.close()
                return
            except CursorExpired as expired:
                self.gaps += 1
                log.error(
                    "replica %s: log entries %d..%d were evicted before this replica "
                    "applied them; its state may lack those changes",
                    self.origin,
                    after + 1,
                    expired.oldest,
                )
                after = self.last_seq = expired.oldest
                self.history.skipped_to(after)
            except BufferOverflow:  # only from a lossy (in-memory) shared broker
                after = self.last_seq
            self.reader_restarts += 1

    def _on_entry(self, delivery: Delivery[Any]) -> None:
        envelope, previous = delivery.message, self.last_seq
        if delivery.seq != previous + 1:
            self.history.skipped_to(delivery.seq - 1)  # entries it never had
            if previous:
                self.gaps += 1
                log.warning(
                    "replica %s: log jumped from %d to %d", self.origin, previous, delivery.seq
                )
        self.last_seq = delivery.seq
        if self.snapshotter is not None:
            self.snapshotter.note(delivery.seq)  # a snapshot is taken after this entry, if due
        message = message_of(envelope)
        topic = envelope.get("topic") if isinstance(envelope, dict) else None
        if message is None or not isinstance(topic, str):
            self.ignored += 1
            return
        own = envelope.get("origin") == self.origin
        if topic == SYNC_TOPIC:
            passed = self._barriers.get(envelope.get("n")) if own else None
            if passed is not None:
                passed.set()
            return
        number = envelope.get("n") if own else None
        self._own.on_entry(message, number if isinstance(number, int) else None)
        # A replica of an earlier version may still write an older name: its
        # subscribers are under the name the owner's ids make now.
        topic = topics.resumed_topic(topic, message)
        self._topic_seq[topic] = delivery.seq
        self.history.record(delivery.seq, topic, envelope)
        if self._plain.subscriber_count(topic):
            self._plain.publish(topic, message)
        if self._deliveries.subscriber_count(topic):
            self._deliveries.publish(topic, Delivery(delivery.seq, message))

    def _apply(self, message: Mapping[str, Any]) -> None:
        if self.model is None:
            return
        try:
            self.model.apply(message)
            self.applied += 1
        except Exception as error:  # a bad message must not stop replication
            self.apply_errors += 1
            log.warning("replica %s: cannot apply %r: %r", self.origin, message, error)

    @property
    def rebases(self) -> int:
        """Foreign log entries that had to go under pending own changes."""
        return self._own.rebases

    @property
    def lost_own(self) -> int:
        """Own changes a later own echo showed never reached the log."""
        return self._own.lost_own

    def stats(self) -> dict[str, int]:
        own = self._own
        return {
            "last_seq": self.last_seq,
            "applied": self.applied,
            "confirmed": own.confirmed,
            "pending": len(own),
            "rebases": own.rebases,
            "lost_own": own.lost_own,
            "rolled_back": own.rolled_back,
            "apply_errors": self.apply_errors,
            "ignored": self.ignored,
            "gaps": self.gaps,
            "reader_restarts": self.reader_restarts,
            "dropped": sum(self._plain.dropped.values()) + sum(self._deliveries.dropped.values()),
            **(self.snapshotter.stats() if self.snapshotter is not None else {}),
            **self.history.stats(),
        }
