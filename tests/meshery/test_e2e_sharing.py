"""Cohort sharing on the Meshery fields, seen from real sockets.

Two subscribers of one document (same user) must share one streamer run: one
broker subscription, one cohort. A late joiner must get exactly the first
message a lone, unshared subscriber gets at that moment. The lone subscriber
sends the same document plus a comment: a different text, so a different
cohort (a fresh streamer run), with the same meaning.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

import pytest

from meshsub_trio import Server
from meshsub_trio.meshery import LOCAL_USER_ID, Model, create_app, topics

from ..interop.conftest import wait_idle
from ..wsclient import TRANSPORT, RawClient, open_raw_client
from .test_e2e_documents import (
    CLUSTER_ID,
    CONNECTION_ID,
    PROFILE_ID,
    UI_DOCUMENTS,
    bounded,
    seed,
    when_live,
)

MESHERY_PATH = "/api/system/graphql/query"
_counter = itertools.count()


def _change(name: str) -> Callable[[Model], Any]:
    """A change that moves *name*'s stream (unique each call)."""

    def run(model: Model) -> Any:
        n = next(_counter)
        user = LOCAL_USER_ID
        return {
            "events": lambda: model.publish_event(
                user, {"severity": "alert", "description": f"e{n}"}
            ),
            "perf_profiles": lambda: model.save_profile(user, {"name": f"profile {n}"}),
            "perf_results": lambda: model.record_result(user, PROFILE_ID, {"name": f"run {n}"}),
            "configuration": lambda: model.save_pattern(
                user, {"name": f"d{n}", "pattern_file": "x"}
            ),
            "cluster_resources": lambda: model.add_object(CLUSTER_ID, "Pod", "default", f"p{n}"),
            "k8s_contexts": lambda: model.upsert_context(
                {"name": f"c{n}", "server": f"https://c{n}"}, owner=user
            ),
            "meshmodel": lambda: model.register_meshmodel("components", f"m{n}", "v1"),
            "controllers": lambda: model.set_controller_status(
                CONNECTION_ID, "OPERATOR", "DEPLOYED", f"v{n}"
            ),
        }[name]()

    return run


#: The broker topic each field's streamer subscribes to.
TOPICS = {
    "events": topics.events(LOCAL_USER_ID),
    "perf_profiles": topics.PERF_PROFILES,
    "perf_results": topics.perf_results(LOCAL_USER_ID, PROFILE_ID),
    "configuration": topics.configuration(LOCAL_USER_ID),
    "cluster_resources": topics.CLUSTER_RESOURCES,
    "k8s_contexts": topics.K8S_CONTEXTS,
    "meshmodel": topics.MESHMODEL,
    "controllers": topics.CONTROLLERS,
}
SHARED_STATE = ["configuration", "cluster_resources", "k8s_contexts", "meshmodel"]
SHARED_EVENTS = ["events", "perf_results", "perf_profiles"]


class Subscriber:
    """One socket with one subscription to a UI document."""

    def __init__(self, client: RawClient, name: str) -> None:
        self.client = client
        self.name = name

    async def next_data(self) -> dict[str, Any]:
        message = await self.client.receive()
        assert message["type"] == "next" and message["id"] == "1", message
        assert "errors" not in message["payload"], message
        return message["payload"]["data"]


async def subscribe(
    server: Server, stack: AsyncExitStack, name: str, *, lone: bool = False, **headers: str
) -> Subscriber:
    """Open a socket (closed with *stack*) and subscribe to the UI's document;
    ``lone`` changes only the document's text."""
    doc = UI_DOCUMENTS[name]
    extra = [(k.encode(), v.encode()) for k, v in headers.items()]
    client = await stack.enter_async_context(
        open_raw_client(
            server.port, path=MESHERY_PATH, subprotocols=[TRANSPORT], extra_headers=extra
        )
    )
    assert (await client.init())["type"] == "connection_ack"
    query = doc.query + ("\n# a lone subscriber: its own cohort\n" if lone else "")
    payload = {"query": query, "variables": doc.variables, "operationName": doc.operation}
    await client.send({"id": "1", "type": "subscribe", "payload": payload})
    return Subscriber(client, name)


@pytest.fixture
async def meshery(start_server: Any) -> tuple[Server, Model]:
    app = create_app(simulator=False)
    seed(app.model)
    # No linger: these tests watch the shared streamer stop with its last member
    # (tests/integration/test_cohorts.py covers lingering).
    return await start_server(app=app, cohort_linger=0), app.model


@pytest.mark.parametrize("name", SHARED_STATE + SHARED_EVENTS)
@bounded()
async def test_same_document_shares_one_streamer_run(
    meshery: tuple[Server, Model], name: str
) -> None:
    server, model = meshery
    broker: Any = model.broker
    async with AsyncExitStack() as stack:
        first = await subscribe(server, stack, name)
        second = await subscribe(server, stack, name)
        await when_live(server, 2)

        assert listeners(broker, TOPICS[name]) == 1
        assert len(server.state.cohorts) == 1
        if UI_DOCUMENTS[name].initial:
            assert await first.next_data() == await second.next_data()
        _change(name)(model)
        assert await first.next_data() == await second.next_data()
    await wait_idle(server)
    assert len(server.state.cohorts) == 0 and listeners(broker, TOPICS[name]) == 0


def listeners(broker: Any, topic: str) -> int:
    """Subscribers of *topic*, plain or log readers (events and results read the log)."""
    return broker.subscriber_count(topic) + broker.log_reader_count(topic)


@bounded()
async def test_controller_status_is_not_shared(meshery: tuple[Server, Model]) -> None:
    """Full list then deltas per subscriber: each needs its own run."""
    server, model = meshery
    async with AsyncExitStack() as stack:
        early = await subscribe(server, stack, "controllers")
        full = await early.next_data()
        _change("controllers")(model)
        delta = await early.next_data()
        late = await subscribe(server, stack, "controllers")
        await when_live(server, 2)

        assert model.broker.subscriber_count(topics.CONTROLLERS) == 2  # type: ignore[attr-defined]
        assert len(server.state.cohorts) == 0
        key = "subscribeMesheryControllersStatus"
        assert len(full[key]) == 3 and len(delta[key]) == 1
        # The late joiner gets its own full list, with the change in it.
        late_full = (await late.next_data())[key]
        assert len(late_full) == 3 and delta[key][0] in late_full
    await wait_idle(server)


@pytest.mark.parametrize("name", SHARED_STATE)
@bounded()
async def test_late_joiner_gets_the_lone_snapshot(meshery: tuple[Server, Model], name: str) -> None:
    """ "state": a joiner's first message is the cohort's latest, which is what a
    fresh subscription's snapshot is, with no change needed to get it."""
    server, model = meshery
    async with AsyncExitStack() as stack:
        early = await subscribe(server, stack, name)
        snapshot = await early.next_data()
        _change(name)(model)
        latest = await early.next_data()
        assert latest != snapshot

        joiner = await subscribe(server, stack, name)
        lone = await subscribe(server, stack, name, lone=True)
        await when_live(server, 3)
        assert len(server.state.cohorts) == 2

        assert await joiner.next_data() == await lone.next_data() == latest
    await wait_idle(server)


@pytest.mark.parametrize("name", SHARED_EVENTS)
@bounded()
async def test_late_joiner_gets_no_replay(meshery: tuple[Server, Model], name: str) -> None:
    """ "events" (and perf profiles, which Meshery sends without a snapshot): a
    joiner gets nothing already sent; its first message is the next change's,
    the same a fresh subscription gets."""
    server, model = meshery
    async with AsyncExitStack() as stack:
        early = await subscribe(server, stack, name)
        await when_live(server, 1)
        _change(name)(model)
        before = await early.next_data()

        joiner = await subscribe(server, stack, name)
        lone = await subscribe(server, stack, name, lone=True)
        await when_live(server, 3)
        assert len(server.state.cohorts) == 2
        _change(name)(model)

        after = await early.next_data()
        assert after != before
        assert await joiner.next_data() == await lone.next_data() == after
    await wait_idle(server)


@bounded()
async def test_cohorts_are_per_user(start_server: Any) -> None:
    """The same document from two users: two cohorts, each with its own designs."""
    app = create_app(simulator=False, tokens={"ta": "alice", "tb": "bob"})
    app.model.save_pattern("alice", {"name": "alice's design", "pattern_file": "a"})
    app.model.save_pattern("bob", {"name": "bob's design", "pattern_file": "b"})
    server = await start_server(app=app)
    async with AsyncExitStack() as stack:
        alice = [
            await subscribe(server, stack, "configuration", authorization="Bearer ta")
            for _ in range(2)
        ]
        bob = await subscribe(server, stack, "configuration", cookie="token=tb")
        await when_live(server, 3)

        assert len(server.state.cohorts) == 2
        broker: Any = app.model.broker
        assert broker.subscriber_count(topics.configuration("alice")) == 1
        assert broker.subscriber_count(topics.configuration("bob")) == 1
        for subscriber, user in ((alice[0], "alice"), (alice[1], "alice"), (bob, "bob")):
            page = (await subscriber.next_data())["configuration"]["patterns"]
            assert [p["name"] for p in page["patterns"]] == [f"{user}'s design"]
    await wait_idle(server)
