"""Shared fixtures: a real server on a free loopback port, and raw WebSocket clients."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from meshsub_trio import App, Config, Server, serve
from meshsub_trio.examples.countdown import app as countdown_app

from .wsclient import RawClient, open_raw_client

# The public kit's fixtures (meshsub_server, fault_proxy, graphql_ws), used the
# way another project would use them; pytest takes pytest_plugins only here.
pytest_plugins = ["meshsub_trio.testing.pytest_plugin"]

# `meshsub-trio serve` keeps Meshery's data in the user's data directory by
# default; test servers start empty and keep nothing unless a test says so.
os.environ.setdefault("MESHSUB_DATA_DIR", ":memory:")

ServerFactory = Callable[..., Any]


def test_config(**overrides: Any) -> Config:
    """A config for tests: any free port, keep-alive off unless asked for."""
    settings: dict[str, Any] = {"port": 0, "keepalive": 0, "close_timeout": 1.0}
    settings.update(overrides)
    return Config(**settings)


@pytest.fixture
async def start_server(nursery: trio.Nursery) -> ServerFactory:
    """``await start_server(app=..., **config)`` -> a running :class:`Server`."""

    async def start(app: App | None = None, **config: Any) -> Server:
        return await nursery.start(serve, app or countdown_app, test_config(**config))

    return start


@pytest.fixture
async def server(start_server: ServerFactory) -> Server:
    """The countdown example app on a free port."""
    return await start_server()


@pytest.fixture
def connect(server: Server) -> Callable[..., Any]:
    """``async with connect(subprotocols=[...]) as client`` against ``server``."""

    @asynccontextmanager
    async def _connect(
        *,
        subprotocols: list[str] | None = None,
        path: str = "/ws",
        target: Server | None = None,
        **kw: Any,
    ) -> AsyncIterator[RawClient]:
        chosen = target or server
        async with open_raw_client(
            chosen.port, path=path, subprotocols=subprotocols, **kw
        ) as client:
            yield client

    return _connect
