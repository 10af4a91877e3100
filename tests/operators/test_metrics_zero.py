"""A fresh server's /metrics: every labelled series is there at zero.

A dashboard or an alert on ``rate(meshsub_closes_total{code="1011"}[5m])``
must see 0 from the first scrape, not "no data" until the first such close.
"""

from __future__ import annotations

import trio

from meshsub_trio import Server

from ..wsclient import TRANSPORT, open_raw_client
from ._helpers import scrape, value

#: Every close code the server itself sends (and 1006: a peer that vanished).
SERVER_CODES = (
    1000, 1001, 1002, 1003, 1006, 1008, 1009, 1011,
    4400, 4401, 4403, 4406, 4408, 4409, 4429, 4500,
)  # fmt: skip
#: Every kind of sink, as the ``protocol`` label names it.
SINKS = ("graphql-transport-ws", "graphql-ws", "sse", "multipart", "poll")


async def test_a_fresh_server_shows_every_labelled_series_at_zero(server: Server) -> None:
    samples = await scrape(server)
    for code in SERVER_CODES:
        assert value(samples, "meshsub_closes_total", code=str(code)) == 0, code
    for protocol in SINKS:
        assert value(samples, "meshsub_operations_total", protocol=protocol) == 0, protocol
        assert value(samples, "meshsub_active_operations", protocol=protocol) == 0, protocol
        assert value(samples, "meshsub_messages_out_total", protocol=protocol) == 0, protocol
    for protocol in SINKS[:2]:
        assert value(samples, "meshsub_messages_in_total", protocol=protocol) == 0, protocol


async def test_the_zeros_count_up_from_there(server: Server) -> None:
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.send({"id": "q", "type": "subscribe", "payload": {"query": "{ hello }"}})
        await client.receive_until("complete")
        await client.ws.aclose(code=1000)
    with trio.fail_after(5):
        await server.metrics.wait_idle()
    samples = await scrape(server)
    assert value(samples, "meshsub_operations_total", protocol=TRANSPORT) == 1
    assert value(samples, "meshsub_operations_total", protocol="graphql-ws") == 0
    assert value(samples, "meshsub_closes_total", code="1000") == 1
    assert value(samples, "meshsub_closes_total", code="1011") == 0
    # Shown, not counted: what tests read from the counters lists what happened.
    assert dict(server.metrics.closes_by_code.items()) == {"1000": 1}
