"""Fixtures for the chaos suite: the kit's pytest plugin, serving the tracking chaos app.

pytest refuses ``pytest_plugins`` outside the top-level conftest, so the
plugin's fixtures are imported here instead: the same fixtures, used the way
another project's conftest would use them. The app and config fixtures are
overridden so that every server in this directory is the tracking chaos app
with a fast keep-alive (dead peers are dropped within 0.5 s).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from functools import partial

import pytest
import trio

from meshsub_trio import App, Config, Server, serve
from meshsub_trio.testing import NetnsPair
from meshsub_trio.testing.pytest_plugin import (  # noqa: F401  (fixtures)
    fault_proxy,
    graphql_ws,
    meshsub_server,
)

from . import Tracker, chaos_app


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
def meshsub_app(tracker: Tracker) -> App:
    return chaos_app(tracker)


@pytest.fixture
def meshsub_config() -> Config:
    """Keep-alive 0.25 s + pong deadline 0.25 s: a silent peer is gone within 0.5 s."""
    return Config(port=0, keepalive=0.25, pong_timeout=0.25, close_timeout=1.0)


@pytest.fixture
async def netns(
    meshsub_app: App, meshsub_config: Config
) -> AsyncIterator[tuple[NetnsPair, Server]]:
    """The app listening inside namespace ``a`` on a socket made there and handed to ``serve``.

    Clients go in namespace ``b``; the veth link between them is what the
    test cuts. The server stops before the namespaces are deleted.
    """
    with NetnsPair() as pair:
        sock = pair.a.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((pair.a.address, 0))
        sock.listen(128)
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
        meshsub_config.host = pair.a.address
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve, meshsub_app, meshsub_config, listeners=[listener])
            )
            yield pair, server
            nursery.cancel_scope.cancel()
