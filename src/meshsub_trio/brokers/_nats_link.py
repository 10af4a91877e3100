"""The NATS link under a :class:`NatsBroker`: connecting, closing, link state, fan-out.

Everything that crosses between Trio and nats-py's asyncio loop to keep the
connection alive lives here; what the broker offers on top (publish,
subscribe, the log) is in :mod:`._nats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import replace
from typing import Any, Self

import orjson
import trio
import trio_asyncio
from nats.aio.client import Client
from nats.errors import SlowConsumerError
from trio_asyncio import TrioEventLoop, aio_as_trio

from nats import errors as nats_errors

from .._exception_groups import only_leaf
from ._broker import ConnectionState, CursorError, MemoryBroker
from ._nats_log import LogFeed, ensure_stream, link_fault
from ._nats_options import NatsOptions
from ._nats_outbox import BrokerClosed, Outbox
from ._nats_ping import Pinger, drop_connection

#: The broker's logger: one name for the whole NATS broker, as before the split.
logger = logging.getLogger(f"{__package__}._nats")

#: Messages the Trio fan-out task handles per checkpoint.
_FAN_OUT_BATCH = 256


class NatsLink:
    """The connection half of :class:`NatsBroker` (see module doc). Use ``connect``."""

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
        #: This process's NATS subscriptions by subject (a topic, or a shared pattern).
        self._topics: dict[str, _TopicInterest] = {}
        self._shared: list[str] = []
        self._feeds: set[LogFeed] = set()
        self._state = ConnectionState.CONNECTING
        self._state_changed = trio.Event()
        #: Cancelled as soon as the link goes down (see :meth:`_on_this_link`).
        self._link_scopes: set[trio.CancelScope] = set()
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
        #: Log readers still starting, and the attempts of theirs the link lost.
        self.log_starting = 0
        self.log_start_retries = 0
        #: Times the server was found silent (see ``NatsOptions.stale_timeout``).
        self.stale_detections = 0

    # ----------------------------------------------------------- lifecycle

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, servers: str | Sequence[str], *, options: NatsOptions | None = None, **overrides: Any
    ) -> AsyncIterator[Self]:
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
            leaf = only_leaf(group)
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
        # JetStream's answers to messages published for a ticket (nats-py
        # restores this subscription after a reconnect, like every other).
        self._outbox.ack_prefix = self._nc.new_inbox()
        await self._nc.subscribe(f"{self._outbox.ack_prefix}.*", cb=self._outbox.on_ack)
        self._spawn(self._outbox.run(self._nc, self._pinger, self._connected))
        if opts.stale_timeout > 0:
            self._spawn(self._pinger.watch(opts.stale_timeout, self._on_silent))

    def _encode(self, message: Any, what: str = "message") -> bytes:
        """*message* as JSON bytes NATS will carry: ``ValueError`` past the
        server's max payload, ``TypeError`` for what JSON cannot hold."""
        payload = orjson.dumps(message)
        if len(payload) > self._nc.max_payload:
            raise ValueError(
                f"{what} of {len(payload)} bytes exceeds the NATS max payload "
                f"({self._nc.max_payload})"
            )
        return payload

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
        if state is not ConnectionState.CONNECTED:
            for scope in self._link_scopes:
                scope.cancel()

    @contextmanager
    def _on_this_link(self) -> Iterator[trio.CancelScope]:
        """A cancel scope that the link going down cancels (at once if it is down).

        For requests whose answer a drop loses: nats-py would wait out their
        timeout, although the state already says no answer can come.
        """
        scope = trio.CancelScope()
        if self._state is not ConnectionState.CONNECTED:
            scope.cancel()
        self._link_scopes.add(scope)
        try:
            with scope:
                yield scope
        finally:
            self._link_scopes.discard(scope)

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

    async def _on_silent(self) -> None:
        """(asyncio) The server answered no PING within ``stale_timeout``: the link is down.

        Reported at once (the state is what the replicated bus and the BROKER
        controller follow), then the connection is dropped so that nats-py
        reconnects; its reconnected callback brings the state back.
        """
        if self._closing:
            return
        self.stale_detections += 1
        url = self._nc.connected_url  # its host and port only: a URL may carry a token
        logger.warning(
            "NATS server at %s:%s stopped answering (no PONG; stale_timeout %gs): "
            "link down, reconnecting",
            url.hostname if url else "?",
            url.port if url else "?",
            self.options.stale_timeout,
        )
        self._connected.clear()
        self._set_state(ConnectionState.RECONNECTING)
        await drop_connection(self._nc)

    async def _on_reconnected(self) -> None:
        self._pinger.forget_lost()
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

    async def _start_log(self, feed: LogFeed, after: int | None) -> None:
        """(Trio) Start *feed* from *after* once the link carries it, however long that takes.

        Why a loop: starting is JetStream requests, and an answer lost with the
        link (the server died or froze, the link dropped mid-request) says
        nothing about the request. So an attempt is given up as soon as the
        link it was made on goes down, or when nats-py times it out, and the
        reader asks again once the link is back; only the caller's cancel scope
        bounds that, as it bounds waiting for messages. What JetStream refuses
        (:func:`link_fault` tells the two apart) would be refused again: it
        ends the start with a RuntimeError naming the stream and the reason.
        *feed* is in ``_feeds`` meanwhile, so a reconnect right after an
        attempt succeeded resyncs it like any reader.
        """
        self.log_starting += 1
        try:
            while True:
                await self.wait_connected()
                if self._closing:
                    raise BrokerClosed("the NATS broker is closed")
                connection = self._nc.stats["reconnects"]
                with self._on_this_link():
                    try:
                        await self._aio(feed.start)(after)
                    except CursorError:
                        raise
                    except (nats_errors.ConnectionClosedError, nats_errors.ConnectionDrainingError):
                        raise BrokerClosed("the NATS broker is closed") from None
                    except Exception as exc:
                        if self._closing:
                            raise BrokerClosed("the NATS broker is closed") from None
                        if not link_fault(exc):
                            if not isinstance(exc, nats_errors.Error):
                                raise  # not a word from NATS: a bug, shown as itself
                            stream = self.options.log.name if self.options.log else "?"
                            raise RuntimeError(
                                f"cannot start a log reader of {feed.topic!r} on JetStream "
                                f"stream {stream!r}: {exc}"
                            ) from exc
                        logger.debug("log reader start lost with the link, retrying: %r", exc)
                if feed.started:
                    if self._closing:  # the close may have missed this reader's buffer
                        raise BrokerClosed("the NATS broker is closed")
                    return
                self.log_start_retries += 1
                if self._state is ConnectionState.CONNECTED and (
                    self._nc.stats["reconnects"] == connection
                ):
                    # The link looks up, yet the answer did not come (a silent
                    # server, JetStream not ready): give the probe a chance to
                    # notice, and do not spin.
                    with trio.move_on_after(self.options.reconnect_wait):
                        await self.wait_state_change(ConnectionState.CONNECTED)
        finally:
            self.log_starting -= 1


class _TopicInterest:
    """This process's one NATS subscription to a topic (or a shared pattern), for its locals."""

    __slots__ = ("lock", "refs", "sub")

    def __init__(self) -> None:
        self.refs = 0
        self.sub: Any = None
        self.lock = trio.Lock()
