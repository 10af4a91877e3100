"""meshsub-trio: a Trio-native GraphQL subscription server.

Public API (everything else lives in private modules):

- :class:`App`, :class:`Context`, :class:`Streamer`, :func:`streamer`,
  :class:`AuthError`, ``StreamerFn`` and ``Emit`` (a streamer's signature and
  its ``emit``): the application and what its code sees;
- :class:`Config`, :func:`serve`, :class:`Server`: the native Trio host;
- :class:`ASGIApp`: the same application for hypercorn's Trio worker;
- :class:`Overflow`, :class:`EventBuffer`, :class:`MemoryBroker`: bounded
  buffers with named overflow policies, and the in-memory broker;
- :class:`NatsBroker`, :class:`NatsOptions`, :class:`LogStream`: the same
  interface over NATS with a JetStream log, for several processes (needs the
  ``nats`` extra; imported on first use), and what brokers share:
  :class:`ConnectionState`, :class:`Delivery`, :class:`CursorError`,
  :class:`CursorExpired`, :class:`PublishQueueFull`, :class:`BrokerClosed`,
  and the :class:`Broker` protocol (all of them also in :mod:`meshsub_trio.brokers`);
- :class:`Metrics`: per-server counters (Prometheus and test invariants);
- :class:`LocalProtocolError`: a protocol machine was driven out of order;
- :func:`subject_of`: a client certificate's subject (``Context.tls_peer``)
  as a flat dict, e.g. its ``commonName`` for mutual TLS in ``authenticate``;
- :func:`shielded_cleanup`: give a streamer's ``finally`` time to await.
"""

from typing import TYPE_CHECKING, Any

from ._app import (
    App,
    AuthError,
    Context,
    Emit,
    EventStream,
    HttpRequest,
    HttpResponse,
    ServerSentEvent,
    Streamer,
    StreamerFn,
    StreamRefused,
    streamer,
)
from ._cleanup import shielded_cleanup
from ._config import Config
from ._metrics import Metrics
from ._server import Server, serve
from ._transports._asgi import ASGIApp
from ._transports._tls import subject_of
from ._wire import CloseCode, LocalProtocolError
from .brokers._broker import (
    Broker,
    ConnectionState,
    CursorError,
    CursorExpired,
    Delivery,
    MemoryBroker,
)
from .brokers._buffer import BufferClosed, BufferOverflow, EventBuffer, Overflow
from .brokers._nats_outbox import BrokerClosed, PublishQueueFull

if TYPE_CHECKING:
    from .brokers._nats import LogStream, NatsBroker, NatsOptions

#: Names whose modules import nats-py (an optional extra): loaded on first use.
_NATS_NAMES = {
    "NatsBroker": ".brokers._nats",
    "NatsOptions": ".brokers._nats_options",
    "LogStream": ".brokers._nats_log",
}


def __getattr__(name: str) -> Any:
    module = _NATS_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "ASGIApp",
    "App",
    "AuthError",
    "Broker",
    "BrokerClosed",
    "BufferClosed",
    "BufferOverflow",
    "CloseCode",
    "Config",
    "ConnectionState",
    "Context",
    "CursorError",
    "CursorExpired",
    "Delivery",
    "Emit",
    "EventBuffer",
    "EventStream",
    "HttpRequest",
    "HttpResponse",
    "LocalProtocolError",
    "LogStream",
    "MemoryBroker",
    "Metrics",
    "NatsBroker",
    "NatsOptions",
    "Overflow",
    "PublishQueueFull",
    "Server",
    "ServerSentEvent",
    "StreamRefused",
    "Streamer",
    "StreamerFn",
    "__version__",
    "serve",
    "shielded_cleanup",
    "streamer",
    "subject_of",
]
