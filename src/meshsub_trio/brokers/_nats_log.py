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
from nats.js.errors import NotFoundError

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
    except NotFoundError:
        await js.add_stream(config)
    else:
        await js.update_stream(config)


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
        self._generation = 0
        self._sub: Any = None
        self._closed = False
        self.resyncs = 0

    async def start(self, after: int | None) -> None:
        """Check the cursor against the retained log, then start the consumer."""
        info = await self._js.stream_info(self._stream.name)
        first, newest = info.state.first_seq, info.state.last_seq
        if after is None:
            self.last = newest
        elif after > newest:
            raise CursorError(self.topic, after, f"ahead of the log (newest cursor {newest})")
        elif after < first - 1:
            raise CursorExpired(self.topic, after, first - 1)
        else:
            self.last = after
        await self._subscribe()

    async def _subscribe(self) -> None:
        self._generation += 1
        sub = await self._js.subscribe(
            self.topic,
            stream=self._stream.name,
            cb=self._callback(self._generation),
            ordered_consumer=True,
            idle_heartbeat=self._stream.heartbeat,
            deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE,
            config=api.ConsumerConfig(opt_start_seq=self.last + 1),
        )
        if self._closed:  # closed while the consumer was being created
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            return
        self._sub = sub

    async def resync(self) -> None:
        """Replace the consumer with one starting right after :attr:`last`.

        If the stream evicted messages after :attr:`last` meanwhile, the
        reader's stream ends with :class:`CursorExpired` instead of a gap.
        """
        if self._closed:
            return
        await self._unsubscribe()
        info = await self._js.stream_info(self._stream.name)
        if self.last < info.state.first_seq - 1:
            self._closed = True
            self.buffer.close(CursorExpired(self.topic, self.last, info.state.first_seq - 1))
            return
        self.resyncs += 1
        await self._subscribe()

    async def close(self) -> None:
        self._closed = True
        self._generation += 1
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
