"""A client process killed with SIGKILL mid-stream: several operations, both protocols.

``test_lifecycle`` covers one operation over one protocol. Here a real child
process holds a graphql-transport-ws and a legacy graphql-ws connection with
three streams each, and every one of the six cleanups must run exactly once.
Killed on loopback, its kernel closes the sockets for it; killed inside a
network namespace whose link is dropping packets (a machine that died), only
the keep-alive can tell.
"""

from __future__ import annotations

import httpx
import trio

from meshsub_trio import Server
from meshsub_trio.testing import LEGACY_WS, TRANSPORT_WS, NetnsPair

from . import PROTOCOLS, SLACK, Tracker, client_process

CLEANUP_MS = 20
STREAMS = 3


def specs() -> tuple[list[dict[str, object]], list[str]]:
    """Three tracked streams per protocol, and their tags."""
    short = {TRANSPORT_WS: "t", LEGACY_WS: "l"}
    tags: list[str] = []
    result: list[dict[str, object]] = []
    for protocol in PROTOCOLS:
        queries = []
        for n in range(STREAMS):
            tag = f"{short[protocol]}{n}"
            tags.append(tag)
            queries.append(
                f'subscription {{ stream(tag: "{tag}", everyMs: 5, cleanupMs: {CLEANUP_MS}) }}'
            )
        result.append({"protocol": protocol, "queries": queries})
    return result, tags


def assert_each_cleanup_once(server: Server, tracker: Tracker, tags: list[str]) -> None:
    assert {tag: tracker.started[tag] for tag in tags} == dict.fromkeys(tags, 1)
    assert {tag: tracker.cleaned[tag] for tag in tags} == dict.fromkeys(tags, 1)
    assert {tag: tracker.cleanup_completed[tag] for tag in tags} == dict.fromkeys(tags, 1)
    metrics = server.metrics
    assert metrics.live_connections == 0 and metrics.live_operations == 0
    assert metrics.cleanups_run == metrics.operations_started == len(tags)


async def assert_metrics_endpoint_is_zero(url: str, cleanups: int) -> None:
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"{url}/metrics")).text
    assert "meshsub_connections 0.0" in text
    for protocol in PROTOCOLS:
        assert f'meshsub_active_operations{{protocol="{protocol}"}} 0.0' in text
    assert f"meshsub_operation_cleanups_total {float(cleanups)}" in text


async def test_sigkilled_client_process_runs_each_cleanup_once_within_keepalive_bound(
    meshsub_server: Server, tracker: Tracker
) -> None:
    """SIGKILL of a process with 2 connections x 3 streams (both protocols).

    Bound: all six cleanups (each awaiting 20 ms in ``shielded_cleanup``)
    done, counters and /metrics at zero, within ``keepalive`` + pong deadline
    (0.5 s) + slack of the kill.
    """
    server = meshsub_server
    bound = server.config.dead_peer_bound + CLEANUP_MS / 1000 + SLACK
    client_specs, tags = specs()
    async with client_process(server.port, client_specs) as process:
        assert server.metrics.live_connections == 2
        assert server.metrics.live_operations == len(tags)
        process.kill()
        began = trio.current_time()
        with trio.fail_after(bound):
            await server.metrics.wait_idle()
        assert trio.current_time() - began <= bound
    assert_each_cleanup_once(server, tracker, tags)
    await assert_metrics_endpoint_is_zero(server.url, len(tags))


async def test_sigkilled_client_behind_a_dead_link_is_dropped_by_keepalive(
    netns: tuple[NetnsPair, Server], tracker: Tracker
) -> None:
    """The client process runs in namespace b; the link drops everything, then SIGKILL.

    Its kernel's FIN/RST never arrive, so this is the keep-alive alone (a
    machine that died). Bound: every cleanup once and counters at zero
    within 0.5 s + cleanup + slack of the kill.
    """
    pair, server = netns
    bound = server.config.dead_peer_bound + CLEANUP_MS / 1000 + SLACK
    client_specs, tags = specs()
    async with client_process(
        server.port, client_specs, host=pair.a.address, prefix=pair.b.command()
    ) as process:
        assert server.metrics.live_operations == len(tags)
        pair.drop("both")
        process.kill()
        began = trio.current_time()
        with trio.fail_after(bound):
            await server.metrics.wait_idle()
        assert trio.current_time() - began <= bound
    assert_each_cleanup_once(server, tracker, tags)
    pair.heal()
    text = server.metrics.render().decode()
    assert 'meshsub_closes_total{code="1006"} 2.0' in text  # both dropped as dead peers
