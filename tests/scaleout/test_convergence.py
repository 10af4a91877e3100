"""Replicas converge whatever the interleaving: the replication logic without a network.

Each replica is a Model on a ReplicatedBus whose shared broker is a fake: an
outbox per replica, and one log that the test fills by choosing which outbox
to ship from next, and delivers to each replica whenever it likes. Hypothesis
picks the interleavings; a small key space makes concurrent writes to the
same record (the case that breaks "skip your own echo") the common case.
The ground truth is a fresh replica that applies the finished log from the
start, as a late process does.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsub_trio.brokers import BrokerClosed, ConnectionState, Delivery, PublishQueueFull
from meshsub_trio.meshery import BrokerUnavailable, Model, ReplicatedBus, topics

from ..meshery.conftest import counting_ids, ticking_clock

USER = "u"
CLUSTER = "c1"


class FakeShared:
    """A shared broker that queues envelopes until the test ships them to the log."""

    state = ConnectionState.CONNECTED

    def __init__(self) -> None:
        self.outbox: deque[dict[str, Any]] = deque()
        self.refuse: Exception | None = None

    def publish(self, topic: str, envelope: Any) -> None:
        if self.refuse is not None:
            raise self.refuse
        assert envelope["topic"] == topic
        self.outbox.append(json.loads(json.dumps(envelope)))  # as a NATS hop carries it


class Replica:
    def __init__(self, name: str) -> None:
        self.shared = FakeShared()
        self.bus = ReplicatedBus(self.shared, origin=name)
        self.model = Model(self.bus, now=ticking_clock(), new_id=counting_ids(name), system_id=name)
        self.bus.attach(self.model)
        self.delivered = 0

    def deliver(self, log: list[Delivery[Any]]) -> None:
        entry = log[self.delivered]
        self.delivered += 1
        self.bus._on_entry(entry)


def state(model: Model) -> dict[str, Any]:
    """Every record, and the order of appends (events, results per profile).

    The order in which a process first inserted keyed records may differ from
    the log's (an own insert is applied before the echo of an earlier foreign
    one); nothing exposes it: pages are sorted, ties broken by id.
    """
    profile_ids = sorted(p["id"] for p in model.profiles())
    return {
        "contexts": sorted(model.contexts(), key=lambda c: c["id"]),
        "controllers": model.controller_items(),
        "objects": sorted(model.objects(CLUSTER), key=lambda o: o["name"]),
        "patterns": sorted(model.patterns_of(None), key=lambda p: p["id"]),
        "profiles": sorted(model.profiles(), key=lambda p: p["id"]),
        "results": {p: model.results_of(p) for p in profile_ids},
        "meshmodel": model.meshmodel_summary("components"),
        "events": model.events_of(USER),
        "users": sorted(model.users),
    }


def change(model: Model, kind: str, key: int, value: int) -> None:
    """One local change; *key* picks among few records so that writes collide."""
    name = f"k{key}"
    if kind == "pattern":
        model.save_pattern(USER, {"id": name, "name": f"v{value}", "pattern_file": "x"})
    elif kind == "delete_pattern":
        model.delete_pattern(USER, name)
    elif kind == "controller":
        controller = ("BROKER", "OPERATOR")[value % 2]
        model.set_controller_status(name, controller, ("DEPLOYED", "RUNNING")[key % 2], f"v{value}")
    elif kind == "drop_controllers":  # what deleting a context's last reference publishes
        model._commit(
            topics.CONTROLLERS, {"type": "controller", "op": "delete", "connectionID": name}
        )
    elif kind == "object":
        model.add_object(CLUSTER, "Pod", "default", name)
    elif kind == "delete_object":
        model.delete_object(CLUSTER, "Pod", "default", name)
    elif kind == "clear":
        model._commit(
            topics.CLUSTER_RESOURCES,
            {"type": "cluster_object", "op": "clear", "cluster_id": CLUSTER},
        )
    elif kind == "event":
        model.publish_event(USER, {"severity": "informational", "description": f"{name}/{value}"})
    elif kind == "profile":
        model.save_profile(USER, {"id": name, "name": f"v{value}", "qps": value})
    elif kind == "delete_profile":
        model.delete_profile(USER, name)
    elif kind == "result":
        if model.profile(name) is not None:
            model.record_result(USER, name, {"name": f"run {value}"})
    elif kind == "meshmodel":
        model.register_meshmodel("components", "kubernetes", f"v{value % 3}", name)
    elif kind == "context":
        model.upsert_context(
            {"id": name, "name": f"v{value}", "server": "https://k", "connection_id": name},
            owner=USER,
        )
    elif kind == "delete_context":
        model.delete_context(name)


KINDS = ["pattern", "delete_pattern", "controller", "drop_controllers", "object", "delete_object",
         "clear", "event", "profile", "delete_profile", "result", "meshmodel", "context",
         "delete_context"]  # fmt: skip

steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("change"),
            st.integers(0, 2),
            st.sampled_from(KINDS),
            st.integers(0, 1),
            st.integers(0, 9),
        ),
        st.tuples(st.just("ship"), st.integers(0, 2)),
        st.tuples(st.just("deliver"), st.integers(0, 2)),
    ),
    max_size=60,
)


def run_story(story: list[tuple[Any, ...]]) -> tuple[list[Replica], list[Delivery[Any]]]:
    replicas = [Replica(f"r{i}") for i in range(3)]
    log: list[Delivery[Any]] = []

    def ship(replica: Replica) -> None:
        if replica.shared.outbox:
            log.append(Delivery(len(log) + 1, replica.shared.outbox.popleft()))

    for step in story:
        replica = replicas[step[1]]
        if step[0] == "change":
            change(replica.model, *step[2:])
        elif step[0] == "ship":
            ship(replica)
        elif replica.delivered < len(log):
            replica.deliver(log)
    while any(r.shared.outbox for r in replicas):
        for replica in replicas:
            ship(replica)
    for replica in replicas:
        while replica.delivered < len(log):
            replica.deliver(log)
    return replicas, log


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_replicas_converge_on_the_log_order(story: list[tuple[Any, ...]]) -> None:
    replicas, log = run_story(story)
    late = Replica("late")
    for entry in log:
        late.bus._on_entry(entry)
    truth = state(late.model)
    for replica in replicas:
        assert state(replica.model) == truth
        assert replica.bus.stats()["pending"] == 0
        assert replica.bus.stats()["lost_own"] == 0
        assert replica.bus.stats()["apply_errors"] == 0


def test_concurrent_writes_to_one_record_agree() -> None:
    """The case a replica that skips its own echo gets wrong: both write, each
    sees the other's write after its own, yet both must end on the log's last."""
    replicas, log = run_story([
        ("change", 0, "pattern", 1, 1),
        ("change", 1, "pattern", 1, 2),
        ("ship", 0), ("ship", 1),
        ("deliver", 0), ("deliver", 1), ("deliver", 0), ("deliver", 1),
    ])  # fmt: skip
    assert [e.message["origin"] for e in log] == ["r0", "r1"]
    names = {r.model.patterns_of(USER)[0]["name"] for r in replicas}
    assert names == {"v2"}  # r1's write is last in the log, everywhere
    assert replicas[1].bus.rebases == 1  # r0's write arrived over r1's pending one


def test_own_write_is_read_at_once_and_appends_wait_for_the_log() -> None:
    replica = Replica("r0")
    pattern = replica.model.save_pattern(USER, {"name": "d", "pattern_file": "x"})
    assert replica.model.patterns_of(USER) == [pattern]  # read-your-writes
    event = replica.model.publish_event(USER, {"severity": "alert", "description": "e"})
    assert replica.model.events_of(USER) == []  # appends take their place in the log first
    log = [Delivery(n + 1, env) for n, env in enumerate(replica.shared.outbox)]
    for entry in log:
        replica.bus._on_entry(entry)
    assert replica.model.events_of(USER) == [event]
    assert replica.bus.stats()["confirmed"] == 1 and replica.bus.stats()["pending"] == 0


@pytest.mark.parametrize("refusal", [PublishQueueFull(10, 100), BrokerClosed("closed")])
def test_a_refused_change_is_not_applied(refusal: Exception) -> None:
    replica = Replica("r0")
    replica.shared.refuse = refusal
    with pytest.raises(BrokerUnavailable, match="broker unavailable, change not accepted"):
        replica.model.save_pattern(USER, {"name": "d", "pattern_file": "x"})
    assert replica.model.patterns_of(USER) == []
    assert replica.bus.stats()["pending"] == 0
    replica.shared.refuse = None
    replica.model.save_pattern(USER, {"name": "d", "pattern_file": "x"})  # numbering continues
    replica.bus._on_entry(Delivery(1, replica.shared.outbox.popleft()))
    assert replica.bus.stats() | {} == replica.bus.stats() and replica.bus.lost_own == 0


def test_an_own_change_that_never_reaches_the_log_is_counted() -> None:
    replica = Replica("r0")
    replica.model.save_pattern(USER, {"id": "a", "name": "a", "pattern_file": "x"})
    replica.model.save_pattern(USER, {"id": "b", "name": "b", "pattern_file": "x"})
    replica.shared.outbox.popleft()  # lost between this process and the log
    replica.bus._on_entry(Delivery(1, replica.shared.outbox.popleft()))
    assert replica.bus.lost_own == 1 and replica.bus.stats()["pending"] == 0


def test_entries_that_are_not_envelopes_are_ignored() -> None:
    replica = Replica("r0")
    replica.bus._on_entry(Delivery(1, {"type": "event"}))
    replica.bus._on_entry(Delivery(2, "junk"))
    assert replica.bus.ignored == 2 and replica.bus.applied == 0
