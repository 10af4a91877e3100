"""Python's ``gql`` client (asyncio, the ``websockets`` transport) subscribing over
wss:// to the server on TLS, with a certificate made at test time.

gql runs on its own asyncio loop in a worker thread (``run_asyncio`` from the
interop tests); the server runs in the Trio test.
"""

from __future__ import annotations

import ssl
from typing import Any

import pytest
from gql import Client, gql
from gql.transport.exceptions import TransportConnectionFailed
from gql.transport.websockets import WebsocketsTransport

from meshsub_trio import App, Context, Server, subject_of
from meshsub_trio.examples.countdown import SCHEMA, countdown, ticks

from ..interop.conftest import run_asyncio, wait_idle
from .certs import Certs
from .conftest import TlsServerFactory, client_context

COUNTDOWN = gql("subscription { countdown(to: 3) }")


def wss_url(server: Server, path: str = "/ws") -> str:
    assert server.url.startswith("https://")
    return server.url.replace("https://", "wss://", 1) + path


def transport(url: str, context: ssl.SSLContext, subprotocol: str) -> WebsocketsTransport:
    """Short timeouts, so a silent server fails the test instead of hanging it."""
    return WebsocketsTransport(
        url=url,
        ssl=context,
        subprotocols=[subprotocol],
        connect_timeout=5,
        ack_timeout=5,
        close_timeout=5,
    )


async def _countdown(url: str, context: ssl.SSLContext, subprotocol: str) -> list[Any]:
    link = transport(url, context, subprotocol)
    async with Client(transport=link) as session:
        values = [item["countdown"] async for item in session.subscribe(COUNTDOWN)]
    assert link.subprotocol == subprotocol
    return values


@pytest.mark.parametrize(
    "subprotocol",
    [WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL, WebsocketsTransport.APOLLO_SUBPROTOCOL],
)
async def test_gql_subscribes_over_wss(tls_server: Server, certs: Certs, subprotocol: str) -> None:
    context = client_context(certs)
    values = await run_asyncio(lambda: _countdown(wss_url(tls_server), context, subprotocol))
    assert values == [3, 2, 1, 0]
    await wait_idle(tls_server)
    assert tls_server.metrics.cleanups_run == 1


async def test_gql_refuses_a_server_it_does_not_trust(tls_server: Server) -> None:
    """gql's default verification (the system's CAs) rejects the test certificate:
    the connection above was really verified, not merely encrypted."""
    strict = ssl.create_default_context()
    with pytest.raises(TransportConnectionFailed) as failed:
        await run_asyncio(lambda: _countdown(wss_url(tls_server), strict, "graphql-transport-ws"))
    assert isinstance(failed.value.__cause__, ssl.SSLCertVerificationError)
    await wait_idle(tls_server)


async def _by_certificate(ctx: Context) -> Any:
    return subject_of(ctx.tls_peer).get("commonName")


async def _whoami(ctx: Context, _args: dict[str, Any], emit: Any) -> None:
    emit(ctx.auth)


MTLS_APP = App(
    SCHEMA + "extend type Subscription { whoami: String }",
    resolvers={"Query": {"hello": lambda _root, _info: "hi"}},
    streamers={"countdown": countdown, "ticks": ticks, "whoami": _whoami},
    authenticate=_by_certificate,
)


async def test_gql_with_a_client_certificate_over_mtls(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    """gql presents alice's certificate; the server's auth hook names her from it."""
    server = await start_tls_server(app=MTLS_APP, ca_certs=str(certs.ca))
    context = client_context(certs, certs.client)

    async def scenario() -> list[Any]:
        link = transport(wss_url(server), context, "graphql-transport-ws")
        async with Client(transport=link) as session:
            return [item async for item in session.subscribe(gql("subscription { whoami }"))]

    assert await run_asyncio(scenario) == [{"whoami": "alice"}]
    await wait_idle(server)
