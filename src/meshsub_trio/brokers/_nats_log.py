"""The NATS broker's resumable log: one JetStream stream, one ordered consumer per reader.

Every message published on a subject the stream captures (``meshsub.>`` by
default; an app names its own, e.g. :meth:`LogStream.under`) is stored with a
stream sequence number; that number is the cursor, and it is the same on
every process. A reader resuming ``after=N`` gets an ordered push consumer
starting at ``N + 1``: replay and live delivery come from the same consumer,
so there is no switch-over to get wrong.

Readers are lossless: the consumer's callback waits (inside asyncio, without
crossing into Trio) while the reader's buffer is full, and JetStream flow
control holds the rest in the stream. The stream's retention (age, count,
bytes) is therefore the real bound, and a cursor older than it is refused with
:class:`CursorExpired`, at subscribe time and at every resync. One case
JetStream does not report: a *running* reader that falls further behind than
the retention skips what was evicted before it was delivered (the stream
sequence is shared by all topics, so a jump is not a gap by itself). Size the
retention well above the worst reader lag.

Expiry is judged on the stream as a whole (its first sequence), so it is
conservative: a cursor expires once anything after it was evicted, even if
that was another topic's message.

After a reconnect the broker calls :meth:`LogFeed.resync`: a new consumer
starts right after the last sequence handed to the reader, and anything the
old one still delivers is ignored (a generation check, plus a sequence check
that rules out duplicates whatever nats-py does on its own).

Starting a reader may meet an outage too: :meth:`LogFeed.start` may be called
again after a failed or abandoned attempt (the broker retries what
:func:`link_fault` says the link lost), and starts each time from where the
first answer placed the reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from nats.js import api
from nats.js import errors as js_errors

from nats import errors as nats_errors

from ._broker import CursorError, CursorExpired, Delivery
from ._buffer import BufferClosed, EventBuffer, Overflow

if TYPE_CHECKING:
    from nats.aio.msg import Msg
    from nats.js.client import JetStreamContext

logger = logging.getLogger(__name__)


#: The prefix of the default stream's topics (:class:`LogStream` with no arguments).
DEFAULT_PREFIX = "meshsub"


@dataclass(frozen=True)
class LogStream:
    """The JetStream stream behind ``subscribe_log`` and its retention bound.

    The stream belongs to the app that publishes into it: the default,
    ``LogStream.under("meshsub")``, is stream ``MESHSUB`` over ``meshsub.>``;
    an app publishing elsewhere names its own (``LogStream.under("myapp")``,
    or ``name`` and ``subjects`` given outright). A topic outside
    ``subjects`` has no log (``subscribe_log`` raises ValueError).
    """

    name: str = DEFAULT_PREFIX.upper()
    subjects: tuple[str, ...] = (f"{DEFAULT_PREFIX}.>",)
    #: Retention: whichever limit is hit first evicts the oldest messages, and
    #: cursors before them expire.
    max_msgs: int = 100_000
    max_bytes: int = 256 * 1024 * 1024
    max_age: float = 24 * 3600.0
    #: File storage survives a nats-server restart (cursors stay valid).
    memory: bool = False
    #: Idle heartbeat of each reader's consumer: how fast nats-py notices a
    #: consumer that vanished without a reconnect.
    heartbeat: float = 2.0

    @classmethod
    def under(cls, prefix: str, **tunables: Any) -> LogStream:
        """The stream of every topic under *prefix* (``prefix.>``), named after it
        (upper case, other characters than letters, digits, ``-`` and ``_`` as ``_``);
        *tunables* are the other fields (retention, storage, heartbeat)."""
        if (
            not prefix
            or any(not token for token in prefix.split("."))
            or re.search(r"[\s*>]", prefix)
        ):
            raise ValueError(f"invalid topic prefix {prefix!r}")
        name = re.sub(r"[^A-Za-z0-9_-]", "_", prefix).upper()
        return cls(name=name, subjects=(f"{prefix}.>",), **tunables)

    def config(self) -> api.StreamConfig:
        return api.StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=api.RetentionPolicy.LIMITS,
            discard=api.DiscardPolicy.OLD,
            max_msgs=self.max_msgs,
            max_bytes=self.max_bytes,
            max_age=self.max_age,
            storage=api.StorageType.MEMORY if self.memory else api.StorageType.FILE,
            num_replicas=1,
        )

    def captures(self, topic: str) -> bool:
        return any(subject_matches(pattern, topic) for pattern in self.subjects)

    def covers(self, subject: str) -> bool:
        """Whether every subject matching *subject* (which may hold wildcards) is stored."""
        return any(pattern_within(subject, pattern) for pattern in self.subjects)


def subject_matches(pattern: str, subject: str) -> bool:
    """NATS subject matching: ``*`` is one token, a final ``>`` one or more."""
    want = pattern.split(".")
    have = subject.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or (token != "*" and token != have[index]):
            return False
    return len(have) == len(want)


def pattern_within(inner: str, outer: str) -> bool:
    """Whether every subject matching pattern *inner* also matches pattern *outer*.

    Used for log readers over wildcards (``app.>``): a plain subject is
    covered exactly when :func:`subject_matches` says so.
    """
    want = outer.split(".")
    have = inner.split(".")
    for index, token in enumerate(want):
        if token == ">":
            return len(have) > index
        if index >= len(have) or have[index] == ">":
            return False
        if token != "*" and token != have[index]:
            return False
    return len(have) == len(want)


async def ensure_stream(js: JetStreamContext, stream: LogStream) -> None:
    """(asyncio) Create the stream, or bring an existing one to this configuration."""
    config = stream.config()
    try:
        await js.stream_info(stream.name)
    except js_errors.NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


def link_fault(exc: BaseException) -> bool:
    """Whether *exc* says an answer was lost with the link, not that the request was wrong.

    Why it matters: the first is worth asking again once the link is back,
    the second would be refused again forever. A timeout says nothing about
    the request (the server died or froze, or the link dropped after the
    request left: nats-py cannot tell which), nor do nats-py's complaints
    about the connection itself. A 503 is JetStream not answering (yet): a
    server restarting, or one without JetStream. Anything else JetStream
    answers (400: bad request, 404, 500...) is about the request, and so are
    nats-py's other refusals (a bad subject).
    """
    if isinstance(exc, js_errors.ServiceUnavailableError):
        return True
    if isinstance(exc, js_errors.Error):
        return False
    return isinstance(
        exc,
        TimeoutError  # nats-py's own TimeoutError derives from it
        | nats_errors.NoRespondersError
        | nats_errors.ConnectionReconnectingError
        | nats_errors.StaleConnectionError
        | nats_errors.OutboundBufferLimitError
        | OSError,
    )


class LogBuffer(EventBuffer[Delivery[Any]]):
    """A reader's buffer that never overflows: the producer waits for room instead.

    The producer is the consumer callback on the asyncio side; it awaits an
    ``asyncio.Event`` that the Trio reader sets as it takes items (a plain
    synchronous call, allowed from Trio in the same thread).
    """

    def __init__(self, capacity: int, policy: Overflow) -> None:
        super().__init__(capacity, policy)
        self._room = asyncio.Event()

    @property
    def full(self) -> bool:
        return len(self) >= self.capacity

    def get_nowait(self) -> Delivery[Any]:
        item = super().get_nowait()
        self._room.set()
        return item

    def detach(self) -> None:
        super().detach()
        self._room.set()

    async def wait_room(self) -> None:
        """(asyncio) Wait until the reader made room or went away."""
        while self.full and not self.consumer_closed:
            self._room.clear()
            await self._room.wait()


class LogFeed:
    """One reader: an ordered consumer on *topic* feeding a :class:`LogBuffer` (asyncio side)."""

    def __init__(
        self, js: JetStreamContext, stream: LogStream, topic: str, buffer: LogBuffer
    ) -> None:
        self._js = js
        self._stream = stream
        self.topic = topic
        self.buffer = buffer
        #: The newest sequence handed to the reader: a new consumer starts after it.
        self.last = 0
        #: Whether :attr:`last` holds the start point the reader's cursor was checked for.
        self._placed = False
        #: Whether a consumer was started from :attr:`last` (only such a feed is resynced).
        self.started = False
        self._generation = 0
        self._sub: Any = None
        self._closed = False
        self.resyncs = 0
        #: Start and resync one at a time: two would each install a consumer.
        self._lock = asyncio.Lock()
        self._creating: set[asyncio.Task[None]] = set()

    async def start(self, after: int | None) -> None:
        """Check the cursor against the retained log, then start the consumer.

        Safe to call again after an attempt failed or was abandoned: the first
        answer places the reader (``after=None`` is "now" as of that answer,
        so a retry does not skip what was logged meanwhile), later calls
        start from :attr:`last`, as :meth:`resync` does, so nothing already
        handed to the reader comes twice.
        """
        async with self._lock:
            if self._closed:
                return
            self.started = False
            await self._unsubscribe()  # whatever an abandoned attempt left behind
            first, newest = await self._bounds()
            if not self._placed:
                if after is None:
                    self.last = newest
                elif after > newest:
                    raise CursorError(
                        self.topic, after, f"ahead of the log (newest cursor {newest})"
                    )
                elif after < first - 1:
                    raise CursorExpired(self.topic, after, first - 1)
                else:
                    self.last = after
                self._placed = True
            elif self.last < first - 1:
                raise CursorExpired(self.topic, self.last, first - 1)
            elif self.last > newest:  # the stream was recreated meanwhile (a memory stream)
                if after is not None:
                    raise CursorError(
                        self.topic, self.last, f"ahead of the log (newest cursor {newest})"
                    )
                self.last = newest
            await self._subscribe()
            self.started = not self._closed

    async def _bounds(self) -> tuple[int, int]:
        """The stream's first and newest sequence.

        A missing stream is created, as connecting does: a memory stream is
        gone after a server restart until the reconnect recreates it, and a
        reader starting in between must not fail for that.
        """
        try:
            info = await self._js.stream_info(self._stream.name)
        except js_errors.NotFoundError:
            await ensure_stream(self._js, self._stream)
            info = await self._js.stream_info(self._stream.name)
        return info.state.first_seq, info.state.last_seq

    async def _subscribe(self) -> None:
        """Start a consumer right after :attr:`last`.

        nats-py creates it in several steps; cancelled halfway, it could leave
        a subscription (and its heartbeat task) that nobody holds. So the
        creation runs in a task of its own that a cancelled caller does not
        stop, and whatever it creates for a caller that has gone (the feed
        closed, or a later attempt took over) is dropped at once.
        """
        self._generation += 1
        task = asyncio.get_running_loop().create_task(self._create(self._generation))
        self._creating.add(task)
        task.add_done_callback(self._created)
        await asyncio.shield(task)

    async def _create(self, generation: int) -> None:
        sub = await self._js.subscribe(
            self.topic,
            stream=self._stream.name,
            cb=self._callback(generation),
            ordered_consumer=True,
            idle_heartbeat=self._stream.heartbeat,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=self.last + 1),
        )
        if self._closed or generation != self._generation:  # given up meanwhile
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            return
        self._sub = sub

    def _created(self, task: asyncio.Task[None]) -> None:
        self._creating.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a waiting caller got it, a gone one does not care

    async def resync(self) -> None:
        """Replace the consumer with one starting right after :attr:`last`.

        If the stream evicted messages after :attr:`last` meanwhile, the
        reader's stream ends with :class:`CursorExpired` instead of a gap. A
        feed still starting is left to :meth:`start`, which is retried.
        """
        async with self._lock:
            if self._closed or not self.started:
                return
            await self._unsubscribe()
            first, _newest = await self._bounds()
            if self.last < first - 1:
                self._closed = True
                self.buffer.close(CursorExpired(self.topic, self.last, first - 1))
                return
            self.resyncs += 1
            await self._subscribe()

    def give_up(self) -> None:
        """Stop delivering, and drop whatever consumer is still being created
        (synchronous: for a broker closing, whose loop may be gone)."""
        self._closed = True
        self._generation += 1

    async def close(self) -> None:
        self.give_up()
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        self._generation += 1  # whatever the old consumer still delivers is ignored
        if sub is None:
            return
        try:
            await sub.unsubscribe()
        except Exception as exc:  # closed or reconnecting: the server forgets it anyway
            logger.debug("log consumer unsubscribe failed: %r", exc)

    def _callback(self, generation: int) -> Any:
        buffer = self.buffer

        async def deliver(msg: Msg) -> None:
            if generation != self._generation:
                return
            seq = msg.metadata.sequence.stream
            if seq <= self.last:
                return
            try:
                delivery = Delivery(seq, orjson.loads(msg.data))
            except orjson.JSONDecodeError:
                logger.warning("skipping undecodable log message %d on %r", seq, self.topic)
                self.last = seq
                return
            if buffer.full:
                await buffer.wait_room()
                if generation != self._generation or seq <= self.last:
                    return
            self.last = seq
            with contextlib.suppress(BufferClosed):
                buffer.put(delivery)

        return deliver
