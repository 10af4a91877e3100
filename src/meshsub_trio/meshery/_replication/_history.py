"""A replica's own resume history of the shared log, shared fairly between users.

Why: on a shared broker, clients resumed from the JetStream stream itself,
whose retention (a count, bytes, an age, oldest dropped first) is one for all
users, and whose expiry is judged on the whole stream. So one user's flood
expired every user's cursors. The replicator reads every entry of the stream
in order anyway; :class:`ReplicaHistory` records each one it applies into a
:class:`~._resume_log.ResumeLogBroker` under its stream sequence, where users
hold shares of a byte cap, as on a single process: a flooder loses only their
own entries.

Cursors are stream sequences, the same on every replica, so whichever source
serves a cursor must give the same entries: all of the topic's entries after
it, or ``CursorExpired``. The history is complete only from some point on
(``complete_from``): entries before it were never recorded here. That point
starts at the replica's starting point (a snapshot's sequence, or 0) and
moves forward over every gap (entries the stream evicted before this replica
read them). A cursor at or after it is served from the history; an older one,
or one the history already evicted (a topic's count bound, a user over their
share), from the stream, which gives the same entries or expires the cursor.

Topics that had other names are the exception: earlier versions logged perf
results under the profile id alone, then under unescaped ids, and per-user
entries under the raw user id, so the stream may hold a user's entries under
a subject no longer read (or one that names another user now). The history
files them under their owner's topic (:func:`.._model._topics.resumed_topic`),
but the stream cannot: a cursor on such a topic
(:func:`.._model._topics.has_older_names`) the history cannot serve expires
rather than miss those or see another's.

Entries are recorded as the stream's envelopes, so both sources hand the
resume feed the same items; sizes count the envelope (what is held), and the
holder is the owner of the model message inside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from ...brokers._broker import CursorError, CursorExpired, Delivery, LogBroker
from ...brokers._buffer import EventBuffer
from .._model import _topics as topics
from .._model._quota import log_owner
from ._resume_log import ResumeLogBroker


def message_of(envelope: Any) -> Any:
    """The model message inside a log entry, or None for anything else."""
    if isinstance(envelope, dict) and isinstance(envelope.get("message"), dict):
        return envelope["message"]
    return None


def _owner(topic: str, envelope: Any) -> str | None:
    return log_owner(topic, message_of(envelope))


class ReplicaHistory:
    """The entries this replica applied, for resuming its clients (see module doc)."""

    def __init__(self, *, log_bytes: int | None) -> None:
        self.log = ResumeLogBroker(log_bytes=log_bytes, owner=_owner)
        #: Every entry after this sequence was recorded (or evicted, and counted so).
        self.complete_from = 0
        #: Resumes served from the history, and from the shared stream.
        self.served = 0
        self.fallbacks = 0

    def start_at(self, seq: int) -> None:
        """The replica starts reading the stream after *seq* (a snapshot's)."""
        self.complete_from = max(self.complete_from, seq)

    def skipped_to(self, seq: int) -> None:
        """Entries up to *seq* may be missing here (the stream evicted them unread)."""
        self.complete_from = max(self.complete_from, seq)

    def record(self, seq: int, topic: str, envelope: Any) -> None:
        """Keep entry *seq* of *topic* (the caller reports gaps: :meth:`skipped_to`)."""
        if seq > self.log.last_seq:
            self.log.record(topics.resumed_topic(topic, message_of(envelope)), seq, envelope)

    def close(self) -> None:
        self.log.close()

    def stats(self) -> dict[str, int]:
        return {
            "history_complete_from": self.complete_from,
            "history_served": self.served,
            "history_fallbacks": self.fallbacks,
            **{f"history_{key}": value for key, value in self.log.stats().items()},
        }

    @asynccontextmanager
    async def open(
        self, shared: LogBroker, topic: str, after: int, capacity: int
    ) -> AsyncIterator[EventBuffer[Delivery[Any]]]:
        """*topic*'s entries after *after*: from the history if it has them all,
        else from the shared stream (which may raise CursorExpired itself)."""
        async with AsyncExitStack() as stack:
            buffer: EventBuffer[Delivery[Any]] | None = None
            refused: CursorError = CursorExpired(topic, after, self.complete_from)
            if after >= self.complete_from:
                try:
                    buffer = await stack.enter_async_context(
                        self.log.subscribe_log(topic, after=after, capacity=capacity)
                    )
                except CursorError as error:  # expired here (or ahead of what it recorded)
                    refused = error
            if buffer is None:
                if topics.has_older_names(topic):
                    raise refused  # the stream may hold them elsewhere: see module doc
                self.fallbacks += 1
                buffer = await stack.enter_async_context(
                    shared.subscribe_log(topic, after=after, capacity=capacity)
                )
            else:
                self.served += 1
            yield buffer
