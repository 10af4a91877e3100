"""Fixtures: the Meshery app on a real server (memory broker, no simulator)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from meshsub_trio import Server
from meshsub_trio.meshery import LOCAL_USER_ID, MesheryApp, create_app
from meshsub_trio.testing import FaultProxy, open_fault_proxy

from ._kit import event, ws_url


@dataclass
class Meshery:
    """One Meshery app served on a free port."""

    app: MesheryApp
    server: Server

    @property
    def url(self) -> str:
        return ws_url(self.server.port)

    def publish(self, description: str, user: str = LOCAL_USER_ID) -> None:
        self.app.model.publish_event(user, event(description))


@pytest.fixture
def make_meshery(start_server: Callable[..., Any]) -> Callable[..., Any]:
    """``await make_meshery(tokens=..., broker=..., **config)`` -> a running :class:`Meshery`."""

    async def make(*, config: dict[str, Any] | None = None, **app_options: Any) -> Meshery:
        app = create_app(simulator=False, **app_options)
        server = await start_server(app=app, **(config or {}))
        return Meshery(app, server)

    return make


@pytest.fixture
async def meshery(make_meshery: Callable[..., Any]) -> Meshery:
    result: Meshery = await make_meshery()
    return result


@pytest.fixture
async def proxy(meshery: Meshery) -> AsyncIterator[FaultProxy]:
    """A fault proxy in front of the ``meshery`` server."""
    async with open_fault_proxy("127.0.0.1", meshery.server.port) as faulty:
        yield faulty
