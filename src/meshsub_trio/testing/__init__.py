"""Tools to prove a GraphQL subscription stack survives real network faults.

- :class:`FaultProxy` / :func:`open_fault_proxy`: a Trio TCP proxy that can
  partition (both ways or one), heal, reset, close, delay, throttle, fragment,
  and stop reading, per connection or for all;
- :class:`NetnsPair`: two Linux network namespaces joined by a veth pair, with
  real packet drops and link failures (needs root and iproute2);
- :func:`open_graphql_ws` / :class:`GraphQLWSClient`: a small client speaking
  both GraphQL WebSocket protocols;
- :class:`BufferingProxy` / :func:`open_buffering_proxy`: an HTTP proxy that
  holds response bodies until they end (or N KiB accumulate), as buffering
  reverse proxies do to event streams;
- :func:`live_tasks`: every live Trio task, for "nothing leaked" assertions;
- :func:`open_nats_server` / :class:`NatsServer`: a real nats-server (JetStream
  on, free port) that can be stopped and restarted on the same port and store;
- :mod:`meshsub_trio.testing.pytest_plugin`: pytest fixtures tying them together.
"""

from ._buffering import BufferingProxy, ResponseHolder, open_buffering_proxy
from ._client import LEGACY_WS, TRANSPORT_WS, ClientClosed, GraphQLWSClient, open_graphql_ws
from ._nats_server import NatsServer, NatsServerError, open_nats_server
from ._netns import DropDirection, DropMethod, Namespace, NetnsError, NetnsPair
from ._proxy import Direction, DirectionFaults, FaultProxy, ProxiedConnection, open_fault_proxy
from ._tasks import live_tasks, task_names

__all__ = [
    "LEGACY_WS",
    "TRANSPORT_WS",
    "BufferingProxy",
    "ClientClosed",
    "Direction",
    "DirectionFaults",
    "DropDirection",
    "DropMethod",
    "FaultProxy",
    "GraphQLWSClient",
    "Namespace",
    "NatsServer",
    "NatsServerError",
    "NetnsError",
    "NetnsPair",
    "ProxiedConnection",
    "ResponseHolder",
    "live_tasks",
    "open_buffering_proxy",
    "open_fault_proxy",
    "open_graphql_ws",
    "open_nats_server",
    "task_names",
]
