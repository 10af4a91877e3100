"""The model: messages carry whole records, replicas converge, cascades, ownership."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshsub_trio.meshery import LOCAL_USER, Model, topics

from .conftest import ALICE, BOB, RecordingBroker, counting_ids, ticking_clock


def exercise(model: Model) -> None:
    """A bit of everything the model can do."""
    context = model.upsert_context(
        {"name": "kind", "server": "https://k:6443", "kubernetes_server_id": "c1"},
        owner=LOCAL_USER.id,
    )
    model.upsert_context({"id": context["id"], "name": "kind-renamed", "server": "https://k:6443"},
                         owner=BOB.id)  # fmt: skip
    model.set_controller_status(context["connection_id"], "BROKER", "CONNECTED", "2.10")
    model.add_object("c1", "Namespace", "", "default")
    model.add_object("c1", "Pod", "default", "web")
    model.delete_object("c1", "Pod", "default", "web")
    pattern = model.save_pattern(ALICE.id, {"name": "design", "pattern_file": "x"})
    model.save_pattern(ALICE.id, {"id": pattern["id"], "name": "design v2", "pattern_file": "y"})
    model.save_filter(BOB.id, {"name": "filter", "filter_file": "(module)"})
    profile = model.save_profile(ALICE.id, {"name": "soak", "qps": 5})
    model.record_result(ALICE.id, profile["id"], {"runner_results": {"p50": 1.5}})
    model.register_meshmodel("components", "kubernetes", "v1", "Pod")
    model.publish_event(ALICE.id, {"severity": "alert", "description": "hi", "metadata": {}})
    doomed = model.upsert_context({"name": "gone", "server": "https://g"}, owner=ALICE.id)
    model.add_object(doomed["kubernetes_server_id"], "Node", "", "n1")
    model.delete_context(doomed["id"])


def state(model: Model) -> dict[str, Any]:
    profile_ids = [p["id"] for p in model.profiles()]
    return {
        "contexts": model.contexts(),
        "controllers": model.controller_items(),
        "objects": {c: model.objects(c) for c in ("c1", "missing")},
        "patterns": {u: model.patterns_of(u) for u in (ALICE.id, BOB.id)},
        "filters": {u: model.filters_of(u) for u in (ALICE.id, BOB.id)},
        "profiles": model.profiles(),
        "results": {p: model.results_of(p) for p in profile_ids},
        "meshmodel": model.meshmodel_summary("components"),
        "events": model.events_of(ALICE.id),
        "users": sorted(model.users),
    }


def test_messages_are_json_and_rebuild_the_state_elsewhere(broker: RecordingBroker) -> None:
    model = Model(broker, now=ticking_clock(), new_id=counting_ids(), system_id="s")
    exercise(model)
    replica = Model(RecordingBroker(), system_id="s")
    for _topic, message in broker.log:
        replica.apply(json.loads(json.dumps(message)))  # as a NATS hop would carry it
    assert state(replica) == state(model)
    assert replica.broker.log == []  # applying never re-publishes


def test_every_message_names_its_type_and_op(broker: RecordingBroker, model: Model) -> None:
    exercise(model)
    seen = {(topic.split(".")[1], m["type"], m["op"]) for topic, m in broker.log}
    assert seen == {
        ("k8s_contexts", "k8s_context", "upsert"),
        ("k8s_contexts", "k8s_context", "delete"),
        ("controllers", "controller", "upsert"),
        ("controllers", "controller", "delete"),
        ("cluster_resources", "cluster_object", "upsert"),
        ("cluster_resources", "cluster_object", "delete"),
        ("cluster_resources", "cluster_object", "clear"),
        ("configuration", "pattern", "upsert"),
        ("configuration", "filter", "upsert"),
        ("perf_profiles", "perf_profile", "upsert"),
        ("perf_results", "perf_result", "append"),
        ("meshmodel", "meshmodel", "register"),
        ("events", "event", "append"),
    }


def test_topics_are_scoped_by_user_and_profile(broker: RecordingBroker, model: Model) -> None:
    model.save_pattern(ALICE.id, {"name": "a", "pattern_file": ""})
    model.publish_event(BOB.id, {"severity": "debug", "description": "d"})
    profile = model.save_profile(ALICE.id, {"name": "p"})
    model.record_result(ALICE.id, profile["id"], {})
    assert broker.topics() == [
        topics.configuration(ALICE.id),
        topics.events(BOB.id),
        topics.PERF_PROFILES,
        topics.perf_results(ALICE.id, profile["id"]),
        topics.PERF_PROFILES,  # the profile's run count and last run
    ]
    assert topics.configuration("u") == "meshery.configuration.u"
    assert topics.events("u") == "meshery.events.u"
    assert topics.perf_results("u", "p") == "meshery.perf_results.u.p"


def test_unchanged_writes_publish_nothing(broker: RecordingBroker, model: Model) -> None:
    context = model.upsert_context({"name": "k", "server": "s"}, owner=ALICE.id)
    before = len(broker.log)
    model.set_controller_status(context["connection_id"], "BROKER", "NOTDEPLOYED")
    assert model.add_object("c", "Pod", "ns", "p") is True
    assert model.add_object("c", "Pod", "ns", "p") is False
    assert model.delete_object("c", "Pod", "ns", "missing") is False
    assert model.register_meshmodel("components", "m", "v1") is True
    assert model.register_meshmodel("components", "m", "v1") is False
    assert len(broker.log) == before + 2


def test_new_connection_starts_with_three_undeployed_controllers(model: Model) -> None:
    context = model.upsert_context({"name": "k", "server": "s"}, owner=ALICE.id)
    assert context["connection_id"] == context["id"] == context["kubernetes_server_id"]
    assert [(i["controller"], i["status"]) for i in model.controller_items()] == [
        ("BROKER", "NOTDEPLOYED"),
        ("OPERATOR", "NOTDEPLOYED"),
        ("MESHSYNC", "NOTDEPLOYED"),
    ]


def test_updating_a_context_keeps_creation_and_owner(model: Model) -> None:
    first = model.upsert_context({"id": "ctx", "name": "a", "server": "s"}, owner=ALICE.id)
    # Only its owner updates a context: the same id from Bob is Bob's own context.
    bobs = model.upsert_context({"id": "ctx", "name": "bob's", "server": "s"}, owner=BOB.id)
    second = model.upsert_context({"id": "ctx", "name": "b", "server": "s"}, owner=ALICE.id)
    assert second["created_at"] == first["created_at"]
    assert second["updated_at"] > first["updated_at"]
    assert second["owner"] == ALICE.id
    assert len(model.contexts(ALICE.id)) == 1
    assert bobs["owner"] == BOB.id and model.context("ctx", BOB.id) == bobs
    assert model.context("ctx", ALICE.id) == second


def test_deleting_a_context_keeps_what_other_contexts_still_use(model: Model) -> None:
    shared = {"server": "s", "kubernetes_server_id": "cluster", "connection_id": "conn"}
    one = model.upsert_context({"name": "one", **shared}, owner=ALICE.id)
    two = model.upsert_context({"name": "two", **shared}, owner=ALICE.id)
    model.add_object("cluster", "Pod", "default", "web")
    model.delete_context(one["id"])
    assert model.objects("cluster") and model.controller_items({"conn"})
    model.delete_context(two["id"])
    assert model.objects("cluster") == [] and model.controller_items({"conn"}) == []
    assert model.delete_context(two["id"]) is False


def test_resource_counts_union_cluster_scoped_namespace_and_namespaces(model: Model) -> None:
    model.add_object("c", "Namespace", "", "default")
    model.add_object("c", "Namespace", "", "kube-system")
    model.add_object("c", "Node", "", "n")
    model.add_object("c", "Pod", "default", "p1")
    model.add_object("c", "Pod", "kube-system", "p2")
    model.add_object("c", "ConfigMap", "kube-system", "cm")
    assert model.count_resources({"c"}, "kube-system") == [
        {"kind": "ConfigMap", "count": 1},
        {"kind": "Namespace", "count": 2},
        {"kind": "Node", "count": 1},
        {"kind": "Pod", "count": 1},
    ]
    assert model.count_resources({"c"}, "") == [
        {"kind": "Namespace", "count": 2},
        {"kind": "Node", "count": 1},
    ]
    assert model.count_resources({"other"}, "default") == []
    assert model.namespaces() == ["default", "kube-system"]


def test_namespace_objects_must_be_cluster_scoped(model: Model) -> None:
    with pytest.raises(ValueError, match="cluster-scoped"):
        model.add_object("c", "Namespace", "default", "nested")


def test_meshmodel_summary_counts_versions_not_entries(model: Model) -> None:
    for version, name in (("v1", "Pod"), ("v1", "Service"), ("v2", "Pod"), ("v3", "Pod")):
        model.register_meshmodel("components", "kubernetes", version, name)
    model.register_meshmodel("components", "istio", "1.0", "Gateway")
    model.register_meshmodel("relationships", "kubernetes", "v9", "edge")
    assert model.meshmodel_summary("components") == [
        {"name": "istio", "count": 1},
        {"name": "kubernetes", "count": 3},
    ]
    assert model.meshmodel_summary("relationships") == [{"name": "kubernetes", "count": 1}]


def test_users_cannot_touch_each_others_designs_or_profiles(model: Model) -> None:
    # Ids are per owner: Alice's id names nothing of Bob's, exactly like a
    # missing id (saving creates Bob's own record, deleting finds nothing),
    # so Bob can neither change Alice's records nor learn that they exist.
    pattern = model.save_pattern(ALICE.id, {"name": "mine", "pattern_file": ""})
    bobs = model.save_pattern(BOB.id, {"id": pattern["id"], "name": "stolen", "pattern_file": ""})
    assert bobs["user_id"] == BOB.id and model.patterns_of(ALICE.id) == [pattern]
    assert model.delete_pattern(BOB.id, pattern["id"]) is True  # Bob's own
    assert model.delete_pattern(BOB.id, pattern["id"]) is False
    assert model.patterns_of(ALICE.id) == [pattern]
    profile = model.save_profile(ALICE.id, {"name": "p"})
    model.save_profile(BOB.id, {"id": profile["id"], "name": "q"})
    assert model.profile(profile["id"], ALICE.id) == profile
    with pytest.raises(ValueError, match="no performance profile"):
        model.record_result(BOB.id, "missing", {})
    assert model.patterns_of(BOB.id) == []
    assert model.delete_pattern(ALICE.id, "missing") is False


def test_results_update_their_profile_and_are_capped(broker: RecordingBroker) -> None:
    model = Model(broker, results_per_profile=3)
    profile = model.save_profile(ALICE.id, {"name": "p"})
    results = [model.record_result(ALICE.id, profile["id"], {"name": str(n)}) for n in range(5)]
    assert [r["name"] for r in model.results_of(profile["id"])] == ["2", "3", "4"]
    assert model.profile(profile["id"])["total_results"] == 5
    assert model.profile(profile["id"])["last_run"] == results[-1]["created_at"]
    assert model.result(results[0]["meshery_id"]) is None
    assert model.result(results[4]["meshery_id"]) == results[4]
    with pytest.raises(ValueError, match="no performance profile"):
        model.record_result(ALICE.id, "missing", {})


def test_deleting_a_profile_drops_its_results(model: Model) -> None:
    profile = model.save_profile(ALICE.id, {"name": "p"})
    model.record_result(ALICE.id, profile["id"], {})
    assert model.delete_profile(ALICE.id, profile["id"]) is True
    assert model.results_of(profile["id"]) == [] and model.all_results() == []


def test_events_keep_a_bounded_history(broker: RecordingBroker) -> None:
    model = Model(broker, event_history=2)
    for n in range(4):
        model.publish_event(ALICE.id, {"severity": "debug", "description": str(n)})
    assert [e["description"] for e in model.events_of(ALICE.id)] == ["2", "3"]
    assert ALICE.id in model.users


def test_event_fields_default_sensibly(model: Model) -> None:
    event = model.publish_event(ALICE.id, {"severity": "warning", "description": "d"})
    assert event["userID"] == ALICE.id
    assert event["systemID"] == "system-1"
    assert event["createdAt"].endswith("Z") and event["deletedAt"] is None
    assert all(isinstance(event[k], str) for k in ("action", "status", "category", "actedUpon"))
    with pytest.raises(ValueError):
        model.publish_event(ALICE.id, {"severity": "debug", "createdAt": "not a time"})


def test_apply_rejects_unknown_messages(model: Model) -> None:
    with pytest.raises(ValueError, match="unknown message type"):
        model.apply({"type": "nonsense", "op": "upsert"})
