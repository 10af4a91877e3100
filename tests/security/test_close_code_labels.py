"""Close codes a client chooses cannot mint metric series.

Found from outside: every code a client closed with became its own
``meshsub_closes_total{code=...}`` series (up to ~2,000 of them).
"""

from __future__ import annotations

import trio
from trio_websocket import open_websocket

from meshsub_trio import CloseCode

from .conftest import bystander

#: Codes a client may legally send (RFC 6455 §7.4), spread over both private ranges.
CLIENT_CODES = [*range(3000, 3100, 7), *range(4000, 5000, 9), 1000, 1001, 4400]


async def test_client_close_codes_are_bucketed(server) -> None:
    async with bystander(server.port):
        for code in CLIENT_CODES:
            async with open_websocket(
                "127.0.0.1", server.port, "/ws", use_ssl=False, subprotocols=["graphql-ws"]
            ) as ws:
                await ws.aclose(code=code)
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_connections == 1)
    labels = dict(server.metrics.closes_by_code.items())
    assert set(labels) <= {"1000", "1001", "4400", "3xxx", "4xxx", "other"}, labels
    assert labels["3xxx"] == len(range(3000, 3100, 7))
    assert labels["1000"] >= 1 and labels["4400"] >= 1
    rendered = server.metrics.render().decode()
    series = [line for line in rendered.splitlines() if line.startswith("meshsub_closes_total")]
    # The codes the server itself sends (every CloseCode) are shown from the
    # start (at zero); whatever clients send adds at most the three buckets.
    assert len(series) <= len(CloseCode) + 3, series
