"""What a :class:`NatsBroker` is tuned with, and which topic names it accepts.

Apart from the broker so that reading its bounds does not mean reading its
asyncio plumbing.
"""

from __future__ import annotations

import functools
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
    ping_interval: float = 20.0
    #: How long closing waits for queued messages to reach the server.
    close_timeout: float = 5.0


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
