"""On NATS, a cursor resumes with the same entries on every replica, before and after a flood.

Cursors are JetStream sequences, the same on every process, while each
replica serves them from its own history (users' fair shares of a byte cap)
when it has every entry after the cursor, and from the shared stream
otherwise. Whichever source answers, a client resuming on another worker
must get exactly the same entries, or a clear CURSOR_EXPIRED: never fewer.

Real nats-server, real sockets, two token users; the stream keeps only 60
messages so a flood of 100 pushes the older ones out of it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import trio

from meshsub_trio import Config, CursorExpired, LogStream, NatsBroker, Server, serve
from meshsub_trio.meshery import MesheryApp, StorageLimits, create_app, topics
from meshsub_trio.testing import NatsServer

from ..wsclient import TRANSPORT, open_raw_client

GRAPHQL = "/api/system/graphql/query"
EVENTS = "/api/system/events"
TOKENS = {"token-a": "alice", "token-b": "bob"}
BEARER = {"alice": "Bearer token-a", "bob": "Bearer token-b"}
QUERY = "subscription { subscribeEvents { description } }"
SOON = 15.0


@dataclass
class Worker:
    app: MesheryApp
    server: Server
    http: httpx.AsyncClient

    async def sync(self) -> None:
        """Everything logged so far (by any worker) is applied here."""
        assert self.app.replication is not None
        with trio.fail_after(SOON):
            await self.app.replication.barrier()

    async def post(self, user: str, description: str) -> None:
        body = {"severity": "informational", "description": description}
        reply = await self.http.post(EVENTS, json=body, headers={"authorization": BEARER[user]})
        assert reply.status_code == 201, reply.text

    async def resume(self, user: str, cursor: str, count: int) -> Any:
        """The first *count* events after *cursor*, as ``[(cursor, description)]``,
        or the error payload if refused."""
        headers = [(b"authorization", BEARER[user].encode())]
        async with open_raw_client(
            self.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
        ) as client:
            assert (await client.init())["type"] == "connection_ack"
            payload = {"query": QUERY, "extensions": {"cursor": cursor}}
            await client.send({"id": "1", "type": "subscribe", "payload": payload})
            got = []
            while len(got) < count:
                message = await client.receive(timeout=SOON)
                if message["type"] == "error":
                    return message["payload"]
                assert message["type"] == "next", message
                body = message["payload"]
                got.append(
                    (body["extensions"]["cursor"], body["data"]["subscribeEvents"]["description"])
                )
            return got

    async def cursor_of(self, user: str, description: str) -> str:
        """Post an event while subscribed live: the cursor it came with."""
        headers = [(b"authorization", BEARER[user].encode())]
        async with open_raw_client(
            self.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
        ) as client:
            assert (await client.init())["type"] == "connection_ack"
            await client.send({"id": "1", "type": "subscribe", "payload": {"query": QUERY}})
            await client.send({"type": "ping"})
            await client.receive_until("pong")
            await self.post(user, description)
            message = await client.receive(timeout=SOON)
            assert message["payload"]["data"]["subscribeEvents"]["description"] == description
            return str(message["payload"]["extensions"]["cursor"])


@asynccontextmanager
async def worker(nats: NatsServer, **limits: Any) -> AsyncIterator[Worker]:
    """One ``serve --workers`` process, minus the process: its own NATS connection."""
    log = LogStream(name="MESHERY", subjects=("meshery.>",), max_msgs=60, heartbeat=0.5)
    async with NatsBroker.connect(nats.url, reconnect_wait=0.1, log=log) as broker:
        app = create_app(
            broker=broker, simulator=False, tokens=TOKENS, limits=StorageLimits(**limits)
        )
        async with trio.open_nursery() as nursery:
            with trio.fail_after(SOON):
                server: Server = await nursery.start(
                    serve, app, Config(port=0, keepalive=0, close_timeout=1.0)
                )
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=SOON) as http:
                    yield Worker(app, server, http)
            finally:
                server.shutdown()


async def stream_expired(w: Worker, topic: str, cursor: str) -> bool:
    """Whether the shared stream alone could no longer serve *cursor* on *topic*."""
    assert w.app.replication is not None
    try:
        async with w.app.replication.shared.subscribe_log(topic, after=int(cursor), capacity=1):
            return False
    except CursorExpired:
        return True


async def test_a_cursor_resumes_alike_on_every_worker_before_and_after_a_flood(
    nats_server: NatsServer,
) -> None:
    async with worker(nats_server) as a, worker(nats_server) as b:
        seen = await a.cursor_of("bob", "bob-1")
        await a.post("bob", "bob-2")
        await b.sync()
        before = [await w.resume("bob", seen, 1) for w in (a, b)]
        assert before[0] == before[1], before
        assert [text for _, text in before[0]] == ["bob-2"]

        for n in range(100):  # more than the stream keeps, from the other worker
            await b.post("alice", f"flood-{n}")
        await b.post("bob", "bob-3")
        await a.sync()
        bob = topics.events("bob")
        assert await stream_expired(a, bob, seen), "the flood did not evict the stream"

        after = [await w.resume("bob", seen, 2) for w in (a, b)]
        assert after[0] == after[1], after
        assert [text for _, text in after[0]] == ["bob-2", "bob-3"]
        assert after[0][0] == before[0][0]  # the same entry, under the same cursor
        for w in (a, b):
            assert w.app.replication is not None
            assert w.app.replication.history.served >= 2


async def test_a_worker_started_after_the_stream_evicted_history_never_serves_a_part(
    nats_server: NatsServer,
) -> None:
    """A worker that never read bob-2 (evicted before it started) must not serve
    bob-3 alone after bob's older cursor: it expires, as the stream does."""
    async with worker(nats_server) as a:
        seen = await a.cursor_of("bob", "bob-1")
        await a.post("bob", "bob-2")
        for n in range(100):
            await a.post("alice", f"flood-{n}")
        await a.post("bob", "bob-3")
        async with worker(nats_server) as late:
            await late.sync()
            assert late.app.replication is not None
            assert late.app.replication.history.complete_from > int(seen)
            refused = await late.resume("bob", seen, 1)
            assert not isinstance(refused[0], tuple), f"served a part only: {refused}"
            assert refused[0]["extensions"]["code"] == "CURSOR_EXPIRED", refused
            # The first worker read everything: it still serves bob's cursor whole.
            assert [text for _, text in await a.resume("bob", seen, 2)] == ["bob-2", "bob-3"]
            # A cursor issued after the late worker started resumes alike on both.
            fresh = await late.cursor_of("bob", "bob-4")
            await a.post("bob", "bob-5")
            await late.sync()
            assert await late.resume("bob", fresh, 1) == await a.resume("bob", fresh, 1)


async def test_over_their_share_only_the_flooders_cursors_expire_on_every_worker(
    nats_server: NatsServer,
) -> None:
    """Each worker's history is capped (here 16 KiB): a flood past it and past the
    stream expires the flooder's old cursor everywhere, cleanly, and no one else's."""
    async with (
        worker(nats_server, resume_log_bytes=16 * 1024) as a,
        worker(nats_server, resume_log_bytes=16 * 1024) as b,
    ):
        bob_seen = await a.cursor_of("bob", "bob-1")
        alice_seen = await a.cursor_of("alice", "alice-1")
        await a.post("bob", "bob-2")
        for n in range(100):  # about 100 KiB: six times the cap, more than the stream keeps
            await b.post("alice", f"flood-{n}-" + "x" * 900)
        await a.post("bob", "bob-3")
        await a.sync()
        await b.sync()
        assert await stream_expired(a, topics.events("alice"), alice_seen)
        for w in (a, b):
            expired = await w.resume("alice", alice_seen, 1)
            assert not isinstance(expired[0], tuple), expired
            assert expired[0]["extensions"]["code"] == "CURSOR_EXPIRED", expired
            kept = await w.resume("bob", bob_seen, 2)
            assert [text for _, text in kept] == ["bob-2", "bob-3"], kept
            assert w.app.replication is not None
            assert w.app.replication.history.log.evicted["over_share"] > 0
            assert w.app.resume_log is w.app.replication.history.log  # what /metrics shows
        assert await a.resume("bob", bob_seen, 2) == await b.resume("bob", bob_seen, 2)
