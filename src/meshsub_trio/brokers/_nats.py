"""A broker backed by NATS, for running several server processes behind one bus.

nats-py is an asyncio library; this broker runs it inside
``trio_asyncio.open_loop()`` and is shaped by what crossing that boundary
costs (stack notes §5): never cross per message.

* Outbound: ``publish`` is synchronous, encodes with orjson and appends to a
  bounded queue (:mod:`._nats_outbox`); one asyncio task publishes batches.
* Inbound: one NATS subscription per topic per process, however many local
  subscribers it has. Its asyncio callback hands the raw payload to Trio with
  ``send_nowait`` into one bounded channel; a Trio task decodes each message
  once and fans it out through a :class:`MemoryBroker`, i.e. through the same
  per-subscriber :class:`EventBuffer` policies as the in-memory broker. Only
  when that channel is full does the callback cross into Trio and wait, which
  pushes back on nats-py's per-subscription queue instead of dropping.
* Messages published here reach local subscribers through NATS too, so every
  process sees one order.
* Resume: :meth:`NatsBroker.subscribe_log` over JetStream (:mod:`._nats_log`).
* Outages: nats-py reconnects forever; :attr:`NatsBroker.state` mirrors the
  link, publishes wait in the bounded queue, core subscriptions are restored
  by nats-py, and log readers are resynced from their last sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import trio
import trio_asyncio
from nats.aio.client import Client
from nats.errors import SlowConsumerError
from trio_asyncio import TrioEventLoop, aio_as_trio, trio_as_aio

from ._broker import ConnectionState, Delivery, MemoryBroker
from ._buffer import EventBuffer, Overflow
from ._nats_log import LogBuffer, LogFeed, LogStream, ensure_stream
from ._nats_outbox import BrokerClosed, Outbox, PublishQueueFull
from ._nats_ping import Pinger

__all__ = [
    "BrokerClosed",
    "LogStream",
    "NatsBroker",
    "NatsOptions",
    "PublishQueueFull",
]

logger = logging.getLogger(__name__)

#: Messages the Trio fan-out task handles per checkpoint.
_FAN_OUT_BATCH = 256


@dataclass(frozen=True)
class NatsOptions:
    """Tunables and bounds of a :class:`NatsBroker` (every queue here is bounded)."""

    #: Outgoing queue bound: ``publish`` raises PublishQueueFull beyond it.
    max_pending: int = 10_000
    max_pending_bytes: int = 8 * 1024 * 1024
    #: Messages handed to nats-py per flush (one PING/PONG per batch).
    publish_batch: int = 4096
    flush_timeout: float = 5.0
    #: Messages in flight from the NATS callbacks to the Trio fan-out task.
    inbound_capacity: int = 4096
    #: nats-py's per-subscription queue behind that; beyond it nats-py drops
    #: (counted as ``slow_consumer``).
    sub_pending_msgs: int = 65_536
    sub_pending_bytes: int = 64 * 1024 * 1024
    #: The JetStream log, or None for a broker without subscribe_log.
    log: LogStream | None = field(default_factory=LogStream)
    name: str | None = None
    connect_timeout: float = 5.0
    reconnect_wait: float = 0.5
    ping_interval: float = 20.0
    #: How long closing waits for queued messages to reach the server.
    close_timeout: float = 5.0


class NatsBroker:
    """The Broker interface over NATS (see module doc). Use :meth:`connect`."""

    def __init__(self, servers: Sequence[str], options: NatsOptions) -> None:
        self._servers = list(servers)
        self.options = options
        self._local = MemoryBroker(log_capacity=0)
        self._nc = Client()
        self._pinger = Pinger(self._nc)
        self._loop: TrioEventLoop = trio_asyncio.current_loop.get()
        self._js: Any = None
        self._outbox = Outbox(
            max_messages=options.max_pending,
            max_bytes=options.max_pending_bytes,
            batch=options.publish_batch,
            flush_timeout=options.flush_timeout,
        )
        self._inbound_send, self._inbound_recv = trio.open_memory_channel[tuple[str, bytes]](
            options.inbound_capacity
        )
        self._topics: dict[str, _TopicInterest] = {}
        self._feeds: set[LogFeed] = set()
        self._state = ConnectionState.CONNECTING
        self._state_changed = trio.Event()
        self._connected = asyncio.Event()
        self._asyncio_tasks: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._fan_out_done = trio.Event()
        #: Counters: nats-py errors by type, nats-py slow-consumer drops,
        #: callbacks that had to wait for the fan-out, undecodable messages.
        self.errors: Counter[str] = Counter()
        self.slow_consumer = 0
        self.inbound_waits = 0
        self.decode_errors = 0
        self.received = 0
        self.log_resyncs = 0

    # ----------------------------------------------------------- lifecycle

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, servers: str | Sequence[str], *, options: NatsOptions | None = None, **overrides: Any
    ) -> AsyncIterator[NatsBroker]:
        """Connect, and close cleanly (flush, drain) on exit.

        Opens a ``trio_asyncio`` loop unless already inside one. *overrides*
        replace fields of *options*.
        """
        chosen = replace(options or NatsOptions(), **overrides)
        urls = [servers] if isinstance(servers, str) else list(servers)
        try:
            async with contextlib.AsyncExitStack() as stack:
                if trio_asyncio.current_loop.get() is None:
                    await stack.enter_async_context(trio_asyncio.open_loop())
                async with trio.open_nursery() as nursery:
                    broker = cls(urls, chosen)
                    try:
                        await broker._open(nursery)
                        yield broker
                    finally:
                        with trio.CancelScope(shield=True):
                            await broker._close()
                        nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nurseries (ours, trio-asyncio's) wrap whatever the body or
            # connect raised; a lone exception is re-raised as itself.
            leaf = _single_leaf(group)
            if leaf is None:
                raise
            raise leaf from None

    async def _open(self, nursery: trio.Nursery) -> None:
        try:
            with trio.fail_after(self.options.connect_timeout):
                await self._aio(self._connect_nats)()
        except BaseException as exc:
            self._fan_out_done.set()  # never started: closing must not wait for it
            if isinstance(exc, trio.TooSlowError):
                raise ConnectionError(
                    f"no NATS server answered at {self._servers} within "
                    f"{self.options.connect_timeout}s"
                ) from None
            raise
        self._set_state(ConnectionState.CONNECTED)
        nursery.start_soon(self._fan_out)

    async def _connect_nats(self) -> None:
        """(asyncio) Connect, create the log stream, start the drain task."""
        opts = self.options
        # The two arg-type ignores below: nats-py annotates these seconds as int
        # but uses them as floats (asyncio timeouts), and fractions matter here.
        await self._nc.connect(
            self._servers,
            name=opts.name,
            error_cb=self._on_error,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            closed_cb=self._on_closed,
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=opts.reconnect_wait,  # type: ignore[arg-type]
            connect_timeout=max(1, int(opts.connect_timeout)),
            ping_interval=opts.ping_interval,  # type: ignore[arg-type]
            skip_subject_validation=True,  # topics are validated once, in publish/subscribe
            drain_timeout=max(1, int(opts.close_timeout)),
        )
        self._connected.set()
        if opts.log is not None:
            self._js = self._nc.jetstream()
            try:
                await ensure_stream(self._js, opts.log)
            except Exception as exc:
                raise RuntimeError(
                    f"cannot set up JetStream stream {opts.log.name!r} ({exc!r}); "
                    "start nats-server with -js, or pass log=None"
                ) from exc
        self._spawn(self._outbox.run(self._nc, self._pinger, self._connected))

    def _aio(self, fn: Any) -> Any:
        """``aio_as_trio`` on this broker's loop: callers may run outside its context."""
        return aio_as_trio(fn, loop=self._loop)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._asyncio_tasks.add(task)
        task.add_done_callback(self._asyncio_tasks.discard)

    async def _close(self) -> None:
        """Flush what is queued, stop the readers, drain NATS inside the loop."""
        if self._closing:
            return
        self._closing = True
        self._outbox.close()
        with trio.move_on_after(self.options.close_timeout):
            await self._outbox.wait_flushed()
        lost = self._outbox.abandon()
        if lost:
            logger.warning("NATS broker closed with %d unsent messages", lost)
        feeds = list(self._feeds)
        with trio.move_on_after(self.options.close_timeout):
            await self._aio(self._shutdown_nats)()
        self._inbound_send.close()
        with trio.move_on_after(self.options.close_timeout):
            await self._fan_out_done.wait()  # what was already received is still delivered
        self._local.close()
        for feed in feeds:
            feed.buffer.close()
        self._set_state(ConnectionState.CLOSED)

    async def _shutdown_nats(self) -> None:
        """(asyncio) Stop log consumers and our tasks, then drain (or close) the link."""
        feeds, self._feeds = list(self._feeds), set()
        for feed in feeds:
            await feed.close()
        tasks = list(self._asyncio_tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        try:
            if self._nc.is_connected:
                await self._nc.drain()
        except Exception as exc:
            logger.debug("NATS drain failed: %r", exc)
        if not self._nc.is_closed:
            with contextlib.suppress(Exception):  # also when connect never completed
                await self._nc.close()
        await self._pinger.abandon()

    # -------------------------------------------------------- link state

    @property
    def state(self) -> ConnectionState:
        return self._state

    async def wait_state_change(self, seen: ConnectionState) -> ConnectionState:
        """Return the current state as soon as it differs from *seen*."""
        while self._state is seen:
            await self._state_changed.wait()
        await trio.lowlevel.checkpoint()
        return self._state

    async def wait_connected(self) -> None:
        """Wait until the link is up (raises BrokerClosed once closed)."""
        while self._state is not ConnectionState.CONNECTED:
            if self._state is ConnectionState.CLOSED:
                raise BrokerClosed("the NATS broker is closed")
            await self.wait_state_change(self._state)

    def _set_state(self, state: ConnectionState) -> None:
        if self._state is state or self._state is ConnectionState.CLOSED:
            return
        self._state = state
        self._state_changed.set()
        self._state_changed = trio.Event()

    # nats-py callbacks (asyncio side): synchronous Trio calls only.

    async def _on_error(self, exc: Exception) -> None:
        name = type(exc).__name__
        self.errors[name] += 1
        if isinstance(exc, SlowConsumerError):
            self.slow_consumer += 1
        logger.debug("NATS error: %r", exc)

    async def _on_disconnected(self) -> None:
        self._connected.clear()
        if not self._closing:
            self._set_state(ConnectionState.RECONNECTING)

    async def _on_reconnected(self) -> None:
        self._connected.set()
        self._set_state(ConnectionState.CONNECTED)
        if self._feeds or self.options.log is not None:
            self._spawn(self._resume_logs())

    async def _on_closed(self) -> None:
        self._connected.clear()
        self._set_state(ConnectionState.CLOSED)

    async def _resume_logs(self) -> None:
        """(asyncio) After a reconnect: make sure the stream exists, resync every reader."""
        log = self.options.log
        assert log is not None
        delay = self.options.reconnect_wait
        while not self._closing:
            try:
                await ensure_stream(self._js, log)
                for feed in list(self._feeds):
                    await feed.resync()
                return
            except Exception as exc:  # JetStream not ready yet, or the link dropped again
                logger.debug("log resync failed, retrying: %r", exc)
                await asyncio.sleep(delay)

    # ------------------------------------------------------------ publish

    def publish(self, topic: str, message: Any) -> None:
        """Queue *message* for *topic*; never blocks.

        Raises :class:`PublishQueueFull` when the outgoing queue is at its
        bound (the message is not sent), :class:`BrokerClosed` after close.
        """
        _check_topic(topic)
        payload = orjson.dumps(message)
        if len(payload) > self._nc.max_payload:
            raise ValueError(
                f"message of {len(payload)} bytes exceeds the NATS max payload "
                f"({self._nc.max_payload})"
            )
        self._outbox.put(topic, payload)

    async def flush(self) -> None:
        """Wait until every message published so far was flushed to the server."""
        await self._outbox.wait_flushed()

    # -------------------------------------------------------- subscribe

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
        async with self._local.subscribe(topic, capacity=capacity, policy=policy) as buffer:
            interest = self._topics.get(topic)
            if interest is None:
                interest = self._topics[topic] = _TopicInterest()
            interest.refs += 1
            try:
                async with interest.lock:
                    if interest.sub is None:
                        # Shielded: a subscription created but not recorded
                        # would leak; the setup is bounded by flush_timeout.
                        with trio.CancelScope(shield=True):
                            interest.sub = await self._aio(self._nats_subscribe)(topic)
                await trio.lowlevel.checkpoint_if_cancelled()
                yield buffer
            finally:
                interest.refs -= 1
                with trio.CancelScope(shield=True), trio.move_on_after(self.options.flush_timeout):
                    await self._release(topic, interest)

    async def _nats_subscribe(self, topic: str) -> Any:
        """(asyncio) Subscribe, and confirm with the server when connected."""
        sub = await self._nc.subscribe(
            topic,
            cb=self._callback(topic),
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

    def _callback(self, topic: str) -> Any:
        send = self._inbound_send

        async def deliver(msg: Any) -> None:
            item = (topic, msg.data)
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

    async def _fan_out(self) -> None:
        """(Trio) Decode each inbound message once and hand it to the local subscribers.

        Takes up to a batch of queued messages per checkpoint: a checkpoint
        per message would cost a scheduler pass each (stack notes §3b).
        """
        recv = self._inbound_recv
        while True:
            try:
                self._deliver_local(await recv.receive())
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._fan_out_done.set()
                return
            for _ in range(_FAN_OUT_BATCH - 1):
                try:
                    item = recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
                self._deliver_local(item)

    def _deliver_local(self, item: tuple[str, bytes]) -> None:
        topic, data = item
        self.received += 1
        if self._local.subscriber_count(topic):
            try:
                message = orjson.loads(data)
            except orjson.JSONDecodeError:
                self.decode_errors += 1
                return
            self._local.publish(topic, message)

    # -------------------------------------------------------------- log

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
        be a wildcard subject (``meshery.>``): one reader then sees every
        matching topic in the stream's single order (what a model replica
        needs). Raises CursorExpired/CursorError as the in-memory broker
        does. The reader is
        lossless: when its buffer (*capacity*) is full, JetStream holds the
        rest, so *policy* never triggers. During an outage this waits for the
        link before starting.
        """
        log = self.options.log
        if log is None or self._js is None:
            raise RuntimeError("this NatsBroker has no JetStream log (options.log=None)")
        _check_subject(topic)
        if not log.covers(topic):
            raise ValueError(f"topic {topic!r} is not captured by stream {log.name} {log.subjects}")
        buffer = LogBuffer(capacity, policy)
        feed = LogFeed(self._js, log, topic, buffer)
        await self.wait_connected()
        try:
            await self._aio(feed.start)(after)
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(self.options.flush_timeout):
                await self._aio(feed.close)()
            raise
        self._feeds.add(feed)
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
            "log_readers": len(self._feeds),
            "log_resyncs": self.log_resyncs + sum(feed.resyncs for feed in self._feeds),
        }


class _TopicInterest:
    """This process's one NATS subscription to a topic, shared by its local subscribers."""

    __slots__ = ("lock", "refs", "sub")

    def __init__(self) -> None:
        self.refs = 0
        self.sub: Any = None
        self.lock = trio.Lock()


def _single_leaf(group: BaseExceptionGroup[Any]) -> BaseException | None:
    """The only exception inside (possibly nested) groups, or None."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


@functools.lru_cache(maxsize=4096)
def _check_topic(topic: str) -> None:
    """Topics are concrete NATS subjects: dot-separated tokens, no wildcards or spaces."""
    if (
        not topic
        or any(ch in topic for ch in " \t\r\n*>")
        or any(token == "" for token in topic.split("."))
    ):
        raise ValueError(f"invalid broker topic {topic!r}: want a NATS subject without wildcards")


@functools.lru_cache(maxsize=256)
def _check_subject(subject: str) -> None:
    """A topic, or a wildcard subject: ``*`` as a whole token, ``>`` as the last one."""
    tokens = subject.split(".")
    if (
        not subject
        or any(ch in subject for ch in " \t\r\n")
        or any(token == "" for token in tokens)
        or any(("*" in t and t != "*") or (">" in t and t != ">") for t in tokens)
        or ">" in tokens[:-1]
    ):
        raise ValueError(f"invalid broker subject {subject!r}")
