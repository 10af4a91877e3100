"""The client under the fault kit: partitions, resets, refusals, each with its bound.

The client talks to a real Meshery server through the :class:`FaultProxy`;
events are published in the server's process while the client is cut off,
so resuming is only exact if the client sends back the right cursor.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

from meshsub_trio import MemoryBroker
from meshsub_trio.client import (
    AuthRefused,
    CursorLost,
    NetworkGone,
    OutcomeUnknown,
    RetryPolicy,
    ServerRejected,
    open_client,
)
from meshsub_trio.meshery import LOCAL_USER_ID
from meshsub_trio.testing import FaultProxy, open_fault_proxy

from ._kit import EVENTS, PING, PONG, SLACK, SOON, Notices, Reader, assert_exactly, fast, ws_url
from .conftest import Meshery

#: A partition is noticed within ping_interval + pong_timeout of its start.
DETECTION_BOUND = PING + PONG
TOKENS = {"alice-1": "alice", "alice-2": "alice"}
PUBLISH = """mutation { publishEvent(input: {severity: informational, description: "m"}) { id } }"""


def publish(meshery: Meshery, descriptions: list[str], user: str = LOCAL_USER_ID) -> None:
    for description in descriptions:
        meshery.publish(description, user)


@pytest.mark.parametrize("transport", ["ws", "legacy"])
async def test_partition_is_detected_within_the_bound_and_resumed_exactly(
    meshery: Meshery, proxy: FaultProxy, transport: str
) -> None:
    notices = Notices()
    expected = [f"e{n}" for n in range(30)]
    async with (
        open_client(ws_url(proxy.port), transport=transport, on_notice=notices, **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, expected[:10])
        await reader.wait_count(10)

        cut = trio.current_time()
        proxy.partition()
        lost_at = await notices.wait_lost(1, timeout=DETECTION_BOUND + SLACK)
        detected = lost_at - cut
        assert detected <= DETECTION_BOUND + SLACK, detected
        publish(meshery, expected[10:20])  # while the client is cut off
        proxy.heal()
        await notices.wait_connected(2)
        publish(meshery, expected[20:])
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        assert reader.stream is not None and reader.stream.resumes == 1
        ((_, lost),) = notices.lost()
        assert lost.disconnect.code == 1006 and "nothing heard" in lost.disconnect.reason
        nursery.cancel_scope.cancel()


async def test_a_partition_with_no_traffic_at_all_is_still_detected(
    meshery: Meshery, proxy: FaultProxy
) -> None:
    """Quiet streams: only the heartbeat can notice (no data, no close, no RST)."""
    notices = Notices()
    async with (
        open_client(ws_url(proxy.port), on_notice=notices, **fast()) as client,
        client.subscribe(EVENTS),
    ):
        await notices.wait_connected(1)
        cut = trio.current_time()
        proxy.partition()
        lost_at = await notices.wait_lost(1, timeout=DETECTION_BOUND + SLACK)
        assert lost_at - cut <= DETECTION_BOUND + SLACK


async def test_rst_mid_stream_is_resumed_exactly(meshery: Meshery, proxy: FaultProxy) -> None:
    notices = Notices()
    expected = [f"r{n}" for n in range(30)]
    async with (
        open_client(ws_url(proxy.port), on_notice=notices, **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, expected[:10])
        await reader.wait_count(10)
        cut = trio.current_time()
        proxy.reset()
        lost_at = await notices.wait_lost(1, timeout=SLACK)
        assert lost_at - cut <= SLACK  # an RST is noticed at once
        publish(meshery, expected[10:20])
        await notices.wait_connected(2)
        publish(meshery, expected[20:])
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        nursery.cancel_scope.cancel()


async def test_a_mutation_in_flight_is_not_resent_but_a_query_is(
    meshery: Meshery, proxy: FaultProxy
) -> None:
    notices = Notices()
    query = "query { getAvailableNamespaces { namespace } }"
    async with open_client(ws_url(proxy.port), on_notice=notices, **fast()) as client:
        await client.execute(query)
        proxy.partition()  # the mutation reaches the proxy, maybe the server after the heal
        with trio.fail_after(DETECTION_BOUND + SLACK), pytest.raises(OutcomeUnknown):
            await client.execute(PUBLISH)
        proxy.heal()
        await client.execute(query)  # nothing was left to reconnect for: lazy again
        assert client.connections == 2

        async def heal_once_lost() -> None:
            await notices.wait_lost(2)
            proxy.heal()

        proxy.partition()  # the query is lost with its connection, then sent again
        async with trio.open_nursery() as nursery:
            nursery.start_soon(heal_once_lost)
            with trio.fail_after(SOON):
                assert await client.execute(query) == {"getAvailableNamespaces": []}
        assert client.connections == 3


async def test_an_expired_cursor_after_a_long_partition_raises(
    make_meshery: Callable[..., Any],
) -> None:
    meshery: Meshery = await make_meshery(broker=MemoryBroker(log_capacity=5))
    notices = Notices()
    async with (
        open_fault_proxy("127.0.0.1", meshery.server.port) as proxy,
        open_client(ws_url(proxy.port), on_notice=notices, **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, ["a", "b"])
        await reader.wait_count(2)
        proxy.partition()
        await notices.wait_lost(1)
        publish(meshery, [f"missed{n}" for n in range(10)])  # more than the log keeps
        proxy.heal()
        await reader.wait_ended()
        assert isinstance(reader.error, CursorLost)
        assert reader.error.code == "CURSOR_EXPIRED" and reader.error.cursor == "2"
        assert reader.descriptions() == ["a", "b"]


# ---- auth ------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["ws", "legacy"])
async def test_auth_refused_is_typed_and_not_retried(
    make_meshery: Callable[..., Any], transport: str
) -> None:
    meshery: Meshery = await make_meshery(tokens=TOKENS)
    notices = Notices()
    async with (
        open_fault_proxy("127.0.0.1", meshery.server.port) as proxy,
        open_client(
            ws_url(proxy.port), transport=transport, token="stolen", on_notice=notices, **fast()
        ) as client,
    ):
        with trio.fail_after(SOON), pytest.raises(AuthRefused) as refused:
            async with client.subscribe(EVENTS) as stream:
                await stream.__anext__()
        await trio.testing.wait_all_tasks_blocked()
        assert proxy.accepted_count == 1  # one attempt: no retry storm
        error = refused.value
        if transport == "ws":
            assert error.code == 4403 and error.reason  # what the server said
        else:
            assert isinstance(error.payload, dict) and error.payload.get("message")
        # A later operation makes one new attempt, refused the same way.
        with trio.fail_after(SOON), pytest.raises(AuthRefused):
            await client.execute("query { getAvailableNamespaces { namespace } }")
        assert proxy.accepted_count == 2


async def test_the_token_callback_runs_before_every_attempt(
    make_meshery: Callable[..., Any],
) -> None:
    meshery: Meshery = await make_meshery(tokens=TOKENS)
    issued: list[str] = []

    async def fresh_token() -> str:
        issued.append(f"alice-{len(issued) + 1}")
        return issued[-1]

    notices = Notices()
    expected = [f"t{n}" for n in range(10)]
    async with (
        open_fault_proxy("127.0.0.1", meshery.server.port) as proxy,
        open_client(ws_url(proxy.port), token=fresh_token, on_notice=notices, **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, EVENTS, cursor="0")
        publish(meshery, expected[:5], user="alice")
        await reader.wait_count(5)
        proxy.reset()
        publish(meshery, expected[5:], user="alice")
        await reader.wait_count(len(expected))
        assert_exactly(reader, expected)
        assert issued == ["alice-1", "alice-2"]
        nursery.cancel_scope.cancel()


# ---- giving up ---------------------------------------------------------------------------


async def test_the_network_gone_past_the_policy_is_typed() -> None:
    with trio.socket.socket() as placeholder:
        await placeholder.bind(("127.0.0.1", 0))
        dead = ws_url(placeholder.getsockname()[1])
    policy = RetryPolicy(base=0.01, cap=0.05, max_attempts=4)
    async with open_client(dead, **fast(retry=policy, rng=random.Random(1))) as client:
        with trio.fail_after(SOON), pytest.raises(NetworkGone) as gone:
            await client.execute("{ x }")
        assert gone.value.attempts == 4 and client.attempts == 4
        assert "ConnectionRefused" in gone.value.last.cause or "refused" in str(gone.value.last)


async def test_a_balancer_with_its_backend_gone_fails_each_attempt_at_once() -> None:
    """The proxy accepts, then resets (its upstream refuses): no attempt waits for a timeout."""
    with trio.socket.socket() as placeholder:
        await placeholder.bind(("127.0.0.1", 0))
        gone = placeholder.getsockname()[1]
    policy = RetryPolicy(base=0.01, cap=0.01, max_attempts=3)
    async with (
        open_fault_proxy("127.0.0.1", gone) as balancer,
        open_client(ws_url(balancer.port), **fast(retry=policy, connect_timeout=5.0)) as client,
    ):
        began = trio.current_time()
        with trio.fail_after(SOON), pytest.raises(NetworkGone) as gone_error:
            await client.execute("{ x }")
        assert trio.current_time() - began < 1.0  # not 3 x connect_timeout
        assert balancer.accepted_count == 3
        assert "hung up during the WebSocket upgrade" in gone_error.value.last.cause


async def test_an_upgrade_refused_with_404_is_final(meshery: Meshery) -> None:
    async with open_client(ws_url(meshery.server.port, "/no/such/path"), **fast()) as client:
        with trio.fail_after(SOON), pytest.raises(ServerRejected) as rejected:
            await client.execute("{ x }")
        assert rejected.value.status == 404 and client.attempts == 1


async def test_a_state_stream_gets_its_state_again_after_a_reset(
    meshery: Meshery, proxy: FaultProxy
) -> None:
    """No cursor to resume from: the resubscription's snapshot is the catch-up."""
    contexts = (
        'subscription { subscribeK8sContext(selector: {page: "0", pageSize: "9"}) { total_count } }'
    )
    add = 'mutation($n: String!) { addK8sContext(input: {name: $n, server: "https://x"}) { id } }'
    notices = Notices()
    async with (
        open_client(ws_url(proxy.port), on_notice=notices, **fast()) as client,
        trio.open_nursery() as nursery,
    ):
        reader = Reader()
        await reader.start(nursery, client, contexts)
        await reader.wait_count(1)  # the snapshot
        await client.execute(add, {"n": "one"})
        await reader.wait_count(2)
        proxy.reset()
        await notices.wait_connected(2)
        await reader.wait_count(3)  # the state again, from the new connection
        await client.execute(add, {"n": "two"})
        await reader.wait_count(4)
        totals = [p["data"]["subscribeK8sContext"]["total_count"] for p in reader.payloads]
        assert totals == [0, 1, 1, 2]
        assert reader.stream is not None and reader.stream.resumes == 0
        nursery.cancel_scope.cancel()
