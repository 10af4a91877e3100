"""What a :class:`NatsBroker` is tuned with, and which topic names it accepts.

Apart from the broker so that reading its bounds does not mean reading its
asyncio plumbing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from ._nats_log import LogStream

__all__ = ["NatsOptions"]


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
    #: Wildcard subjects (``app.items.*``) whose topics share ONE NATS
    #: subscription per process, dispatched locally by subject (see
    #: :meth:`NatsBroker.share_subscription`); must not overlap.
    shared_subjects: tuple[str, ...] = ()
    #: The JetStream log, or None for a broker without subscribe_log.
    log: LogStream | None = field(default_factory=LogStream)
    name: str | None = None
    connect_timeout: float = 5.0
    reconnect_wait: float = 0.5
    #: nats-py's own keep-alive PINGs; it gives up after three unanswered
    #: ones (a minute), and not at all while its writes are stuck, so the
    #: bound on a silent server is ``stale_timeout``, not this.
    ping_interval: float = 20.0
    #: The bound, in seconds, on noticing a server that is connected but
    #: silent (hung, SIGSTOPped, cut off without a TCP reset): the broker
    #: sends its own PING every half of it and, when a PONG is not back
    #: within the other half, reports the link down (``RECONNECTING``: the
    #: replicated Meshery bus refuses changes with BROKER_UNAVAILABLE, the
    #: BROKER controller reads UNKOWN) and drops the connection so that
    #: nats-py reconnects, which it does once the server answers again.
    #: A link that cannot carry a PING round trip in half of it counts as
    #: down too. 0 turns the probe off.
    stale_timeout: float = 10.0
    #: How long closing waits for queued messages to reach the server.
    close_timeout: float = 5.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.stale_timeout) and self.stale_timeout >= 0):
            raise ValueError(
                f"stale_timeout must be a finite number of seconds >= 0, not {self.stale_timeout!r}"
            )


#: The longest subject, in UTF-8 bytes, the broker sends. A NATS server
#: refuses a protocol line over 4 KiB (``max_control_line``) and nats-py
#: answers that by closing the connection for good: one long topic would
#: cut the whole process off its broker, so it is refused here instead.
MAX_SUBJECT_BYTES = 1024


def _check_length(subject: str) -> None:
    size = len(subject.encode("utf-8", "surrogatepass"))
    if size > MAX_SUBJECT_BYTES:
        raise ValueError(
            f"broker topic of {size} bytes: NATS subjects here are at most {MAX_SUBJECT_BYTES}"
        )


@functools.lru_cache(maxsize=4096)
def _check_topic(topic: str) -> None:
    """Topics are concrete NATS subjects: dot-separated tokens, no wildcards or spaces."""
    if (
        not topic
        or any(ch in topic for ch in " \t\r\n*>")
        or any(token == "" for token in topic.split("."))
    ):
        raise ValueError(
            f"invalid broker topic {topic[:200]!r}: want a NATS subject without wildcards"
        )
    _check_length(topic)


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
        raise ValueError(f"invalid broker subject {subject[:200]!r}")
    _check_length(subject)
