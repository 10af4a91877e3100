"""Cohorts: one streamer, one execution and one encoding per event, shared."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import trio
import trio.testing
from graphql import GraphQLError

from meshsub_trio import App, AuthError, Context, MemoryBroker, Overflow, Streamer

from ..rawws import open_raw_websocket
from ..wsclient import TRANSPORT, open_raw_client

SCHEMA = """
type Query { hello: String }
type Item { n: Int!, label: String!, blob: String! }
type Subscription {
  feed(topic: String!): Item!
  state(topic: String!): Item!
  private: Item!
}
"""


class Harness:
    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.runs: Counter[str] = Counter()
        self.cleanups: Counter[str] = Counter()
        self.cleaned: dict[str, trio.Event] = defaultdict(trio.Event)
        self.label_calls = 0


def cohort_app(h: Harness) -> App:
    def relay(name: str) -> Any:
        async def stream(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
            topic = args.get("topic", "private")
            h.runs[topic] += 1
            try:
                async with h.broker.subscribe(topic) as events:
                    async for event in events:
                        if event == "fail":
                            raise GraphQLError("upstream failed")
                        emit(event)
            finally:
                h.cleanups[topic] += 1
                h.cleaned[topic].set()

        return stream

    def label(item: dict[str, Any], _info: Any) -> str:
        h.label_calls += 1
        return f"item {item['n']}"

    async def authenticate(ctx: Context) -> str:
        user = (ctx.connection_params or {}).get("user")
        if not isinstance(user, str):
            raise AuthError("no user")
        return user

    return App(
        SCHEMA,
        resolvers={"Item": {"label": label, "blob": lambda *_: "x" * 2000}},
        streamers={
            "feed": Streamer(relay("feed"), share="events"),
            "state": Streamer(relay("state"), share="state", policy=Overflow.COALESCE),
            "private": Streamer(relay("private"), share="events"),
        },
        authenticate=authenticate,
    )


async def subscribe(client: Any, op_id: str, query: str, user: str = "u") -> None:
    assert (await client.init({"user": user}))["type"] == "connection_ack"
    await client.send({"id": op_id, "type": "subscribe", "payload": {"query": query}})


async def published_to(h: Harness, topic: str, count: int) -> None:
    with trio.fail_after(2):
        while h.broker.subscriber_count(topic) != count:
            await trio.testing.wait_all_tasks_blocked()


async def test_same_document_shares_one_streamer_and_one_execution(start_server: Any) -> None:
    h = Harness()
    server = await start_server(cohort_app(h), cohort_linger=0)
    query = 'subscription { feed(topic: "t") { n label } }'
    async with (
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as a,
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as b,
    ):
        await subscribe(a, "1", query)
        await subscribe(b, "x", query)
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 2)
        await published_to(h, "t", 1)
        for n in range(3):
            h.broker.publish("t", {"n": n})
        for client, op_id in ((a, "1"), (b, "x")):
            got = [await client.receive() for _ in range(3)]
            assert got == [
                {
                    "id": op_id,
                    "type": "next",
                    "payload": {"data": {"feed": {"n": n, "label": f"item {n}"}}},
                }
                for n in range(3)
            ]
    assert h.runs["t"] == 1
    assert h.label_calls == 3  # executed once per event, not once per subscriber
    with trio.fail_after(2):
        await server.metrics.wait_idle()
        while h.cleanups["t"] != 1:
            await trio.testing.wait_all_tasks_blocked()
    assert len(server.state.cohorts) == 0


async def test_different_variables_or_scope_do_not_share(start_server: Any) -> None:
    h = Harness()
    server = await start_server(cohort_app(h))
    async with (
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as a,
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as b,
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as c,
    ):
        await subscribe(a, "1", 'subscription { feed(topic: "one") { n } }')
        await subscribe(b, "1", 'subscription { feed(topic: "two") { n } }')
        await subscribe(c, "1", 'subscription { feed(topic: "one") { n } }', user="other")
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 3)
        await published_to(h, "one", 2)
        await published_to(h, "two", 1)
        assert len(server.state.cohorts) == 3


async def test_state_cohort_gives_a_late_joiner_the_latest_value(start_server: Any) -> None:
    h = Harness()
    server = await start_server(cohort_app(h))
    query = 'subscription { state(topic: "s") { n } }'
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as early:
        await subscribe(early, "1", query)
        await published_to(h, "s", 1)
        h.broker.publish("s", {"n": 1})
        h.broker.publish("s", {"n": 2})
        assert (await early.receive())["payload"]["data"]["state"]["n"] == 1
        assert (await early.receive())["payload"]["data"]["state"]["n"] == 2
        async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as late:
            await subscribe(late, "9", query)
            assert await late.receive() == {
                "id": "9",
                "type": "next",
                "payload": {"data": {"state": {"n": 2}}},
            }
    assert h.runs["s"] == 1


async def test_last_member_leaving_ends_the_cohort(start_server: Any) -> None:
    h = Harness()
    server = await start_server(cohort_app(h))
    query = 'subscription { feed(topic: "t") { n } }'
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as a:
        await subscribe(a, "1", query)
        await published_to(h, "t", 1)
        await a.send({"id": "1", "type": "complete"})
        await published_to(h, "t", 0)
        assert h.cleanups["t"] == 1
        await a.send({"id": "2", "type": "subscribe", "payload": {"query": query}})
        await published_to(h, "t", 1)
        assert h.runs["t"] == 2  # a fresh cohort, not the dying one


async def test_upstream_failure_errors_every_member(start_server: Any) -> None:
    h = Harness()
    server = await start_server(cohort_app(h))
    query = 'subscription { feed(topic: "f") { n } }'
    async with (
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as a,
        open_raw_client(server.port, subprotocols=[TRANSPORT]) as b,
    ):
        await subscribe(a, "1", query)
        await subscribe(b, "2", query)
        await published_to(h, "f", 1)
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 2)
        h.broker.publish("f", "fail")
        for client, op_id in ((a, "1"), (b, "2")):
            assert await client.receive() == {
                "id": op_id,
                "type": "error",
                "payload": [{"message": "upstream failed"}],
            }


async def test_a_stalled_member_does_not_hold_back_the_others(start_server: Any) -> None:
    h = Harness()
    server = await start_server(cohort_app(h), write_timeout=30, outbox_size=4)
    query = 'subscription { feed(topic: "t") { n blob } }'
    stalled = await open_raw_websocket(server.port, receive_buffer=4096)
    await stalled.send_json({"type": "connection_init", "payload": {"user": "u"}})
    await stalled.receive_json()
    await stalled.send_json({"id": "s", "type": "subscribe", "payload": {"query": query}})
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as fast:
        await subscribe(fast, "f", query)
        await published_to(h, "t", 1)
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 2)
        total = 5000
        received = 0
        with trio.fail_after(20):
            for n in range(total):
                h.broker.publish("t", {"n": n})
                if n % 50 == 0:
                    # Let the cohort and the fast client keep up; the stalled one cannot.
                    while received < n:
                        message = await fast.receive()
                        assert message["payload"]["data"]["feed"]["n"] == received
                        received += 1
            while received < total:
                message = await fast.receive()
                assert message["payload"]["data"]["feed"]["n"] == received
                received += 1
    await stalled.aclose()
    with trio.fail_after(2):
        await server.metrics.wait_idle()
    text = server.metrics.render().decode()
    line = next(x for x in text.splitlines() if x.startswith("meshsub_dropped_events_total"))
    assert 'policy="drop_oldest"' in line and float(line.split()[-1]) > 0


async def subscribe_and_leave(h: Harness, client: Any, query: str) -> None:
    """Subscribe as operation "1" to topic "t", see the streamer live, complete."""
    await subscribe(client, "1", query)
    await published_to(h, "t", 1)
    await client.send({"id": "1", "type": "complete"})


async def test_a_cohort_lingers_and_a_returning_subscriber_joins_the_same_run(
    start_server: Any,
) -> None:
    """After its last member leaves, a cohort keeps running for ``cohort_linger``:
    the next subscriber to the same document joins that run (no second
    streamer start) and gets its events."""
    h = Harness()
    server = await start_server(cohort_app(h), cohort_linger=60)
    query = 'subscription { feed(topic: "t") { n } }'
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as first:
        await subscribe_and_leave(h, first, query)
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 0)
    assert len(server.state.cohorts) == 1
    assert (h.runs["t"], h.cleanups["t"]) == (1, 0)
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as second:
        await subscribe(second, "2", query)
        with trio.fail_after(2):
            await server.metrics.wait_for(lambda m: m.live_operations == 1)
        h.broker.publish("t", {"n": 7})
        message = await second.receive()
        assert message == {"id": "2", "type": "next", "payload": {"data": {"feed": {"n": 7}}}}
    assert (h.runs["t"], h.cleanups["t"]) == (1, 0)


async def test_a_lingering_cohort_stops_after_its_linger_and_the_next_one_starts_afresh(
    start_server: Any,
) -> None:
    """Past the linger the shared streamer is cancelled (its cleanup runs once);
    a later subscriber starts a new run."""
    h = Harness()
    server = await start_server(cohort_app(h), cohort_linger=0.05)
    query = 'subscription { feed(topic: "t") { n } }'
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        await subscribe_and_leave(h, client, query)
        with trio.fail_after(5):
            await h.cleaned["t"].wait()
        assert h.broker.subscriber_count("t") == 0
        h.cleaned["t"] = trio.Event()
        await client.send({"id": "2", "type": "subscribe", "payload": {"query": query}})
        await published_to(h, "t", 1)
        h.broker.publish("t", {"n": 1})
        message = await client.receive()
        assert message == {"id": "2", "type": "next", "payload": {"data": {"feed": {"n": 1}}}}
    with trio.fail_after(5):
        await h.cleaned["t"].wait()
    assert (h.runs["t"], h.cleanups["t"]) == (2, 2)
