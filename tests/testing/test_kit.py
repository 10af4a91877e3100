"""The public kit used the way another project would: the pytest plugin's fixtures."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from meshsub_trio.testing import ClientClosed, FaultProxy, live_tasks


async def test_client_through_proxy_streams(graphql_ws: Any) -> None:
    async with graphql_ws() as client:
        await client.init()
        op = await client.start("subscription { countdown(to: 2) }")
        assert [p["data"]["countdown"] async for p in client.results(op)] == [2, 1, 0]


async def test_partition_is_detected_within_the_keepalive_bound(
    graphql_ws: Any, fault_proxy: FaultProxy, meshsub_server: Any
) -> None:
    bound = meshsub_server.config.dead_peer_bound
    async with graphql_ws() as client:
        await client.init()
        await client.start("subscription { ticks(everyMs: 10) }")
        await client.receive()
        fault_proxy.partition()
        started = trio.current_time()
        with trio.fail_after(bound + 1):
            await meshsub_server.metrics.wait_idle()
        assert trio.current_time() - started <= bound + 0.5
        fault_proxy.heal()
        # After the heal the client learns the connection is gone; nothing stale streams.
        with trio.fail_after(5):
            try:
                while True:
                    await client.receive()
            except ClientClosed:
                pass
    assert meshsub_server.metrics.live_operations == 0


async def test_no_server_task_outlives_its_connections(graphql_ws: Any, meshsub_server: Any) -> None:
    baseline = len(live_tasks())
    async with graphql_ws(via_proxy=False) as client:
        await client.init()
        for _ in range(5):
            await client.start("subscription { ticks(everyMs: 5) }")
        with trio.fail_after(2):
            await meshsub_server.metrics.wait_for(lambda m: m.live_operations == 5)
        assert len(live_tasks()) > baseline + 5
    with trio.fail_after(2):
        await meshsub_server.metrics.wait_idle()
        while len(live_tasks()) > baseline:
            await trio.testing.wait_all_tasks_blocked()
    assert len(live_tasks()) == baseline
