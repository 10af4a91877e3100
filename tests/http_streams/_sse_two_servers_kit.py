"""Two real servers in one test process, one stream server split across them.

Each has its own port, its own NATS connection to one real nats-server and
its own relay (as two ``serve --broker nats://`` processes sharing
``MESHSUB_STREAM_SECRET``), so a test says exactly which server answers a
request, and can reach into either (to hold a relay's answer back, or read
its registry) where a race must be made to happen rather than hoped for.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio

from meshsub_trio import App, Server, serve
from meshsub_trio._transports._reservations import Reservations, reservations_of
from meshsub_trio._transports._sse_relay import StreamRelay
from meshsub_trio._transports._sse_tokens import StreamTokens, new_worker_id
from meshsub_trio.brokers import NatsBroker, NatsOptions
from meshsub_trio.testing import NatsServer

from ..conftest import test_config

SECRET = b"a secret of the cluster, long enough"
TOKEN = "x-graphql-event-stream-token"
EVENT_STREAM = "text/event-stream"
POSTING = {"accept": "application/json", "content-type": "application/json"}


def relay_of(server: Server) -> StreamRelay:
    relay = server.config.sse_relay
    assert relay is not None
    return relay


def registry_of(server: Server) -> Reservations:
    return reservations_of(server.state)


def url(server: Server) -> str:
    return f"http://127.0.0.1:{server.port}/api"


def operation(op_id: str, query: str = "{ hello }") -> bytes:
    return json.dumps({"query": query, "extensions": {"operationId": op_id}}).encode()


@asynccontextmanager
async def two_servers(
    nats: NatsServer, app: App, **config: Any
) -> AsyncIterator[tuple[Server, Server]]:
    """Two servers of one cluster (the first one's tokens, the second's streams, say)."""
    options = NatsOptions(log=None, reconnect_wait=0.05)
    async with (
        NatsBroker.connect([nats.url], options=options) as one,
        NatsBroker.connect([nats.url], options=options) as two,
        trio.open_nursery() as nursery,
    ):
        servers = []
        for broker in (one, two):
            relay = StreamRelay(StreamTokens(SECRET, new_worker_id()), broker=broker)
            settings = test_config(sse_relay=relay, **config)
            servers.append(await nursery.start(serve, app, settings))
        yield servers[0], servers[1]
        nursery.cancel_scope.cancel()


async def reserve(client: httpx.AsyncClient, server: Server, **headers: str) -> str:
    reserved = await client.put(url(server), headers=headers)
    assert reserved.status_code == 201, reserved.text
    return reserved.text


async def post(
    client: httpx.AsyncClient, server: Server, token: str, op_id: str, **headers: str
) -> httpx.Response:
    return await client.post(
        url(server), content=operation(op_id), headers={**POSTING, TOKEN: token, **headers}
    )


class HeldBack:
    """Holds every relay request of one *kind* a server gets until :meth:`release`."""

    def __init__(self, server: Server, kind: str) -> None:
        self.relay = relay_of(server)
        self.kind = kind
        self.arrived = trio.Event()
        self.released = trio.Event()
        real = self.relay.handler
        assert real is not None

        async def holding(kind: str, message: dict[str, Any]) -> dict[str, Any] | None:
            if kind == self.kind:
                self.arrived.set()
                await self.released.wait()
            return await real(kind, message)

        self.relay.handler = holding

    def release(self) -> None:
        self.released.set()
