"""Brokers: the message bus between publishers and local subscribers.

- :class:`Broker`: what an application needs from a bus (``publish`` never
  waits; ``subscribe`` is an async context manager yielding a bounded buffer);
  :class:`LogBroker` adds a resumable log (:class:`Delivery` items and their
  cursors) and the link state (:class:`ConnectionState`);
- :class:`MemoryBroker`: the in-process default;
- :class:`NatsBroker`, :class:`NatsOptions`, :class:`LogStream`: the same
  interface over NATS with a JetStream log, for several processes (needs the
  ``nats`` extra; imported on first use, so nats-py stays optional); and
  request/reply between processes (``NatsBroker.request``, ``serve_requests``,
  ``reply``) with :class:`Request` items and :class:`NoResponders`, raised at
  once when nobody serves the subject asked;
- the errors: :class:`CursorError`, :class:`CursorExpired` (a resume cursor the
  log cannot serve), :class:`PublishQueueFull`, :class:`BrokerClosed` (a
  publish refused rather than lost), :class:`NotStored` (the log refused a
  message a caller waited for).

A re-export only: the implementations live in private modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._broker import (
    Broker,
    ConnectionState,
    CursorError,
    CursorExpired,
    Delivery,
    LogBroker,
    MemoryBroker,
    NoResponders,
)
from ._nats_outbox import BrokerClosed, NotStored, PublishQueueFull

if TYPE_CHECKING:
    from ._nats import NatsBroker
    from ._nats_log import LogStream
    from ._nats_options import NatsOptions
    from ._nats_requests import Request

#: Names whose modules import nats-py (an optional extra): loaded on first use.
_NATS_NAMES = {
    "NatsBroker": "._nats",
    "NatsOptions": "._nats_options",
    "LogStream": "._nats_log",
    "Request": "._nats_requests",
}


def __getattr__(name: str) -> Any:
    """Import the NATS broker only when asked for, so nats-py stays optional."""
    module = _NATS_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __package__), name)
    globals()[name] = value
    return value


__all__ = [
    "Broker",
    "BrokerClosed",
    "ConnectionState",
    "CursorError",
    "CursorExpired",
    "Delivery",
    "LogBroker",
    "LogStream",
    "MemoryBroker",
    "NatsBroker",
    "NatsOptions",
    "NoResponders",
    "NotStored",
    "PublishQueueFull",
    "Request",
]
