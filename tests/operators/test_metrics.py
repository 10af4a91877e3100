"""/metrics for operators: every known series from the start, histograms that move.

Everything goes through a real server over real sockets: WebSocket clients
subscribe, ``/metrics`` is scraped over HTTP and parsed as Prometheus would.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Context, Overflow, Server, Streamer

from ..wsclient import TRANSPORT, open_raw_client
from ._helpers import SECRET, auth_app, scrape, value

PROTOCOLS = ("graphql-transport-ws", "graphql-ws")
POLICIES = ("drop_oldest", "coalesce", "close")
HISTOGRAMS = ("meshsub_delivery_latency_seconds", "meshsub_operation_duration_seconds")


async def test_idle_metrics_show_every_known_series_at_zero(server: Server) -> None:
    """A dashboard on a fresh server sees zeros, never "no data"."""
    samples = await scrape(server)
    for protocol in PROTOCOLS:
        assert value(samples, "meshsub_active_operations", protocol=protocol) == 0
        assert value(samples, "meshsub_messages_in_total", protocol=protocol) == 0
        assert value(samples, "meshsub_messages_out_total", protocol=protocol) == 0
    for policy in POLICIES:
        assert value(samples, "meshsub_dropped_events_total", policy=policy) == 0
    for where in ("ws", "http", "metrics"):
        assert value(samples, "meshsub_auth_failures_total", where=where) == 0
    for path in ("pump", "member_buffer", "outbox"):
        assert value(samples, "meshsub_fallbacks_total", path=path) == 0
    for name in HISTOGRAMS:
        assert value(samples, f"{name}_count") == 0
        assert value(samples, f"{name}_bucket", le="+Inf") == 0
    for kind in ("query", "mutation", "subscription"):
        assert value(samples, "meshsub_execution_seconds_count", operation_type=kind) == 0
    assert value(samples, "meshsub_connections") == 0


async def test_a_subscription_moves_the_histograms(server: Server) -> None:
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.send({"id": "q", "type": "subscribe", "payload": {"query": "{ hello }"}})
        await client.receive_until("complete")
        query = "subscription { countdown(to: 4) }"
        await client.send({"id": "s", "type": "subscribe", "payload": {"query": query}})
        got = await client.receive_until("complete")
        assert [m["payload"]["data"]["countdown"] for m in got[:-1]] == [4, 3, 2, 1, 0]
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_operations == 0)
        samples = await scrape(server)
    # Five values, each written at once by its emit: five latencies, five executions.
    assert value(samples, "meshsub_delivery_latency_seconds_count") == 5
    assert value(samples, "meshsub_execution_seconds_count", operation_type="subscription") == 5
    assert value(samples, "meshsub_execution_seconds_count", operation_type="query") == 1
    assert value(samples, "meshsub_operation_duration_seconds_count") == 2
    # The countdown sleeps 10 ms between values: the subscription lived at least 40 ms.
    assert value(samples, "meshsub_operation_duration_seconds_bucket", le="0.01") <= 1
    assert 0 < value(samples, "meshsub_delivery_latency_seconds_sum") < 1.0
    assert value(samples, "meshsub_messages_out_total", protocol=TRANSPORT) >= 8


async def test_a_shared_stream_measures_every_members_delivery(start_server: Any) -> None:
    async def feed(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        n = 0
        while True:
            emit(n)
            n += 1
            await trio.sleep(0.01)

    app = App(
        "type Query { hello: String } type Subscription { feed: Int! }",
        streamers={"feed": Streamer(feed, share="events")},
    )
    server = await start_server(app)
    async with (
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as first,
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as second,
    ):
        for client in (first, second):
            assert (await client.init())["type"] == "connection_ack"
            await client.send({"id": "1", "type": "subscribe", "payload": {"query": "subscription { feed }"}})
        for client in (first, second):
            for _ in range(3):
                assert (await client.receive())["type"] == "next"
        samples = await scrape(server)
    # At least six deliveries (three each), each counted for its member.
    assert value(samples, "meshsub_delivery_latency_seconds_count") >= 6
    assert value(samples, "meshsub_execution_seconds_count", operation_type="subscription") >= 3


async def test_auth_failures_are_counted_where_they_happen(start_server: Any) -> None:
    server = await start_server(auth_app(), metrics_token=SECRET)
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        await client.send({"type": "connection_init", "payload": {"Authorization": "Bearer nope"}})
        assert (await client.expect_close())[0] == 4403
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        refused = await http.post("/api", json={"query": "{ hello }"}, headers={"authorization": "Bearer nope"})
        assert refused.status_code == 401
        assert (await http.get("/metrics")).status_code == 401
    samples = await scrape(server, token=SECRET)
    for where in ("ws", "http", "metrics"):
        assert value(samples, "meshsub_auth_failures_total", where=where) == 1, where


def _burst_app() -> App:
    """Five values at once whose execution needs an await: the first goes to the
    pump, the rest wait in a buffer of one (drop_oldest), so three are dropped."""

    def note(item: dict[str, Any], _info: Any) -> Any:
        async def later() -> str:
            await trio.lowlevel.checkpoint()
            return f"n={item['n']}"

        return later()

    async def items(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        for n in range(5):
            emit({"n": n})  # all at once, no checkpoint between
        await trio.sleep_forever()

    return App(
        "type Query { hello: String } type Item { n: Int!, note: String! } "
        "type Subscription { items: Item! }",
        resolvers={"Item": {"note": note}},
        streamers={"items": Streamer(items, capacity=1, policy=Overflow.DROP_OLDEST)},
    )


async def test_overflow_is_counted_and_warned_when_it_happens(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Counted while the subscription still runs (not at its end), one WARNING."""
    caplog.set_level(logging.WARNING, logger="meshsub_trio")
    server = await start_server(_burst_app())
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        query = "subscription Burst { items { n note } }"
        await client.send({"id": "b", "type": "subscribe", "payload": {"query": query, "operationName": "Burst"}})
        got = [(await client.receive())["payload"]["data"]["items"]["n"] for _ in range(2)]
        assert got == [0, 4]  # 1, 2 and 3 were dropped, oldest first
        samples = await scrape(server)
        assert server.metrics.live_operations == 1  # still running
    assert value(samples, "meshsub_dropped_events_total", policy="drop_oldest") == 3
    assert value(samples, "meshsub_fallbacks_total", path="pump") == 4
    warnings = [r for r in caplog.records if r.getMessage().startswith("slow subscriber")]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
    assert warnings[0].levelno == logging.WARNING
    fields = vars(warnings[0])  # what the log call passed with extra=
    assert (fields["policy"], fields["capacity"], fields["operation_name"]) == ("drop_oldest", 1, "Burst")
