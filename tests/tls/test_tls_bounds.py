"""Over TLS the same bounds hold: a silent peer goes within keepalive + pong
deadline, a reader that stalls goes within the write deadline (1008)."""

from __future__ import annotations

from typing import Any

import trio

from meshsub_trio import App, Server
from meshsub_trio.examples.countdown import SCHEMA, countdown, ticks

from .certs import Certs
from .conftest import TlsServerFactory, client_context
from .rawtls import open_raw_tls

SLACK = 0.5


async def test_silent_peer_over_tls_is_dropped_within_the_dead_peer_bound(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    server: Server = await start_tls_server(keepalive=0.5, pong_timeout=0.5)
    bound = server.config.dead_peer_bound
    client = await open_raw_tls(server.port, client_context(certs))
    with trio.fail_after(5):
        await client.send_json({"type": "connection_init"})
        assert (await client.message())["type"] == "connection_ack"
    began = trio.current_time()  # from here the client neither reads nor sends: no pong
    with trio.fail_after(bound + SLACK):
        await server.metrics.wait_for(lambda m: m.live_connections == 0)
    elapsed = trio.current_time() - began
    assert bound - 0.1 <= elapsed <= bound + SLACK, elapsed  # dropped by the deadline, not before
    await trio.aclose_forcefully(client.stream)


PAD = 16_384


async def flood(ctx: Any, args: dict[str, Any], emit: Any) -> None:
    """16 KiB values as fast as a millisecond tick allows: fills any socket buffer quickly."""
    pad = "x" * PAD
    while True:
        emit(pad)
        await trio.sleep(0.001)


FLOOD_APP = App(
    SCHEMA.replace("type Subscription {", "type Subscription {\n  flood: String!"),
    resolvers={"Query": {"hello": lambda _root, _info: "hi"}},
    streamers={"countdown": countdown, "ticks": ticks, "flood": flood},
)


async def test_stalled_reader_over_tls_is_dropped_within_the_write_deadline(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    server: Server = await start_tls_server(app=FLOOD_APP, write_timeout=0.5)
    client = await open_raw_tls(server.port, client_context(certs))
    with trio.fail_after(5):
        await client.send_json({"type": "connection_init"})
        assert (await client.message())["type"] == "connection_ack"
        await client.send_json(
            {"id": "f", "type": "subscribe", "payload": {"query": "subscription { flood }"}}
        )
        await client.message()  # the flood is on; from here the client reads nothing
        await server.metrics.wait_for(lambda m: m.live_operations == 1)
    began = trio.current_time()
    bound = server.config.write_timeout + 1.0  # the plaintext test's bound (filling the pipe)
    with trio.fail_after(bound + SLACK):
        await server.metrics.wait_for(lambda m: m.live_connections == 0)
    assert trio.current_time() - began <= bound
    assert 'meshsub_closes_total{code="1008"} 1.0' in server.metrics.render().decode()
    with trio.fail_after(2):
        await server.metrics.wait_for(lambda m: m.live_operations == 0)
    await trio.aclose_forcefully(client.stream)
