"""meshsub-trio: a Trio-native GraphQL subscription server.

Public API (everything else lives in private modules):

- :class:`App`, :class:`Context`, :class:`Streamer`, :func:`streamer`,
  :class:`AuthError`: the application and what its code sees;
- :class:`Config`, :func:`serve`, :class:`Server`: the native Trio host;
- :class:`ASGIApp`: the same application for hypercorn's Trio worker;
- :class:`Overflow`, :class:`EventBuffer`, :class:`MemoryBroker`: bounded
  buffers with named overflow policies, and the in-memory broker;
- :class:`Metrics`: per-server counters (Prometheus and test invariants);
- :func:`shielded_cleanup`: give a streamer's ``finally`` time to await.
"""

from ._app import App, AuthError, Context, HttpRequest, HttpResponse, Streamer, streamer
from ._broker import Broker, MemoryBroker
from ._buffer import BufferOverflow, EventBuffer, Overflow
from ._cleanup import shielded_cleanup
from ._config import Config
from ._metrics import Metrics
from ._protocol import CloseCode
from ._server import Server, serve
from ._transports._asgi import ASGIApp

__version__ = "0.1.0"

__all__ = [
    "ASGIApp",
    "App",
    "AuthError",
    "Broker",
    "BufferOverflow",
    "CloseCode",
    "Config",
    "Context",
    "EventBuffer",
    "HttpRequest",
    "HttpResponse",
    "MemoryBroker",
    "Metrics",
    "Overflow",
    "Server",
    "Streamer",
    "__version__",
    "serve",
    "shielded_cleanup",
    "streamer",
]
