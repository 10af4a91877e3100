"""Each streamer driven directly: snapshot and delta rules, isolation, policies, cleanup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from meshsub_trio import MemoryBroker, Overflow
from meshsub_trio.meshery import LOCAL_USER, BadUserInput, Model, create_app, topics
from meshsub_trio.meshery._api._streamers import EVENTS_CAPACITY, make_streamers

from .conftest import ALICE, BOB, PAGE, Collector, RecordingBroker, settle
from .test_documents import project

#: The app's schema: its subscription fields resolve to the emitted value itself.
SCHEMA = create_app(simulator=False).schema


def assert_fits(name: str, values: list[Any]) -> None:
    """Every emitted value executes cleanly against the UI's document."""
    for value in values:
        result = project(SCHEMA, name, value)
        assert result.errors is None, result.errors


def add_cluster(model: Model, name: str = "kind", cluster: str = "cluster-1") -> dict[str, Any]:
    return model.upsert_context(
        {"name": name, "server": f"https://{name}:6443", "kubernetes_server_id": cluster},
        owner=LOCAL_USER.id,
    )


# ---- subscribeEvents -------------------------------------------------------------


async def test_events_are_per_user_and_not_replayed(model: Model, start: Any) -> None:
    model.publish_event(ALICE.id, {"severity": "error", "description": "before subscribing"})
    alice = await start("subscribeEvents", {}, user=ALICE)
    bob = await start("subscribeEvents", {}, user=BOB)
    model.publish_event(ALICE.id, {"severity": "warning", "description": "for alice"})
    model.publish_event(BOB.id, {"severity": "debug", "description": "for bob"})
    await alice.wait_for(1)
    await bob.wait_for(1)
    await settle()
    assert [e["description"] for e in alice.items] == ["for alice"]
    assert [e["description"] for e in bob.items] == ["for bob"]
    assert alice.items[0]["userID"] == ALICE.id
    assert_fits("events", alice.items + bob.items)


async def test_every_subscriber_of_a_user_gets_every_event(model: Model, start: Any) -> None:
    tabs = [await start("subscribeEvents", {}, user=ALICE) for _ in range(3)]
    for severity in ("emergency", "alert", "critical", "error", "warning"):
        model.publish_event(ALICE.id, {"severity": severity, "description": severity})
    for tab in tabs:
        await tab.wait_for(5)
        assert [e["severity"] for e in tab.items] == [
            "emergency", "alert", "critical", "error", "warning",
        ]  # fmt: skip


async def test_events_drop_oldest_and_count_when_a_subscriber_lags(
    model: Model, broker: RecordingBroker, start: Any, streamers: Any
) -> None:
    assert streamers["subscribeEvents"].policy is Overflow.DROP_OLDEST
    run = await start("subscribeEvents", {}, user=ALICE)
    # Publish a burst with no checkpoint in between: the streamer cannot keep up.
    for n in range(EVENTS_CAPACITY + 44):
        model.publish_event(ALICE.id, {"severity": "debug", "description": str(n)})
    await run.wait_for(EVENTS_CAPACITY)
    await settle()
    assert len(run.items) == EVENTS_CAPACITY
    assert run.items[0]["description"] == "44"
    assert run.items[-1]["description"] == str(EVENTS_CAPACITY + 43)
    assert broker.dropped[topics.events(ALICE.id)] == 44


async def test_event_of_unknown_severity_is_refused_at_the_source(model: Model) -> None:
    with pytest.raises(ValueError, match="severity must be one of"):
        model.publish_event(ALICE.id, {"severity": "success", "description": "meshkit-style"})


# ---- subscribeMesheryControllersStatus ----------------------------------------------


async def test_controllers_full_list_then_single_item_deltas(model: Model, start: Any) -> None:
    one = add_cluster(model)["connection_id"]
    two = add_cluster(model, "other", "cluster-2")["connection_id"]
    run = await start("subscribeMesheryControllersStatus", {"connectionIDs": [one]})
    first = await run.wait_for(1)
    assert [(i["connectionID"], i["controller"], i["status"]) for i in first[0]] == [
        (one, "BROKER", "NOTDEPLOYED"),
        (one, "OPERATOR", "NOTDEPLOYED"),
        (one, "MESHSYNC", "NOTDEPLOYED"),
    ]
    model.set_controller_status(one, "OPERATOR", "DEPLOYING")
    await run.wait_for(2)
    assert run.items[1] == [
        {"connectionID": one, "controller": "OPERATOR", "status": "DEPLOYING", "version": ""}
    ]
    # Same status again: no change, nothing sent; another connection: filtered out.
    model.set_controller_status(one, "OPERATOR", "DEPLOYING")
    model.set_controller_status(two, "BROKER", "CONNECTED", "2.10")
    await settle()
    assert len(run.items) == 2
    # A version change alone is a change.
    model.set_controller_status(one, "OPERATOR", "DEPLOYING", "v0.8.3")
    await run.wait_for(3)
    assert run.items[2][0]["version"] == "v0.8.3"
    assert_fits("controllers", run.items)


async def test_controller_burst_yields_one_delta_per_controller(model: Model, start: Any) -> None:
    """Changes made without a checkpoint between them coalesce in the broker
    buffer, but none is lost: the streamer re-diffs the whole state."""
    one = add_cluster(model)["connection_id"]
    run = await start("subscribeMesheryControllersStatus", {})
    await run.wait_for(1)
    model.set_controller_status(one, "BROKER", "DEPLOYING")
    model.set_controller_status(one, "MESHSYNC", "DEPLOYING")
    model.set_controller_status(one, "MESHSYNC", "DEPLOYED", "v1")
    await run.wait_for(3)
    await settle()
    assert sorted((d[0]["controller"], d[0]["status"]) for d in run.items[1:]) == [
        ("BROKER", "DEPLOYING"),
        ("MESHSYNC", "DEPLOYED"),
    ]
    assert all(len(delta) == 1 for delta in run.items[1:])


async def test_controllers_null_means_all_and_new_connections_appear(
    model: Model, start: Any, streamers: Any
) -> None:
    assert streamers["subscribeMesheryControllersStatus"].policy is Overflow.CLOSE
    run = await start("subscribeMesheryControllersStatus", {"connectionIDs": None})
    assert await run.wait_for(1) == [[]]
    connection = add_cluster(model)["connection_id"]
    await run.wait_for(4)
    assert {d[0]["controller"] for d in run.items[1:]} == {"BROKER", "OPERATOR", "MESHSYNC"}
    assert {d[0]["connectionID"] for d in run.items[1:]} == {connection}


async def test_controllers_removed_then_readded_are_reported_again(
    model: Model, start: Any
) -> None:
    context = add_cluster(model)
    run = await start("subscribeMesheryControllersStatus", {})
    await run.wait_for(1)
    model.delete_context(context["id"])
    await settle()
    assert len(run.items) == 1
    model.upsert_context({**context, "id": context["id"]}, owner=LOCAL_USER.id)
    await run.wait_for(4)


# ---- subscribeClusterResources -----------------------------------------------------


def populate(model: Model) -> None:
    add_cluster(model, "kind", "cluster-1")
    add_cluster(model, "other", "cluster-2")
    for namespace in ("default", "istio-system"):
        model.add_object("cluster-1", "Namespace", "", namespace)
    model.add_object("cluster-1", "Node", "", "node-1")
    model.add_object("cluster-1", "ClusterRole", "", "admin")
    model.add_object("cluster-1", "Pod", "default", "web-1")
    model.add_object("cluster-1", "Pod", "default", "web-2")
    model.add_object("cluster-1", "Pod", "istio-system", "istiod-1")
    model.add_object("cluster-1", "Service", "default", "web")
    model.add_object("cluster-2", "Pod", "default", "elsewhere")
    model.add_object("cluster-2", "Namespace", "", "default")


async def test_cluster_resources_counts_follow_meshery_sql(model: Model, start: Any) -> None:
    populate(model)
    run = await start(
        "subscribeClusterResources", {"k8scontextIDs": ["cluster-1"], "namespace": "default"}
    )
    snapshot = await run.wait_for(1)
    assert snapshot[0] == {
        "resources": [
            {"kind": "ClusterRole", "count": 1},
            {"kind": "Namespace", "count": 2},
            {"kind": "Node", "count": 1},
            {"kind": "Pod", "count": 2},  # not istio-system's, not cluster-2's
            {"kind": "Service", "count": 1},
        ]
    }
    # A pod in another namespace or cluster changes nothing this subscriber sees.
    model.add_object("cluster-1", "Pod", "istio-system", "istiod-2")
    model.add_object("cluster-2", "Pod", "default", "elsewhere-2")
    await settle()
    assert len(run.items) == 1
    model.delete_object("cluster-1", "Pod", "default", "web-2")
    await run.wait_for(2)
    pods = [r for r in run.items[1]["resources"] if r["kind"] == "Pod"]
    assert pods == [{"kind": "Pod", "count": 1}]
    assert_fits("cluster_resources", run.items)


async def test_cluster_resources_spans_several_clusters_and_context_ids(
    model: Model, start: Any
) -> None:
    populate(model)
    context_two = model.contexts()[1]
    run = await start(
        "subscribeClusterResources",
        {"k8scontextIDs": ["cluster-1", context_two["id"]], "namespace": "default"},
    )
    counts = {r["kind"]: r["count"] for r in (await run.wait_for(1))[0]["resources"]}
    assert counts["Pod"] == 3
    assert counts["Namespace"] == 3


async def test_cluster_resources_with_ids_omitted_follow_the_callers_contexts(
    model: Model, start: Any
) -> None:
    """``k8scontextIDs`` is optional in the schema: omitted, it means the caller's clusters."""
    run = await start("subscribeClusterResources", {"namespace": "default"})
    assert (await run.wait_for(1))[0] == {"resources": []}  # no context yet
    add_cluster(model, "kind")
    model.add_object("cluster-1", "Pod", "default", "web")
    frames = await run.wait_for(2)
    assert {"kind": "Pod", "count": 1} in frames[-1]["resources"], frames


@pytest.mark.parametrize("ids", [[], [""]])
async def test_cluster_resources_without_clusters_is_an_error(
    model: Model, broker: RecordingBroker, start: Any, ids: Any
) -> None:
    run = await start("subscribeClusterResources", {"k8scontextIDs": ids, "namespace": "x"})
    await run.done.wait()
    assert isinstance(run.error, BadUserInput)
    assert "k8scontextIDs must list at least one cluster" in run.error.message
    assert run.items == []
    assert broker.subscriber_count(topics.CLUSTER_RESOURCES) == 0


# ---- subscribeK8sContext ----------------------------------------------------------


async def test_k8s_contexts_snapshot_then_changes(model: Model, start: Any) -> None:
    add_cluster(model, "kind")
    run = await start("subscribeK8sContext", {"selector": {**PAGE, "search": None, "order": None}})
    first = (await run.wait_for(1))[0]
    assert first["total_count"] == 1
    assert first["contexts"][0]["name"] == "kind"
    added = add_cluster(model, "minikube", "cluster-2")
    await run.wait_for(2)
    assert [c["name"] for c in run.items[1]["contexts"]] == ["minikube", "kind"]  # newest first
    model.delete_context(added["id"])
    await run.wait_for(3)
    assert run.items[2]["total_count"] == 1
    assert_fits("k8s_contexts", run.items)


async def test_k8s_contexts_search_and_order(model: Model, start: Any) -> None:
    for name in ("prod-east", "dev", "prod-west"):
        add_cluster(model, name, f"cluster-{name}")
    selector = {"page": "0", "pageSize": "1", "search": "PROD", "order": "name desc"}
    run = await start("subscribeK8sContext", {"selector": selector})
    page = (await run.wait_for(1))[0]
    assert page["total_count"] == 2
    assert [c["name"] for c in page["contexts"]] == ["prod-west"]
    # A change outside the search leaves this page as it was: nothing is sent.
    add_cluster(model, "staging", "cluster-staging")
    await settle()
    assert len(run.items) == 1


# ---- subscribeConfiguration -------------------------------------------------------


async def test_configuration_is_per_user_with_snapshot(model: Model, start: Any) -> None:
    model.save_pattern(ALICE.id, {"name": "bookinfo", "pattern_file": "name: bookinfo"})
    args = {"patternSelector": PAGE, "filterSelector": PAGE}
    alice = await start("subscribeConfiguration", args, user=ALICE)
    bob = await start("subscribeConfiguration", args, user=BOB)
    first = (await alice.wait_for(1))[0]
    assert first["applications"] is None
    assert [p["name"] for p in first["patterns"]["patterns"]] == ["bookinfo"]
    assert first["filters"] == {"page": 0, "page_size": 10, "total_count": 0, "filters": []}
    assert (await bob.wait_for(1))[0]["patterns"]["total_count"] == 0
    saved = model.save_filter(ALICE.id, {"name": "auth", "filter_file": "(module)"})
    await alice.wait_for(2)
    assert alice.items[1]["filters"]["filters"][0]["id"] == saved["id"]
    model.delete_pattern(ALICE.id, first["patterns"]["patterns"][0]["id"])
    await alice.wait_for(3)
    assert alice.items[2]["patterns"]["total_count"] == 0
    await settle()
    assert len(bob.items) == 1
    assert_fits("configuration", alice.items + bob.items)


# ---- subscribePerfProfiles / subscribePerfResults -------------------------------------


async def test_perf_profiles_have_no_snapshot(model: Model, start: Any) -> None:
    model.save_profile(LOCAL_USER.id, {"name": "existing"})
    run = await start("subscribePerfProfiles", {"selector": {**PAGE, "order": "name asc"}})
    assert run.items == []
    model.save_profile(LOCAL_USER.id, {"name": "another", "qps": 10})
    page = (await run.wait_for(1))[0]
    assert [p["name"] for p in page["profiles"]] == ["another", "existing"]
    assert page["total_count"] == 2
    assert_fits("perf_profiles", run.items)


async def test_perf_results_one_page_per_result_as_of_that_result(
    model: Model, start: Any, streamers: Any
) -> None:
    assert streamers["subscribePerfResults"].policy is Overflow.DROP_OLDEST
    profile = model.save_profile(LOCAL_USER.id, {"name": "soak"})
    other = model.save_profile(LOCAL_USER.id, {"name": "other"})
    model.record_result(LOCAL_USER.id, profile["id"], {"name": "old"})
    run = await start(
        "subscribePerfResults",
        {"selector": {**PAGE, "order": "created_at desc"}, "profileID": profile["id"]},
    )
    assert run.items == []
    for name in ("r1", "r2", "r3"):  # a burst with no checkpoint between results
        model.record_result(LOCAL_USER.id, profile["id"], {"name": name})
    model.record_result(LOCAL_USER.id, other["id"], {"name": "not mine"})
    pages = await run.wait_for(3)
    await settle()
    assert len(pages) == 3
    assert [p["total_count"] for p in pages] == [2, 3, 4]
    assert [p["results"][0]["name"] for p in pages] == ["r1", "r2", "r3"]
    assert_fits("perf_results", pages)


# ---- subscribeMeshModelSummary ----------------------------------------------------


async def test_meshmodel_summary_counts_distinct_versions(model: Model, start: Any) -> None:
    model.register_meshmodel("components", "kubernetes", "v1.29.0", "Pod")
    model.register_meshmodel("components", "kubernetes", "v1.29.0", "Service")
    model.register_meshmodel("relationships", "istio", "1.22", "edge")
    run = await start("subscribeMeshModelSummary", {"selector": {"type": "components"}})
    first = (await run.wait_for(1))[0]
    assert first == {"components": [{"name": "kubernetes", "count": 1}], "relationships": []}
    model.register_meshmodel("components", "kubernetes", "v1.30.0", "Pod")
    await run.wait_for(2)
    assert run.items[1]["components"] == [{"name": "kubernetes", "count": 2}]
    model.register_meshmodel("relationships", "istio", "1.23", "edge")
    await settle()
    assert len(run.items) == 2  # relationships are not this subscriber's selection
    assert_fits("meshmodel", run.items)


async def test_meshmodel_summary_rejects_unknown_type(start: Any) -> None:
    run = await start("subscribeMeshModelSummary", {"selector": {"type": "models"}})
    await run.done.wait()
    assert isinstance(run.error, BadUserInput)
    assert "components" in run.error.message


# ---- every streamer: bad pages, auth, cleanup -----------------------------------------

VALID_ARGS: dict[str, dict[str, Any]] = {
    "subscribePerfProfiles": {"selector": PAGE},
    "subscribePerfResults": {"selector": PAGE, "profileID": "p"},
    "subscribeMesheryControllersStatus": {},
    "subscribeConfiguration": {"patternSelector": PAGE, "filterSelector": PAGE},
    "subscribeClusterResources": {"k8scontextIDs": ["cluster-1"], "namespace": "default"},
    "subscribeK8sContext": {"selector": PAGE},
    "subscribeMeshModelSummary": {"selector": {"type": "components"}},
    "subscribeEvents": {},
}


@pytest.mark.parametrize("field", sorted(VALID_ARGS))
async def test_cancelling_a_streamer_unsubscribes_it(
    model: Model, broker: RecordingBroker, start: Any, field: str
) -> None:
    model.save_profile(LOCAL_USER.id, {"id": "p", "name": "the profile results need"})
    run = await start(field, VALID_ARGS[field])
    assert run.error is None
    assert sum(len(s) for s in broker._subscribers.values()) + broker.log_reader_count() == 1
    run.cancel()
    await run.done.wait()
    assert run.error is None
    assert broker._subscribers == {} and broker.log_reader_count() == 0


@pytest.mark.parametrize("field", ["subscribeConfiguration", "subscribeEvents"])
async def test_per_user_streamers_need_a_user(streamers: Any, field: str) -> None:
    from meshsub_trio import AuthError, Context

    with pytest.raises(AuthError):
        await streamers[field].fn(Context(), VALID_ARGS[field], lambda _: None)


@pytest.mark.parametrize(
    ("field", "arg"),
    [
        ("subscribePerfProfiles", "selector"),
        ("subscribePerfResults", "selector"),
        ("subscribeConfiguration", "patternSelector"),
        ("subscribeConfiguration", "filterSelector"),
        ("subscribeK8sContext", "selector"),
    ],
)
@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"page": "abc", "pageSize": "10"}, "page must be a non-negative whole number"),
        ({"page": "-1", "pageSize": "10"}, "page must be a non-negative whole number"),
        ({"page": "0", "pageSize": "0"}, "pageSize must be between 1 and 1000"),
        ({"page": "0", "pageSize": "100000"}, "pageSize must be between 1 and 1000"),
        ({"page": "0", "pageSize": "10", "order": "name sideways"}, "order must look like"),
        ({"page": "0", "pageSize": "10", "order": "colour asc"}, "cannot order by 'colour'"),
    ],
)
async def test_bad_pages_fail_before_subscribing(
    broker: RecordingBroker, start: Any, field: str, arg: str, selector: Any, message: str
) -> None:
    args = {**VALID_ARGS[field], arg: selector}
    run = await start(field, args)
    await run.done.wait()
    assert isinstance(run.error, BadUserInput), run.error
    assert message in run.error.message
    assert run.error.extensions == {"code": "BAD_USER_INPUT"}
    assert broker._subscribers == {}


class GatedBroker(MemoryBroker):
    """A broker whose subscribe takes a while before it is registered, like a
    network broker's round trip; the test decides when it completes."""

    def __init__(self) -> None:
        super().__init__()
        self.waiting = trio.Event()
        self.gate = trio.Event()

    @asynccontextmanager
    async def subscribe(
        self, topic: str, *, capacity: int = 256, policy: Overflow = Overflow.DROP_OLDEST
    ) -> AsyncIterator[Any]:
        self.waiting.set()
        await self.gate.wait()
        async with super().subscribe(topic, capacity=capacity, policy=policy) as buffer:
            yield buffer


@pytest.mark.parametrize(
    ("field", "args", "expected"),
    [
        ("subscribeK8sContext", {"selector": PAGE}, lambda v: v["total_count"] == 1),
        ("subscribeMesheryControllersStatus", {}, lambda v: len(v) == 3),
        (
            "subscribeClusterResources",
            {"k8scontextIDs": ["cluster-1"], "namespace": "default"},
            lambda v: v["resources"] == [{"kind": "Pod", "count": 1}],
        ),
    ],
)
async def test_a_change_during_a_slow_subscribe_is_in_the_snapshot(
    field: str, args: dict[str, Any], expected: Any
) -> None:
    """The snapshot is read after subscribing, so a change made while the
    subscription is being set up is never lost between the two."""
    from meshsub_trio import Context

    broker = GatedBroker()
    model = Model(broker)
    collector = Collector()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            make_streamers(model)[field].fn, Context(auth=LOCAL_USER), args, collector.emit
        )
        await broker.waiting.wait()
        add_cluster(model)  # while the subscription is not yet registered
        model.add_object("cluster-1", "Pod", "default", "web")
        broker.gate.set()
        await collector.wait_for(1)
        await settle()
        nursery.cancel_scope.cancel()
    assert expected(collector.items[-1]), collector.items
