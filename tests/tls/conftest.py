"""TLS fixtures: certificates made once per session, servers serving them, clients trusting them."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

import pytest
import trio

from meshsub_trio import App, Server, serve
from meshsub_trio.examples.countdown import app as countdown_app

from ..conftest import test_config
from .certs import Certs, Pair, make_certs


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("tls"))


def client_context(certs: Certs, pair: Pair | None = None) -> ssl.SSLContext:
    """What a careful client uses: verify the server against the test CA (and present *pair*)."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    if pair is not None:
        context.load_cert_chain(str(pair.cert), str(pair.key))
    return context


TlsServerFactory = Callable[..., Any]


@pytest.fixture
async def start_tls_server(nursery: trio.Nursery, certs: Certs) -> TlsServerFactory:
    """``await start_tls_server(app=..., **config)``: a server on TLS with the server-1 pair."""

    async def start(app: App | None = None, **config: Any) -> Server:
        settings: dict[str, Any] = {
            "certfile": str(certs.server.cert),
            "keyfile": str(certs.server.key),
        }
        settings.update(config)
        return await nursery.start(serve, app or countdown_app, test_config(**settings))

    return start


@pytest.fixture
async def tls_server(start_tls_server: TlsServerFactory) -> Server:
    return await start_tls_server()
