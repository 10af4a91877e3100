"""Stored state is bounded: per object, per user (bytes and record counts), per event log.

Each refusal is seen from outside (413 with the limit in the message on REST,
a ``STORAGE_LIMIT`` GraphQL error naming the limit on mutations, over HTTP
and WebSocket), and then shown to have stored nothing: the user's pages are
unchanged and the model's per-user byte accounting is where it was. Deletes
bring the accounting back to exactly the bytes of what is still stored.
Small limits keep the payloads small; the last tests show that the defaults
take a design as large as the largest in Meshery's catalog.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from meshsub_trio import Server
from meshsub_trio.meshery import MesheryApp, StorageLimits
from meshsub_trio.meshery._model._quota import size_of
from meshsub_trio.meshery._replication._resume_log import ResumeLogBroker

from ..wsclient import TRANSPORT, open_raw_client
from .conftest import meshery_starter

GRAPHQL = "/api/system/graphql/query"
PUBLISH = "/api/meshsub/publish"
EVENTS = "/api/system/events"
TOKENS = {"token-1": "user1", "token-2": "user2"}
BEARER = {"user1": "Bearer token-1", "user2": "Bearer token-2"}
ALL = {"page": "0", "pageSize": "all"}
KIB = 1024

SAVE_PATTERN = "mutation($i: PatternInput!) { savePattern(input: $i) { id name pattern_file } }"
PATTERNS = "query($s: PageFilter!) { fetchPatterns(selector: $s) { total_count patterns { id name pattern_file } } }"


@dataclass
class Meshery:
    app: MesheryApp
    server: Server
    http: httpx.AsyncClient

    async def gql(self, user: str, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            GRAPHQL,
            json={"query": query, "variables": variables},
            headers={"authorization": BEARER[user]},
        )
        return response.json()  # type: ignore[no-any-return]

    async def post(self, user: str, path: str, body: Any) -> httpx.Response:
        return await self.http.post(path, json=body, headers={"authorization": BEARER[user]})

    async def patterns(self, user: str) -> Any:
        body = await self.gql(user, PATTERNS, s=ALL)
        assert "errors" not in body, body
        return body["data"]["fetchPatterns"]

    def stored(self, user: str) -> int:
        return self.app.model.stored_bytes(user)


Start = Callable[..., Awaitable[Meshery]]


@pytest.fixture
async def start(start_server: Any) -> AsyncIterator[Start]:
    """``await start(object_bytes=..., ...)``: a token-mode Meshery server with those limits."""
    async with meshery_starter(start_server, TOKENS, Meshery) as make:
        yield make


def design(name: str, size: int) -> dict[str, Any]:
    return {"name": name, "pattern_file": "x" * size}


def error_of(response: httpx.Response) -> str:
    (error,) = response.json()["errors"]
    return str(error["message"])


# ---- one object ------------------------------------------------------------------------


async def test_an_oversized_design_is_413_on_rest_and_not_stored(start: Start) -> None:
    m = await start(object_bytes=8 * KIB)
    kept = await m.post(
        "user1", PUBLISH, {"type": "pattern", "op": "upsert", "pattern": design("kept", 1 * KIB)}
    )
    assert kept.status_code == 200, kept.text
    kept_id = kept.json()["results"][0]["id"]
    before, page = m.stored("user1"), await m.patterns("user1")

    for pattern in (design("big", 9 * KIB), {**design("kept", 9 * KIB), "id": kept_id}):
        response = await m.post(
            "user1", PUBLISH, {"type": "pattern", "op": "upsert", "pattern": pattern}
        )
        assert response.status_code == 413, response.text
        assert "8192 bytes per stored object" in error_of(response)
        assert response.json()["applied"] == 0

    assert await m.patterns("user1") == page  # the new one absent, the old version intact
    assert m.stored("user1") == before


async def test_an_oversized_event_is_413_and_not_kept(start: Start) -> None:
    m = await start(object_bytes=4 * KIB)
    response = await m.post("user1", EVENTS, {"severity": "error", "description": "x" * 5 * KIB})
    assert response.status_code == 413, response.text
    assert "4096 bytes per stored object" in error_of(response)
    history = await m.http.get(EVENTS, headers={"authorization": BEARER["user1"]})
    assert history.json()["total_count"] == 0
    assert m.app.model.usage.bytes("user1", "event") == 0


async def test_an_oversized_design_is_a_graphql_error_over_websocket(start: Start) -> None:
    m = await start(object_bytes=8 * KIB)
    headers = [(b"authorization", BEARER["user1"].encode())]
    async with open_raw_client(
        m.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
    ) as client:
        assert (await client.init())["type"] == "connection_ack"
        payload = {"query": SAVE_PATTERN, "variables": {"i": design("big", 9 * KIB)}}
        await client.send({"id": "1", "type": "subscribe", "payload": payload})
        reply = await client.receive()
    assert reply["type"] == "next", reply
    (error,) = reply["payload"]["errors"]
    assert "8192 bytes per stored object" in error["message"]
    assert error["extensions"] == {"code": "STORAGE_LIMIT", "limit": "object_bytes", "max": 8192}
    assert (await m.patterns("user1"))["total_count"] == 0
    assert m.stored("user1") == 0


# ---- per user: record counts ---------------------------------------------------------------

#: kind -> (GraphQL mutation saving one, its input for number n, the delete mutation).
COUNTED = {
    "design": (SAVE_PATTERN, lambda n: {"name": f"d{n}", "pattern_file": "x"}, "deletePattern(id: $id)", "ID!"),
    "filter": ("mutation($i: FilterInput!) { saveFilter(input: $i) { id } }", lambda n: {"name": f"f{n}", "filter_file": "x"}, "deleteFilter(id: $id)", "ID!"),
    "profile": ("mutation($i: PerformanceProfileInput!) { savePerformanceProfile(input: $i) { id } }", lambda n: {"name": f"p{n}"}, "deletePerformanceProfile(id: $id)", "String!"),
    "context": ("mutation($i: K8sContextInput!) { addK8sContext(input: $i) { id } }", lambda n: {"name": f"c{n}", "server": f"https://c{n}"}, "deleteK8sContext(id: $id)", "String!"),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(COUNTED))
async def test_each_user_keeps_at_most_records_of_each_kind(start: Start, kind: str) -> None:
    save, fields, delete, id_type = COUNTED[kind]
    m = await start(records=3)
    ids = []
    for n in range(3):
        body = await m.gql("user1", save, i=fields(n))
        assert "errors" not in body, body
        ids.append(next(iter(body["data"].values()))["id"])
    stored = m.stored("user1")

    refused = await m.gql("user1", save, i=fields(3))
    (error,) = refused["errors"]
    assert "(limit: 3 per user)" in error["message"]
    assert error["extensions"] == {"code": "STORAGE_LIMIT", "limit": "records", "max": 3}
    assert m.stored("user1") == stored and m.app.model.usage.count("user1", kind) == 3

    other = await m.gql("user2", save, i=fields(0))  # a limit per user, not shared
    assert "errors" not in other, other
    deleted = await m.gql("user1", f"mutation($id: {id_type}) {{ {delete} }}", id=ids[0])
    assert "errors" not in deleted, deleted
    again = await m.gql("user1", save, i=fields(3))
    assert "errors" not in again, again


# ---- per user: bytes -------------------------------------------------------------------


async def test_a_users_stored_bytes_are_capped_and_deletes_give_them_back(start: Start) -> None:
    m = await start(object_bytes=16 * KIB, user_bytes=20 * KIB)
    saved = []
    for n in range(3):
        response = await m.post(
            "user1",
            PUBLISH,
            {"type": "pattern", "op": "upsert", "pattern": design(f"d{n}", 6 * KIB)},
        )
        assert response.status_code == 200, response.text
        saved.append(response.json()["results"][0])
    # The accounting is the exact JSON size of what is stored.
    assert m.stored("user1") == sum(size_of(record) for record in saved)
    page = await m.patterns("user1")

    response = await m.post(
        "user1", PUBLISH, {"type": "pattern", "op": "upsert", "pattern": design("d3", 6 * KIB)}
    )
    assert response.status_code == 413, response.text
    message = error_of(response)
    assert "over the limit of 20480 bytes per user" in message
    assert await m.patterns("user1") == page and m.stored("user1") == sum(map(size_of, saved))
    graphql = await m.gql("user1", SAVE_PATTERN, i=design("d3", 6 * KIB))
    assert graphql["errors"][0]["extensions"] == {
        "code": "STORAGE_LIMIT",
        "limit": "user_bytes",
        "max": 20480,
    }

    # Another user has a budget of its own.
    theirs = await m.post(
        "user2", PUBLISH, {"type": "pattern", "op": "upsert", "pattern": design("t", 6 * KIB)}
    )
    assert theirs.status_code == 200, theirs.text

    # Shrinking an existing design is always allowed; deleting gives the bytes back.
    shrunk = await m.post(
        "user1",
        PUBLISH,
        {"type": "pattern", "op": "upsert", "pattern": {**design("d0", 10), "id": saved[0]["id"]}},
    )
    assert shrunk.status_code == 200, shrunk.text
    saved[0] = shrunk.json()["results"][0]
    assert m.stored("user1") == sum(map(size_of, saved))
    for record in saved:
        deleted = await m.post(
            "user1", PUBLISH, {"type": "pattern", "op": "delete", "id": record["id"]}
        )
        assert deleted.status_code == 200, deleted.text
    assert m.stored("user1") == 0
    assert m.app.model.usage.count("user1", "design") == 0
    assert m.stored("user2") == size_of(theirs.json()["results"][0])


async def test_perf_results_count_against_the_owner_and_go_with_their_profile(start: Start) -> None:
    m = await start(user_bytes=6 * KIB)
    profile = await m.post(
        "user1",
        PUBLISH,
        {"type": "perf_profile", "op": "upsert", "profile": {"id": "p", "name": "soak"}},
    )
    assert profile.status_code == 200, profile.text
    run = {
        "type": "perf_result",
        "op": "append",
        "result": {"profileID": "p", "runner_results": {"h": "x" * KIB}},
    }
    recorded = 0
    while (response := await m.post("user1", PUBLISH, run)).status_code == 200:
        recorded += 1
        assert recorded < 10, "results were never refused"
    assert response.status_code == 413 and "6144 bytes per user" in error_of(response)
    assert recorded >= 3
    assert m.app.model.usage.count("user1", "result") == recorded
    assert m.stored("user1") <= 6 * KIB

    deleted = await m.post("user1", PUBLISH, {"type": "perf_profile", "op": "delete", "id": "p"})
    assert deleted.status_code == 200, deleted.text
    assert m.stored("user1") == 0 and m.app.model.usage.count("user1", "result") == 0


# ---- the event log -------------------------------------------------------------------------


async def test_event_history_keeps_its_byte_bound_dropping_the_oldest(start: Start) -> None:
    m = await start(event_bytes=8 * KIB)
    for n in range(12):
        response = await m.post(
            "user1", EVENTS, {"severity": "debug", "description": f"{n} " + "x" * KIB}
        )
        assert response.status_code == 201, response.text  # a log: never refused for room
    history = await m.http.get(
        EVENTS, params={"pagesize": "all"}, headers={"authorization": BEARER["user1"]}
    )
    kept = [event["description"].split()[0] for event in history.json()["events"]]
    assert kept and kept[0] == "11"  # newest first, the newest kept
    assert len(kept) < 12 and kept == [str(n) for n in range(11, 11 - len(kept), -1)]
    events = m.app.model.events_of("user1")
    assert m.app.model.usage.bytes("user1", "event") == sum(map(size_of, events)) <= 8 * KIB


# ---- the defaults ----------------------------------------------------------------------


async def test_the_defaults_take_a_design_as_large_as_meshery_catalogs_largest(
    start: Start,
) -> None:
    """The largest sampled catalog design is 528 KB of JSON; stored as a string its
    quotes are escaped. A design like it, full of quotes, must pass the defaults."""
    m = await start()
    components = [
        {"id": f"c{n}", "kind": "Deployment", "styles": {"svgColor": "y" * 400}}
        for n in range(1150)
    ]
    pattern_file = json.dumps({"name": "large", "components": components})
    assert len(pattern_file) > 528_000
    response = await m.post(
        "user1",
        PUBLISH,
        {
            "type": "pattern",
            "op": "upsert",
            "pattern": {"name": "large", "pattern_file": pattern_file},
        },
    )
    assert response.status_code == 200, response.text[:300]
    assert m.stored("user1") > len(pattern_file)


def test_default_limits_are_documented_values() -> None:
    limits = StorageLimits()
    assert (limits.object_bytes, limits.user_bytes, limits.records, limits.event_bytes) == (
        1024 * KIB, 64 * KIB * KIB, 1000, 8 * KIB * KIB,
    )  # fmt: skip
    assert limits.resume_log_bytes == 64 * KIB * KIB


# ---- the resume log ----------------------------------------------------------------------


async def resume_events(m: Meshery, cursor: int) -> dict[str, Any]:
    """Subscribe to user1's events from *cursor*; the first reply."""
    headers = [(b"authorization", BEARER["user1"].encode())]
    async with open_raw_client(
        m.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
    ) as client:
        assert (await client.init())["type"] == "connection_ack"
        payload = {
            "query": "subscription { subscribeEvents { description } }",
            "extensions": {"cursor": str(cursor)},
        }
        await client.send({"id": "1", "type": "subscribe", "payload": payload})
        return await client.receive()


async def test_the_resume_log_is_bounded_in_bytes_and_old_cursors_expire(start: Start) -> None:
    """Saving one design again and again keeps one design in the model, and must
    not grow the broker's resume log either: the oldest entries go, and a cursor
    from before them expires (the client reloads) instead of replaying a gap."""
    m = await start(resume_log_bytes=32 * KIB)
    posted = await m.post("user1", EVENTS, {"severity": "debug", "description": "first"})
    assert posted.status_code == 201, posted.text
    before_first = m.app.broker.last_seq - 1
    replayed = await resume_events(m, before_first)
    assert replayed["payload"]["data"]["subscribeEvents"]["description"] == "first", replayed

    saved = await m.post(
        "user1", PUBLISH, {"type": "pattern", "op": "upsert", "pattern": design("d", 4 * KIB)}
    )
    pattern_id = saved.json()["results"][0]["id"]
    for n in range(50):
        again = await m.post(
            "user1",
            PUBLISH,
            {
                "type": "pattern",
                "op": "upsert",
                "pattern": {**design(f"d{n}", 4 * KIB), "id": pattern_id},
            },
        )
        assert again.status_code == 200, again.text
    assert m.app.broker.retained_bytes <= 32 * KIB
    assert m.stored("user1") == size_of(m.app.model.patterns_of("user1")[0])

    expired = await resume_events(m, before_first)
    assert expired["type"] == "error", expired
    assert expired["payload"][0]["extensions"]["code"] == "CURSOR_EXPIRED"


def test_resume_log_accounting_matches_what_it_retains() -> None:
    """Count and byte bounds together, many topics: the accounting is exact, the
    oldest entries go first whatever their topic, emptied topics are forgotten."""
    broker = ResumeLogBroker(log_capacity=3, log_bytes=2000)

    def retained() -> dict[str, list[int]]:
        return {topic: [e.seq for e in log.entries] for topic, log in broker._logs.items()}

    for n in range(40):
        broker.publish(f"t{n % 4}", {"n": n, "pad": "x" * (n * 7 % 90)})
        sizes = [size_of(e.message) for log in broker._logs.values() for e in log.entries]
        assert broker.retained_bytes == sum(sizes) <= 2000
    kept = sorted(seq for seqs in retained().values() for seq in seqs)
    assert kept == list(range(kept[0], 41))  # a suffix of the log: oldest evicted first
    broker.publish("big", {"pad": "y" * 1990})  # evicts everything else
    assert retained() == {"big": [41]}
    assert broker.forgotten_upto == 40  # the forgotten topics' floor
    broker.publish("t0", {"n": "again"})
    assert broker._logs["t0"].evicted_upto == 40  # an old t0 cursor expires
