"""The npm ``eventsource`` package (a real EventSource) against Meshery's SSE route.

The stream is broken mid-way by the fault proxy (an RST), events are published
while the client is away, and EventSource reconnects by itself with
``Last-Event-ID``: the union of what it received is every event once, in order.
"""

from __future__ import annotations

from typing import Any

import pytest

from meshsub_trio import MemoryBroker
from meshsub_trio.meshery import create_app
from meshsub_trio.testing import open_fault_proxy

from .conftest import node_session, run_node

pytestmark = pytest.mark.node

SCRIPT = "eventsource_client.mjs"
PATH = "/api/system/events/subscribe"


async def test_reconnects_with_last_event_id_and_misses_nothing(
    node: str, start_server: Any
) -> None:
    app = create_app(simulator=False)
    app.sse.keepalive, app.sse.retry_ms = 0, 50
    server = await start_server(app=app)
    user = app.authenticator.users()[0].id
    sent: list[str] = []

    def publish(count: int) -> None:
        for _ in range(count):
            n = len(sent)
            event = app.model.publish_event(
                user, {"severity": "informational", "description": f"event {n}"}
            )
            sent.append(event["id"])

    async with open_fault_proxy("127.0.0.1", server.port) as proxy:
        url = f"http://127.0.0.1:{proxy.port}{PATH}"
        async with node_session(node, SCRIPT, url, "collect", "9") as session:
            await session.expect("open")  # the feed is attached before the headers go out
            publish(3)
            for _ in range(3):
                await session.expect("message")
            [connection] = proxy.connections
            connection.reset()  # an RST mid-stream
            publish(3)  # while the client is away: only Last-Event-ID can bring these
            await session.expect("error")
            await session.expect("open")
            publish(3)
        session.run.assert_ok()
        assert proxy.accepted_count == 2, str(session.run)
    messages = session.run.named("message")
    assert [m["data"]["id"] for m in messages] == sent, str(session.run)
    assert [m["data"]["description"] for m in messages] == [f"event {n}" for n in range(9)]
    ids = [int(m["id"]) for m in messages]
    assert ids == sorted(set(ids)), ids  # once each, in order


async def test_expired_last_event_id_stops_the_event_source(node: str, start_server: Any) -> None:
    """A 410 is final for EventSource: no reconnect loop on a cursor that cannot resume."""
    app = create_app(simulator=False, broker=MemoryBroker(log_capacity=2))
    app.sse.retry_ms = 50
    server = await start_server(app=app)
    user = app.authenticator.users()[0].id
    for n in range(4):
        app.model.publish_event(user, {"severity": "informational", "description": f"e{n}"})
    url = f"http://127.0.0.1:{server.port}{PATH}"
    run = await run_node(node, SCRIPT, url, "refused", "1")
    run.assert_ok()
    [closed] = run.named("closed")
    assert closed["code"] == 410, str(run)
