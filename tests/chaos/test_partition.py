"""Partitions mid-stream, through the fault proxy and through real network namespaces.

Whatever the cut (both ways, one way, a link going down), the server must
notice within ``keepalive + pong deadline``, tear the connection down and run
every cleanup; after the heal nothing stale may run: no operation alive, the
client learns the connection is gone, and no data newer than the teardown
arrives for the old operations.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio

from meshsub_trio import Server
from meshsub_trio.testing import (
    LEGACY_WS,
    TRANSPORT_WS,
    Direction,
    FaultProxy,
    GraphQLWSClient,
    NetnsPair,
)

from . import (
    PROTOCOLS,
    SLACK,
    Tracker,
    data_type,
    drain_until_closed,
    first_data,
    graphql_ws_over,
    surviving_close_race,
    tag_number,
)

#: TCP retransmission (RTO backoff from 200 ms) must get the server's FIN
#: through after a netns heal; a proxy heal delivers it at once.
RECOVER = 5.0
CLEANUP_MS = 20
OPS_PER_CLIENT = 2

Connect = Callable[..., Any]


class Streams:
    """One client per protocol, each with a few tracked streams running."""

    def __init__(self) -> None:
        self.clients: list[GraphQLWSClient] = []
        self.tags: dict[tuple[int, str], str] = {}  # (client index, op id) -> tag

    async def open(self, stack: AsyncExitStack, connect: Connect, prefix: str) -> None:
        for index, protocol in enumerate(PROTOCOLS):
            client = await stack.enter_async_context(connect(protocol))
            await client.init()
            for n in range(OPS_PER_CLIENT):
                tag = f"{prefix}{index}x{n}"
                op = await client.start(
                    f'subscription {{ stream(tag: "{tag}", everyMs: 5, cleanupMs: {CLEANUP_MS}) }}'
                )
                self.tags[(index, op)] = tag
                await first_data(client, op)
            self.clients.append(client)

    def all_tags(self) -> list[str]:
        return list(self.tags.values())


async def expect_clean_teardown(server: Server, tracker: Tracker, streams: Streams) -> float:
    """Wait for the server to drop everything; check every cleanup ran once; return the time."""
    bound = server.config.dead_peer_bound
    began = trio.current_time()
    with trio.fail_after(bound + CLEANUP_MS / 1000 + SLACK):
        await server.metrics.wait_idle()
    took = trio.current_time() - began
    tags = streams.all_tags()
    assert {tag: tracker.cleaned[tag] for tag in tags} == dict.fromkeys(tags, 1)
    assert {tag: tracker.cleanup_completed[tag] for tag in tags} == dict.fromkeys(tags, 1)
    assert server.metrics.cleanups_run == server.metrics.operations_started
    return took


async def expect_nothing_stale(
    server: Server, tracker: Tracker, streams: Streams, last: dict[str, int]
) -> None:
    """After the heal: each client sees its connection gone and nothing newer than the teardown."""
    with trio.fail_after(RECOVER):
        for index, client in enumerate(streams.clients):
            for message in await drain_until_closed(client):
                if message["type"] == data_type(client.protocol):
                    tag, n = tag_number(message)
                    assert streams.tags[(index, message["id"])] == tag
                    assert n <= last[tag], f"{tag}:{n} arrived after the teardown at {last[tag]}"
            assert client.close_code == 1006  # the server knew it could not be heard
    assert {tag: tracker.last_emitted[tag] for tag in last} == last  # nothing ran on
    assert server.metrics.live_operations == 0 and server.metrics.live_connections == 0


async def expect_new_clients_work(connect: Connect, tracker: Tracker, stale: list[str]) -> None:
    """A fresh connection after the heal streams its own data and only that."""
    for protocol in PROTOCOLS:
        async with connect(protocol) as client:
            await client.init()
            op = await client.start("subscription { countdown(to: 2) }")
            assert [p["data"]["countdown"] async for p in client.results(op)] == [2, 1, 0]
    assert all(tracker.cleaned[tag] == 1 for tag in stale)


# ---- through the fault proxy -----------------------------------------------


@pytest.mark.parametrize(
    "direction",
    [Direction.BOTH, Direction.SERVER_TO_CLIENT, Direction.CLIENT_TO_SERVER],
    ids=["both-ways", "server-to-client", "client-to-server"],
)
async def test_proxy_partition_is_detected_within_keepalive_bound_and_leaves_nothing_stale(
    meshsub_server: Server,
    fault_proxy: FaultProxy,
    graphql_ws: Connect,
    tracker: Tracker,
    direction: Direction,
) -> None:
    """Partition (both ways or one way) mid-stream, both protocols, two streams each.

    Bound: every connection gone and every cleanup done within ``keepalive``
    + pong deadline (0.5 s) + cleanup + slack. With only client->server cut,
    the client hears the teardown at once; otherwise after the heal.
    """
    server = meshsub_server

    def connect(protocol: str) -> Any:
        return surviving_close_race(graphql_ws(protocol=protocol))

    async with AsyncExitStack() as stack:
        streams = Streams()
        await streams.open(stack, connect, f"p{direction.value[:1]}")
        fault_proxy.partition(direction)
        await expect_clean_teardown(server, tracker, streams)
        last = {tag: tracker.last_emitted[tag] for tag in streams.all_tags()}
        if direction is Direction.CLIENT_TO_SERVER:
            with trio.fail_after(SLACK):  # the server's FIN is not held
                for client in streams.clients:
                    await client.closed.wait()
        else:
            assert not any(client.closed.is_set() for client in streams.clients)
        fault_proxy.heal()
        await expect_nothing_stale(server, tracker, streams, last)
    await expect_new_clients_work(connect, tracker, streams.all_tags())


# ---- through real network namespaces -----------------------------------------


def connect_from_b(pair: NetnsPair, server: Server) -> Connect:
    """``connect(protocol)``: a client whose socket lives in namespace ``b``."""

    @asynccontextmanager
    async def connect(protocol: str) -> AsyncIterator[GraphQLWSClient]:
        sock = trio.socket.from_stdlib_socket(pair.b.socket())
        try:
            await sock.connect((pair.a.address, server.port))
        except BaseException:
            sock.close()
            raise
        stream = trio.SocketStream(sock)
        async with graphql_ws_over(stream, pair.a.address, server.port, protocol=protocol) as ws:
            yield ws

    return connect


@pytest.mark.parametrize(
    "cut", ["drop-both", "link-down", "drop-server-to-client", "drop-client-to-server"]
)
async def test_netns_partition_is_detected_within_keepalive_bound_and_leaves_nothing_stale(
    netns: tuple[NetnsPair, Server], tracker: Tracker, cut: str
) -> None:
    """The same promise over a real veth link whose packets the kernel drops.

    Server in namespace a (``serve(listeners=[...])``), clients in b. Bound:
    teardown and cleanups within 0.5 s + cleanup + slack; after the heal the
    client sees the connection gone within ``RECOVER`` (TCP retransmission).
    Before the heal a client may not see anything, even with only its own
    direction cut: without ACKs the server's FIN stays queued.
    """
    pair, server = netns
    connect = connect_from_b(pair, server)
    async with AsyncExitStack() as stack:
        streams = Streams()
        await streams.open(stack, connect, f"n{cut[:6]}")
        if cut == "drop-both":
            pair.drop("both")
        elif cut == "link-down":
            pair.link_down()
        elif cut == "drop-server-to-client":
            pair.drop("a_to_b")
        else:
            pair.drop("b_to_a")
        await expect_clean_teardown(server, tracker, streams)
        last = {tag: tracker.last_emitted[tag] for tag in streams.all_tags()}
        # Unlike through the proxy, a one-way drop hides the server's FIN too:
        # without ACKs the server's congestion window stops it behind unacked data.
        pair.heal()
        await expect_nothing_stale(server, tracker, streams, last)
    await expect_new_clients_work(connect, tracker, streams.all_tags())


async def test_partition_of_one_client_leaves_its_neighbours_streaming(
    meshsub_server: Server, fault_proxy: FaultProxy, graphql_ws: Connect, tracker: Tracker
) -> None:
    """Only the partitioned connection goes; a neighbour through the same proxy keeps streaming.

    Bound: the victim is gone within 0.5 s + slack while the neighbour's
    stream, checked for gaps, never stops.
    """
    server = meshsub_server
    async with (
        surviving_close_race(graphql_ws(protocol=TRANSPORT_WS)) as victim,
        surviving_close_race(graphql_ws(protocol=LEGACY_WS)) as neighbour,
    ):
        await victim.init()
        await neighbour.init()
        op_v = await victim.start('subscription { stream(tag: "victim", everyMs: 5) }')
        await first_data(victim, op_v)
        op_n = await neighbour.start('subscription { stream(tag: "neighbour", everyMs: 5) }')
        await first_data(neighbour, op_n)
        victim_conn, _ = await fault_proxy.wait_for_connections(2)  # oldest first
        victim_conn.partition()
        with trio.fail_after(server.config.dead_peer_bound + SLACK):
            await server.metrics.wait_for(lambda m: m.live_connections == 1)
        assert tracker.cleaned["victim"] == 1 and tracker.cleaned["neighbour"] == 0
        seen: list[int] = []
        with trio.fail_after(2):
            while len(seen) < 20:
                message = await neighbour.receive()
                if message.get("id") == op_n and message["type"] == "data":
                    seen.append(tag_number(message)[1])
        assert seen == list(range(seen[0], seen[0] + len(seen)))
        victim_conn.heal()
