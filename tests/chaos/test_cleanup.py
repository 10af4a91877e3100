"""Cleanup ordering: an awaiting ``finally`` completes, a hanging one is cut, on every path.

Each connection runs two streamers: ``stream``, whose cleanup awaits 100 ms
inside ``shielded_cleanup`` (a lease release), and ``hang``, whose cleanup
would wait forever and is cut by its ``shielded_cleanup(0.5)``. Whatever ends
them (the client stopping, a partition, the client process being killed, the
server shutting down), the first must complete and the second must be cut at
its timeout, and neither may hold the connection or the shutdown longer.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio

from meshsub_trio import Config, Server, serve
from meshsub_trio.testing import (
    LEGACY_WS,
    TRANSPORT_WS,
    FaultProxy,
    GraphQLWSClient,
    open_graphql_ws,
)

from . import (
    PROTOCOLS,
    SLACK,
    Tracker,
    chaos_app,
    client_process,
    drain_until_closed,
    first_data,
    surviving_close_race,
)

CAREFUL_MS = 100
HANG_MS = 500
SHORT = {TRANSPORT_WS: "t", LEGACY_WS: "l"}


def careful(tag: str) -> str:
    return f'subscription {{ stream(tag: "{tag}", everyMs: 5, cleanupMs: {CAREFUL_MS}) }}'


def hanging(tag: str, timeout_ms: int = HANG_MS) -> str:
    return f'subscription {{ hang(tag: "{tag}", timeoutMs: {timeout_ms}) }}'


def assert_cleanups(tracker: Tracker, path: str, timeout_ms: int = HANG_MS) -> None:
    """Careful cleanups completed; hanging ones cut at (not before, not long after) the timeout."""
    for protocol in PROTOCOLS:
        tag = f"{path}-{SHORT[protocol]}"
        assert tracker.cleaned[f"{tag}-careful"] == 1
        assert tracker.cleanup_completed[f"{tag}-careful"] == 1, f"{tag}: careful cleanup cut"
        assert tracker.cleaned[f"{tag}-hang"] == 1
        cut, took = tracker.cut[f"{tag}-hang"]
        assert cut, f"{tag}: the hanging cleanup was not cut"
        assert timeout_ms / 1000 <= took <= timeout_ms / 1000 + SLACK, took


async def open_pair(
    stack: AsyncExitStack, connect: Callable[[str], Any], path: str
) -> list[tuple[GraphQLWSClient, str, str]]:
    """Per protocol: a client with a careful and a hanging stream, both delivering."""
    opened = []
    for protocol in PROTOCOLS:
        client = await stack.enter_async_context(connect(protocol))
        await client.init()
        tag = f"{path}-{SHORT[protocol]}"
        op_careful = await client.start(careful(f"{tag}-careful"))
        await first_data(client, op_careful)
        op_hang = await client.start(hanging(f"{tag}-hang"))
        await first_data(client, op_hang)
        opened.append((client, op_careful, op_hang))
    return opened


async def test_client_stop_completes_cleanups_and_a_hanging_one_holds_nothing(
    meshsub_server: Server, graphql_ws: Callable[..., Any], tracker: Tracker
) -> None:
    """The client stops both operations.

    Bounds: while the hanging cleanup is still waiting, the same connection
    serves a new operation to completion; the hanging cleanup is cut at
    0.5 s (+ slack); the connection stays open throughout.
    """
    server = meshsub_server
    async with AsyncExitStack() as stack:
        opened = await open_pair(
            stack, lambda p: surviving_close_race(graphql_ws(protocol=p)), "stop"
        )
        for client, op_careful, op_hang in opened:
            await client.stop(op_careful)
            await client.stop(op_hang)
        for client, _, _ in opened:
            # Not held: a new operation runs while the cut is still pending.
            op = await client.start("subscription { countdown(to: 1) }")
            assert [p["data"]["countdown"] async for p in client.results(op)] == [1, 0]
        assert not tracker.cut, "cut before the new operations finished: cannot tell"
        with trio.fail_after(HANG_MS / 1000 + SLACK):
            await tracker.wait_for(lambda t: sum(t.cleaned.values()) == 4)
        assert server.metrics.live_connections == 2
    assert_cleanups(tracker, "stop")


async def test_partition_completes_cleanups_and_a_hanging_one_holds_the_connection_no_longer(
    meshsub_server: Server, fault_proxy: FaultProxy, graphql_ws: Callable[..., Any], tracker: Tracker
) -> None:
    """A partition ends both operations.

    Bound: the connections are released within ``keepalive`` + pong deadline
    + the hanging cleanup's 0.5 s + slack.
    """
    server = meshsub_server
    bound = server.config.dead_peer_bound + HANG_MS / 1000 + SLACK
    async with AsyncExitStack() as stack:
        opened = await open_pair(
            stack, lambda p: surviving_close_race(graphql_ws(protocol=p)), "part"
        )
        fault_proxy.partition()
        began = trio.current_time()
        with trio.fail_after(bound):
            await server.metrics.wait_idle()
        assert trio.current_time() - began <= bound
        fault_proxy.heal()
        with trio.fail_after(5):
            for client, _, _ in opened:
                await drain_until_closed(client)
    assert_cleanups(tracker, "part")


async def test_sigkill_completes_cleanups_and_a_hanging_one_holds_the_connection_no_longer(
    meshsub_server: Server, tracker: Tracker
) -> None:
    """The client process is killed with SIGKILL.

    Bound: the connections are released within ``keepalive`` + pong deadline
    + 0.5 s + slack of the kill.
    """
    server = meshsub_server
    bound = server.config.dead_peer_bound + HANG_MS / 1000 + SLACK
    specs = []
    for protocol in PROTOCOLS:
        tag = f"kill-{SHORT[protocol]}"
        specs.append({"protocol": protocol, "queries": [careful(f"{tag}-careful"), hanging(f"{tag}-hang")]})
    async with client_process(server.port, specs) as process:
        assert server.metrics.live_operations == 4
        process.kill()
        began = trio.current_time()
        with trio.fail_after(bound):
            await server.metrics.wait_idle()
        assert trio.current_time() - began <= bound
    assert_cleanups(tracker, "kill")


@pytest.mark.parametrize(
    "timeout_ms", [HANG_MS, 1500], ids=["cleanup-under-close-timeout", "cleanup-over-close-timeout"]
)
async def test_shutdown_completes_cleanups_and_waits_for_a_hanging_one_no_longer_than_its_timeout(
    tracker: Tracker, timeout_ms: int
) -> None:
    """``Server.shutdown()`` with both streamers running on both protocols.

    Bound: ``serve`` returns within the hanging cleanup's timeout + slack,
    after sending every client 1001 (the clients are healthy, so closing
    takes no time of its own). A cleanup timeout above ``close_timeout`` is
    honoured (it is the app's own bound): shutdown waits for it, no longer.
    """
    config = Config(port=0, keepalive=0.25, pong_timeout=0.25, close_timeout=1.0)
    bound = timeout_ms / 1000 + SLACK
    codes: list[int] = []
    async with trio.open_nursery() as outer:
        done = trio.Event()

        async def run_server(task_status: trio.TaskStatus[Server]) -> None:
            await serve(chaos_app(tracker), config, task_status=task_status)
            done.set()

        server: Server = await outer.start(run_server)
        async with AsyncExitStack() as stack:
            for protocol in PROTOCOLS:
                client = await stack.enter_async_context(
                    open_graphql_ws("127.0.0.1", server.port, protocol=protocol)
                )
                await client.init()
                tag = f"down-{SHORT[protocol]}"
                await first_data(client, await client.start(careful(f"{tag}-careful")))
                await first_data(client, await client.start(hanging(f"{tag}-hang", timeout_ms)))
                outer.start_soon(_record_close, client, codes)
            server.shutdown()
            began = trio.current_time()
            with trio.fail_after(bound):
                await done.wait()
            took = trio.current_time() - began
        assert took >= timeout_ms / 1000  # it did wait for the cleanup's own bound
        assert took <= bound
    assert codes == [1001, 1001]
    assert_cleanups(tracker, "down", timeout_ms)
    assert server.metrics.live_connections == 0 and server.metrics.live_operations == 0


async def _record_close(client: GraphQLWSClient, codes: list[int]) -> None:
    await client.closed.wait()
    codes.append(client.close_code or 0)
