"""Churn: thousands of short connections, each hit by a random fault, leave nothing behind.

The fault mix (clean close, fragmented frames, latency, client abort, RST,
FIN, partition then heal) is drawn from a fixed seed, so a failure replays.
``scripts/soak`` runs the same cycles for as long as asked.
"""

from __future__ import annotations

import random

import trio

from meshsub_trio import Server
from meshsub_trio.testing import live_tasks, open_fault_proxy, task_names

from . import CHURN_TAG, SLACK, ChurnStats, Tracker, churn, settle_tasks, settled_rss

SEED = 20240611
#: A warm-up batch fills caches, pools and allocator arenas; the two measured
#: batches after it must leave RSS flat. 2000 cycles in all.
BATCHES = (400, 800, 800)
#: RSS the third batch may add over the second: allocator noise (170-280 KiB
#: measured), not a leak (1 KiB per cycle, 800 KiB, would already exceed it).
RSS_MARGIN = 768 * 1024


async def test_churn_of_2000_faulty_cycles_leaves_zero_connections_operations_tasks(
    meshsub_server: Server, tracker: Tracker
) -> None:
    """2000 connect/init/subscribe/abort cycles with seeded random faults, in three batches.

    Bounds, after every batch: idle within ``dead_peer_bound`` + slack; live
    tasks back to the baseline; ``cleanups_run == operations_started``; every
    streamer ``finally`` run once. RSS after the third batch at most 768 KiB
    above the second (the first is warm-up).
    """
    server = meshsub_server
    metrics = server.metrics
    bound = server.config.dead_peer_bound + SLACK
    rng = random.Random(SEED)
    baseline = len(live_tasks())
    rss: list[int] = []
    for batch, cycles in enumerate(BATCHES):
        stats = ChurnStats()
        # A fresh proxy per batch: the kit's proxy keeps every connection it
        # ever accepted, which would count against the server's memory here.
        async with open_fault_proxy("127.0.0.1", server.port, seed=rng.getrandbits(32)) as proxy:
            await churn(proxy, cycles, rng, stats)
        del proxy  # (it would keep this batch's sockets alive through the RSS reading)
        assert stats.cycles == cycles
        assert stats.unexpected == [], f"batch {batch}: {stats.unexpected[:10]}"
        assert set(stats.by_fault) == {
            "clean", "fragment", "latency", "abort", "reset", "close", "partition"
        }  # fmt: skip
        with trio.fail_after(bound):
            await metrics.wait_idle()
        assert metrics.live_connections == 0 and metrics.live_operations == 0
        assert metrics.cleanups_run == metrics.operations_started
        assert tracker.cleaned == tracker.started
        assert tracker.started[CHURN_TAG] == metrics.operations_started
        assert await settle_tasks(baseline) == baseline, task_names()
        rss.append(settled_rss())
    assert metrics.operations_started >= sum(BATCHES) * 0.9
    assert rss[2] - rss[1] <= RSS_MARGIN, f"RSS grew {(rss[2] - rss[1]) / 1024:.0f} KiB"
    text = metrics.render().decode()
    assert "meshsub_connections 0.0" in text
    assert 'meshsub_active_operations{protocol="graphql-transport-ws"} 0.0' in text
    assert 'meshsub_active_operations{protocol="graphql-ws"} 0.0' in text
