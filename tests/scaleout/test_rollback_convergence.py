"""Replicas converge when the log refuses some changes, whatever the interleaving.

As in test_convergence.py, each replica is a Model on a ReplicatedBus over a
fake shared broker, and Hypothesis picks the interleaving; here the broker
also hands out tickets, and the log may *refuse* a change instead of
storing it (as a full JetStream stream does). A replica learns of a refusal
from a flush, from its sweep, or from a later own change coming back
without it; it may also give up on a change not yet answered (a sweep after
the flush timeout), which may then still reach the log. The ground truth is
a fresh replica that applies the finished log: every replica must end
there, with nothing pending.
"""

from __future__ import annotations

import json
import math
from collections import deque
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsub_trio.brokers import ConnectionState, Delivery
from meshsub_trio.meshery import BrokerUnavailable, Model, ReplicatedBus

from ..meshery.conftest import counting_ids, ticking_clock
from .test_convergence import KINDS, USER, change, state


class TicketedShared:
    """A shared broker whose log stores, or refuses, each change when the test says."""

    state = ConnectionState.CONNECTED

    def __init__(self) -> None:
        self.outbox: deque[tuple[int, dict[str, Any]]] = deque()
        self.tickets = 0
        self.settled_through = 0
        self.listeners: list[Callable[[int, str | None], None]] = []

    def publish(self, topic: str, envelope: Any, *, stored: bool = False) -> int:
        assert stored and envelope["topic"] == topic
        self.tickets += 1
        self.outbox.append((self.tickets, json.loads(json.dumps(envelope))))
        return self.tickets

    def next_out(self, *, refuse: bool) -> dict[str, Any] | None:
        """The oldest unsent change, answered: stored (returned) or refused (None)."""
        ticket, envelope = self.outbox.popleft()
        for listener in self.listeners:  # as NatsBroker: before settled_through moves
            listener(ticket, "maximum messages exceeded" if refuse else None)
        self.settled_through = ticket
        return None if refuse else envelope

    def on_settled(self, callback: Callable[[int, str | None], None]) -> None:
        self.listeners.append(callback)

    async def wait_settled(self, ticket: int) -> None:
        if self.settled_through < ticket:
            await trio.sleep_forever()  # no answer yet: the flush times out


class Replica:
    def __init__(self, name: str) -> None:
        self.shared = TicketedShared()
        self.bus = ReplicatedBus(self.shared, origin=name)  # type: ignore[arg-type]
        self.model = Model(self.bus, now=ticking_clock(), new_id=counting_ids(name), system_id=name)
        self.bus.attach(self.model)
        self.delivered = 0

    def sweep(self, cutoff: float) -> None:
        assert self.bus._confirms is not None
        self.bus._confirms.sweep_once(cutoff)

    def flush(self) -> str:
        """The bus's flush, its timeout passing at once when no answer is due."""

        async def run() -> str:
            try:
                await self.bus.flush()
            except BrokerUnavailable as error:
                return type(error).__name__
            return "ok"

        return trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))


def run_story(story: list[tuple[Any, ...]]) -> tuple[list[Replica], list[Delivery[Any]]]:
    replicas = [Replica(f"r{i}") for i in range(3)]
    log: list[Delivery[Any]] = []

    def send(replica: Replica, refuse: bool) -> None:
        if replica.shared.outbox:
            envelope = replica.shared.next_out(refuse=refuse)
            if envelope is not None:
                log.append(Delivery(len(log) + 1, envelope))

    for step in story:
        replica = replicas[step[1]]
        if step[0] == "change":
            change(replica.model, *step[2:])
        elif step[0] in ("ship", "refuse"):
            send(replica, refuse=step[0] == "refuse")
        elif step[0] == "flush":
            replica.flush()
        elif step[0] == "give_up":  # the sweep, once the flush timeout has passed
            replica.sweep(cutoff=math.inf)
        elif replica.delivered < len(log):
            replica.bus._on_entry(log[replica.delivered])
            replica.delivered += 1
    while any(r.shared.outbox for r in replicas):
        for replica in replicas:
            send(replica, refuse=False)
    for replica in replicas:
        while replica.delivered < len(log):
            replica.bus._on_entry(log[replica.delivered])
            replica.delivered += 1
        replica.sweep(cutoff=-math.inf)  # the last refusals
    return replicas, log


steps = st.lists(
    st.one_of(
        st.tuples(
            st.just("change"),
            st.integers(0, 2),
            st.sampled_from(KINDS),
            st.integers(0, 1),
            st.integers(0, 9),
        ),
        st.tuples(
            st.sampled_from(["ship", "refuse", "deliver", "flush", "give_up"]), st.integers(0, 2)
        ),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps)
def test_replicas_converge_when_the_log_refuses_changes(story: list[tuple[Any, ...]]) -> None:
    replicas, log = run_story(story)
    late = Replica("late")
    for entry in log:
        late.bus._on_entry(entry)
    truth = state(late.model)
    for replica in replicas:
        assert state(replica.model) == truth
        stats = replica.bus.stats()
        assert stats["pending"] == 0 and stats["apply_errors"] == 0
        assert replica.model.stored_bytes(USER) == late.model.stored_bytes(USER)


def test_a_refused_change_is_taken_back_by_the_flush_that_reports_it() -> None:
    replica = Replica("r0")
    replica.model.save_pattern(USER, {"id": "p", "name": "old", "pattern_file": "x"})
    log = [Delivery(1, replica.shared.next_out(refuse=False))]
    replica.bus._on_entry(log[0])
    replica.model.save_pattern(USER, {"id": "p", "name": "new", "pattern_file": "x"})
    assert replica.model.patterns_of(USER)[0]["name"] == "new"  # read-your-writes
    replica.shared.next_out(refuse=True)
    assert replica.flush() == "BrokerUnavailable"
    assert [p["name"] for p in replica.model.patterns_of(USER)] == ["old"]
    assert replica.bus.stats()["rolled_back"] == 1 and replica.bus.stats()["pending"] == 0


@pytest.mark.parametrize("answered", [False, True], ids=["never-answered", "stored-late"])
def test_an_unconfirmed_change_is_taken_back_and_applied_if_it_lands(answered: bool) -> None:
    replica = Replica("r0")
    replica.model.save_pattern(USER, {"id": "p", "name": "late", "pattern_file": "x"})
    assert replica.flush() == "ChangeUnconfirmed"
    assert replica.model.patterns_of(USER) == []
    if answered:  # it reached the log after all: applied from there, like everywhere
        replica.bus._on_entry(Delivery(1, replica.shared.next_out(refuse=False)))
        assert [p["name"] for p in replica.model.patterns_of(USER)] == ["late"]
    assert replica.bus.stats()["pending"] == 0
