"""One user's traffic must not expire another user's resume cursors.

The in-memory broker's resume log (what a client resuming from a cursor
replays) is capped in bytes for all users together. A user who floods it (events
in a loop, one design saved again and again) must push out only their own
entries: another user's cursor from before the flood still resumes with nothing
lost, while the flooder's own old cursor expires (so the cap is really hit).

Real server, real sockets, two token users; small caps keep the payloads small.

Two cross-user paths outside the log's own code are covered too: perf
results on a profile id two users both chose (each owner has their own topic),
and on NATS (``serve --workers``), where each replica resumes cursors from its
own fair-share history rather than from the JetStream stream, one for all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import Config, LogStream, NatsBroker, Server, serve
from meshsub_trio.meshery import MesheryApp, create_app, topics
from meshsub_trio.meshery._replication._resume_log import ResumeLogBroker
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from ..wsclient import TRANSPORT, open_raw_client
from .conftest import meshery_starter

__all__ = ["nats_server"]  # the fixture, for the scale-out test

GRAPHQL = "/api/system/graphql/query"
PUBLISH = "/api/meshsub/publish"
EVENTS = "/api/system/events"
#: With two ids that collided in results topic names when a name was just
#: ``<user>.<profile>``: "a.b"'s profile "c" and "a"'s profile "b.c".
TOKENS = {"token-a": "alice", "token-b": "bob", "token-ab": "a.b", "token-dot": "a"}
BEARER = {user: f"Bearer {token}" for token, user in TOKENS.items()}
EVENTS_QUERY = "subscription { subscribeEvents { description } }"
KIB = 1024
#: The log's cap in these tests: the flood below is ten times as much.
CAP = 32 * KIB


@dataclass
class Meshery:
    app: MesheryApp
    server: Server
    http: httpx.AsyncClient

    async def post_event(self, user: str, description: str) -> None:
        body = {"severity": "informational", "description": description}
        response = await self.http.post(EVENTS, json=body, headers={"authorization": BEARER[user]})
        assert response.status_code == 201, response.text

    async def save_design(self, user: str, design: dict[str, Any]) -> str:
        message = {"type": "pattern", "op": "upsert", "pattern": design}
        response = await self.http.post(
            PUBLISH, json=message, headers={"authorization": BEARER[user]}
        )
        assert response.status_code == 200, response.text
        return str(response.json()["results"][0]["id"])

    async def events(self, user: str, count: int, cursor: str | None = None) -> Any:
        """*user*'s first *count* events on a new subscription (after *cursor*), as
        ``[(cursor, description)]``, or the error payload if the server refuses."""
        headers = [(b"authorization", BEARER[user].encode())]
        async with open_raw_client(
            self.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
        ) as client:
            assert (await client.init())["type"] == "connection_ack"
            payload: dict[str, Any] = {"query": EVENTS_QUERY}
            if cursor is not None:
                payload["extensions"] = {"cursor": cursor}
            await client.send({"id": "1", "type": "subscribe", "payload": payload})
            received = []
            while len(received) < count:
                message = await client.receive()
                if message["type"] == "error":
                    return message["payload"]
                assert message["type"] == "next", message
                next_payload = message["payload"]
                received.append(
                    (
                        next_payload["extensions"]["cursor"],
                        next_payload["data"]["subscribeEvents"]["description"],
                    )
                )
            return received

    async def first_cursor(self, user: str, description: str) -> str:
        """Publish an event for *user* while subscribed; the cursor it came with."""
        headers = [(b"authorization", BEARER[user].encode())]
        async with open_raw_client(
            self.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
        ) as client:
            assert (await client.init())["type"] == "connection_ack"
            await client.send({"id": "1", "type": "subscribe", "payload": {"query": EVENTS_QUERY}})
            # subscribe is processed before the POST below is: the ack of a
            # ping sent after it proves the subscription is registered.
            await client.send({"type": "ping"})
            assert (await client.receive_until("pong"))[-1]["type"] == "pong"
            await self.post_event(user, description)
            message = await client.receive()
            assert message["type"] == "next", message
            assert message["payload"]["data"]["subscribeEvents"]["description"] == description
            return str(message["payload"]["extensions"]["cursor"])


Start = Callable[..., Awaitable[Meshery]]


@pytest.fixture
async def start(start_server: Any) -> AsyncIterator[Start]:
    """``await start(resume_log_bytes=...)``: a token-mode Meshery server with those limits."""
    async with meshery_starter(start_server, TOKENS, Meshery) as make:
        yield make


async def flood_events(m: Meshery, user: str) -> None:
    for n in range(320):  # about 1 KiB each: ten times the cap
        await m.post_event(user, f"flood-{n}-" + "x" * 900)


async def flood_designs(m: Meshery, user: str) -> None:
    design_id = await m.save_design(user, {"name": "d", "pattern_file": "x" * 4 * KIB})
    for n in range(80):  # one design, saved again and again: ten times the cap
        await m.save_design(user, {"id": design_id, "name": f"d{n}", "pattern_file": "y" * 4 * KIB})


@pytest.mark.parametrize("flood", [flood_events, flood_designs], ids=["events", "designs"])
async def test_a_flood_expires_only_the_flooders_cursors(
    start: Start, flood: Callable[[Meshery, str], Awaitable[None]]
) -> None:
    m = await start(resume_log_bytes=CAP)
    bob_seen = await m.first_cursor("bob", "bob-1")
    alice_seen = await m.first_cursor("alice", "alice-1")
    await m.post_event("bob", "bob-2")  # missed while bob is away
    await m.post_event("alice", "alice-2")

    await flood(m, "alice")
    await m.post_event("bob", "bob-3")

    resumed = await m.events("bob", 2, cursor=bob_seen)
    assert [text for _, text in resumed] == ["bob-2", "bob-3"], resumed
    assert int(resumed[0][0]) > int(bob_seen)
    # The same cursor on the long-poll rung (plain HTTP, no socket held).
    polled = await m.http.get(
        EVENTS, params={"after": bob_seen, "wait": "0"}, headers={"authorization": BEARER["bob"]}
    )
    assert polled.status_code == 200, polled.text
    assert [e["event"]["description"] for e in polled.json()["events"]] == ["bob-2", "bob-3"]
    # The flood really overflowed the log: alice's own old cursor is gone ...
    expired = await m.events("alice", 1, cursor=alice_seen)
    assert expired[0]["extensions"]["code"] == "CURSOR_EXPIRED", expired
    gone = await m.http.get(
        EVENTS,
        params={"after": alice_seen, "wait": "0"},
        headers={"authorization": BEARER["alice"]},
    )
    assert gone.status_code == 410, gone.text
    # ... by evicting alice's own entries (counted as such): bob keeps all three.
    broker = m.app.broker
    assert isinstance(broker, ResumeLogBroker)
    assert broker.retained_bytes <= CAP
    assert broker.evicted["over_share"] > 0
    assert len(broker._logs[topics.events("bob")].entries) == 3


PERF_RESULTS = """subscription { subscribePerfResults(profileID: "load-test",
    selector: {page: "0", pageSize: "10", order: "created_at asc"}) { total_count } }"""
SAVE_PROFILE = "mutation($i: PerformanceProfileInput!) { savePerformanceProfile(input: $i) { id } }"
RECORD_RESULT = "mutation($i: PerfResultInput!) { recordPerfResult(input: $i) { name } }"


async def results_cursor_survives_a_flood(
    m: Meshery, owner: str, profile: str, flooder: str, flooders_profile: str
) -> None:
    """*owner* sees a result of *profile*, misses one, then *flooder* fills the
    results topic's count bound on *flooders_profile*: *owner*'s cursor still
    resumes with both results."""
    query = PERF_RESULTS.replace("load-test", profile)

    async def gql(user: str, query: str, **variables: Any) -> None:
        response = await m.http.post(
            GRAPHQL,
            json={"query": query, "variables": variables},
            headers={"authorization": BEARER[user]},
        )
        assert "errors" not in response.json(), response.text

    await gql(owner, SAVE_PROFILE, i={"id": profile, "name": f"{owner}'s"})
    headers = [(b"authorization", BEARER[owner].encode())]
    async with open_raw_client(
        m.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
    ) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.send({"id": "1", "type": "subscribe", "payload": {"query": query}})
        await client.send({"type": "ping"})
        await client.receive_until("pong")
        await gql(owner, RECORD_RESULT, i={"profileID": profile, "name": "mine-1"})
        first = await client.receive()
        seen = first["payload"]["extensions"]["cursor"]
    await gql(owner, RECORD_RESULT, i={"profileID": profile, "name": "mine-2"})
    await gql(flooder, SAVE_PROFILE, i={"id": flooders_profile, "name": f"{flooder}'s"})
    for n in range(1000):  # the topic's count bound (what the mutation does, minus HTTP)
        m.app.model.record_result(flooder, flooders_profile, {"name": f"flood-{n}"})

    async with open_raw_client(
        m.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
    ) as client:
        assert (await client.init())["type"] == "connection_ack"
        payload = {"query": query, "extensions": {"cursor": seen}}
        await client.send({"id": "1", "type": "subscribe", "payload": payload})
        resumed = await client.receive()
    assert resumed["type"] == "next", resumed
    assert resumed["payload"]["data"]["subscribePerfResults"]["total_count"] == 2


async def test_results_on_a_profile_id_another_user_also_chose_do_not_expire_mine(
    start: Start,
) -> None:
    await results_cursor_survives_a_flood(await start(), "bob", "load-test", "alice", "load-test")


async def test_ids_with_dots_do_not_share_a_results_topic(start: Start) -> None:
    """User "a.b"'s profile "c" and user "a"'s profile "b.c": ids are the
    client's (a profile's) or the deployment's (a user's) to choose, dots
    included, and the two must still get topics of their own."""
    assert topics.perf_results("a.b", "c") != topics.perf_results("a", "b.c")
    await results_cursor_survives_a_flood(await start(), "a.b", "c", "a", "b.c")


# ---- scale-out: the JetStream-backed log -----------------------------------------------------


@asynccontextmanager
async def replica(nats: NatsServer, log: LogStream) -> AsyncIterator[Meshery]:
    """A token-mode replica on its own NATS connection (as ``serve --workers`` runs)."""
    async with NatsBroker.connect(nats.url, reconnect_wait=0.1, log=log) as broker:
        app = create_app(broker=broker, simulator=False, tokens=TOKENS)
        async with trio.open_nursery() as nursery:
            config = Config(port=0, keepalive=0, close_timeout=1.0)
            with trio.fail_after(15):
                server: Server = await nursery.start(serve, app, config)
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                    yield Meshery(app, server, http)
            finally:
                server.shutdown()


async def test_on_nats_a_flood_expires_only_the_flooders_cursors(nats_server: NatsServer) -> None:
    log = LogStream(name="MESHERY", subjects=("meshery.>",), max_msgs=100, heartbeat=0.5)
    async with replica(nats_server, log) as m:
        bob_seen = await m.first_cursor("bob", "bob-1")
        await m.post_event("bob", "bob-2")
        for n in range(150):  # more than the stream keeps
            await m.post_event("alice", f"flood-{n}")
        await m.post_event("bob", "bob-3")
        resumed = await m.events("bob", 2, cursor=bob_seen)
        assert [text for _, text in resumed] == ["bob-2", "bob-3"], resumed
