"""The resume log's per-user shares, on the broker itself (no server).

What the security test shows over sockets, here in detail: the accounting is
exact whatever the traffic, a holder within its share never loses an entry to
another's writes, the bookkeeping stays proportional to what is retained, the
entries of no user are one share, and one user's forgotten topics never expire
another's cursors.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
import trio

from meshsub_trio.brokers import CursorExpired, Delivery
from meshsub_trio.meshery import topics
from meshsub_trio.meshery._model._quota import log_owner, size_of
from meshsub_trio.meshery._replication._resume_log import ResumeLogBroker

USERS = ("alice", "bob", "carol")


def event(user: str, pad: int) -> dict[str, Any]:
    return {"type": "event", "op": "append", "event": {"userID": user, "pad": "x" * pad}}


def random_entry(rng: random.Random) -> tuple[str, dict[str, Any]]:
    """A topic and message of one of the model's shapes: per-user topics, shared
    topics whose records name an owner (results on a profile id two users share
    included), and cluster state, which is no user's."""
    user, pad = rng.choice(USERS), rng.randrange(0, 300)
    kind = rng.randrange(5)
    if kind == 0:
        return topics.events(user), event(user, pad)
    if kind == 1:
        return topics.configuration(user), {
            "type": "pattern",
            "pattern": {"user_id": user, "p": "y" * pad},
        }
    if kind == 2:
        result = {"user_id": user, "performance_profile": "shared-id", "r": "z" * pad}
        return topics.perf_results(user, "shared-id"), {"type": "perf_result", "result": result}
    if kind == 3:
        return topics.PERF_PROFILES, {
            "type": "perf_profile",
            "op": "delete",
            "user_id": user,
            "id": "p" * pad,
        }
    return topics.CONTROLLERS, {"type": "controller", "item": {"status": "s" * pad}}


def retained(broker: ResumeLogBroker) -> dict[int, tuple[str, Any]]:
    return {e.seq: (topic, e.message) for topic, log in broker._logs.items() for e in log.entries}


def holdings(entries: dict[int, tuple[str, Any]]) -> Counter[str | None]:
    held: Counter[str | None] = Counter()
    for topic, message in entries.values():
        held[log_owner(topic, message)] += size_of(message)
    return held


@pytest.mark.parametrize("seed", range(4))
def test_accounting_is_exact_and_a_holder_within_its_share_keeps_its_entries(seed: int) -> None:
    rng = random.Random(seed)
    cap = 3000
    broker = ResumeLogBroker(log_capacity=6, log_bytes=cap)
    for _ in range(3000):
        topic, message = random_entry(rng)
        writer = log_owner(topic, message)
        before = retained(broker)
        held_before = holdings(before)
        log = broker._logs.get(topic)
        by_count = log.entries[0].seq if log is not None and len(log.entries) == 6 else None

        broker.publish(topic, message)

        after = retained(broker)
        held = holdings(after)
        assert broker.retained_bytes == sum(held.values()) <= cap
        assert broker.held_bytes() == {k: v for k, v in held.items() if v}
        holders = len(set(held_before) | {writer})
        for seq in before.keys() - after.keys() - {by_count}:
            loser = log_owner(*before[seq])
            # The cap took it: from the writer, or from a holder over its share.
            assert loser == writer or held_before[loser] * holders > cap, (seq, loser, writer)
    assert broker.evicted["over_share"] and broker.evicted["heaviest"]
    assert broker.evicted["topic_count"]


def test_the_bookkeeping_stays_proportional_to_what_is_retained() -> None:
    """Entries leaving by the count bound leave stale items behind; they must not
    pile up (one entry kept in one topic, a million rotating in another)."""
    broker = ResumeLogBroker(log_capacity=10, log_bytes=100_000)
    broker.publish(topics.events("alice"), event("alice", 10))
    for n in range(20_000):
        broker.publish(topics.configuration("alice"), {"n": n})
        broker.publish(topics.events(USERS[n % 3]), event(USERS[n % 3], 1))
    shares = broker._shares
    for owner, holder in shares._holders.items():
        assert holder.count == sum(
            1
            for topic, log in broker._logs.items()
            for e in log.entries
            if log_owner(topic, e.message) == owner
        )
        assert len(holder.seqs) <= 2 * holder.count + 64
    assert len(shares._heap) <= 2 * len(shares) + 64


async def replay(
    broker: ResumeLogBroker, topic: str, after: int, count: int
) -> list[Delivery[Any]]:
    got: list[Delivery[Any]] = []
    with trio.fail_after(5):
        async with broker.subscribe_log(topic, after=after) as log:
            while len(got) < count:
                got.append(await log.get())
    return got


async def test_the_entries_of_no_user_are_one_share_like_a_users() -> None:
    """A busy cluster feed (controllers, cluster objects: no user's) cannot push a
    user out, and a user's flood cannot push the cluster state out either."""
    broker = ResumeLogBroker(log_bytes=4000)
    broker.publish(topics.events("bob"), event("bob", 100))
    bob_cursor = broker.last_seq
    broker.publish(topics.events("bob"), event("bob", 100))
    for n in range(200):
        broker.publish(
            topics.CLUSTER_RESOURCES, {"type": "cluster_object", "object": {"name": f"pod-{n}"}}
        )
    [kept] = await replay(broker, topics.events("bob"), bob_cursor, 1)
    assert kept.seq == bob_cursor + 1
    assert broker.held_bytes()[None] * 2 > 4000  # over its share: it gave bob's room back
    for _ in range(200):
        broker.publish(topics.events("alice"), event("alice", 100))
    held, share, entry = broker.held_bytes(), 4000 // 3, size_of(event("alice", 100))
    # alice took her share from the heaviest (the cluster feed), then paid herself.
    assert share - entry < held["alice"] <= share + entry
    assert held[None] >= share
    assert held["bob"] == 2 * size_of(event("bob", 100))
    assert broker.evicted["heaviest"] and broker.evicted["over_share"]


async def test_a_users_forgotten_topics_do_not_expire_another_users_cursors() -> None:
    broker = ResumeLogBroker(log_bytes=1000)
    # bob's topic is emptied by bob's own oversized event, after he got it live.
    async with broker.subscribe_log(topics.events("bob")) as live:
        broker.publish(topics.events("bob"), event("bob", 1200))
        bob_cursor = (await live.get()).seq
    assert topics.events("bob") not in broker._logs  # forgotten
    # alice's topics are emptied and forgotten again and again, later.
    for _ in range(5):
        broker.publish(topics.configuration("alice"), {"pad": "x" * 1200})
        broker.publish(topics.events("alice"), event("alice", 1200))
    assert broker.forgotten_upto > bob_cursor
    # bob saw everything of his: resuming loses nothing, so it is no expiry.
    async with broker.subscribe_log(topics.events("bob"), after=bob_cursor) as resumed:
        broker.publish(topics.events("bob"), event("bob", 10))
        with trio.fail_after(5):
            assert (await resumed.get()).seq == broker.last_seq
    # A cursor from before what bob lost still expires.
    with pytest.raises(CursorExpired):
        await replay(broker, topics.events("bob"), bob_cursor - 1, 1)


def result(user: str, profile: str, pad: int) -> dict[str, Any]:
    fields = {"user_id": user, "performance_profile": profile, "meshery_id": "m", "pad": "x" * pad}
    return {"type": "perf_result", "op": "append", "result": fields}


async def test_a_users_forgotten_results_topic_does_not_expire_another_users() -> None:
    """Results topics are named after their owner (``meshery.perf_results.<user>.
    <profile>``), so their floors are the owner's too: alice's forgotten results
    never raise the floor bob's forgotten results topic reopens with."""
    broker = ResumeLogBroker(log_bytes=3000)
    bobs = topics.perf_results("bob", "pb")
    broker.publish(bobs, result("bob", "pb", 200))
    bob_cursor = broker.last_seq
    for _ in range(12):  # bob's own writes push his result out: his topic is forgotten
        broker.publish(topics.events("bob"), event("bob", 200))
    assert bobs not in broker._logs
    async with broker.subscribe_log(bobs, after=bob_cursor):
        pass  # he saw his result: resuming after it loses nothing
    broker.publish(topics.perf_results("alice", "pa"), result("alice", "pa", 200))
    for _ in range(12):
        broker.publish(topics.events("alice"), event("alice", 200))
    assert topics.perf_results("alice", "pa") not in broker._logs
    assert broker.forgotten_upto > bob_cursor
    async with broker.subscribe_log(bobs, after=bob_cursor) as resumed:
        broker.publish(bobs, result("bob", "pb", 10))
        with trio.fail_after(5):
            assert (await resumed.get()).seq == broker.last_seq
    with pytest.raises(CursorExpired):  # from before what bob lost, it still expires
        await replay(broker, bobs, bob_cursor - 1, 1)


def test_a_results_topics_name_tells_its_owner() -> None:
    assert log_owner(topics.perf_results("bob", "p.1"), None) == "bob"
    assert log_owner(topics.events("bob"), None) == "bob"
    assert log_owner(topics.PERF_PROFILES, None) is None
    assert log_owner("meshery.perf_results.legacy-profile", None) is None


def test_a_restore_is_counted_per_holder() -> None:
    """Entries put into the log directly (a database restoring it) are counted
    by adopt(), each against its holder, and trimmed heaviest first."""
    broker = ResumeLogBroker(log_bytes=2000)
    for _ in range(10):
        broker.publish(topics.events("alice"), event("alice", 100))
    broker.publish(topics.events("bob"), event("bob", 100))
    restored = ResumeLogBroker(log_bytes=1000)
    restored._logs = broker._logs
    restored.last_seq = broker.last_seq
    restored.adopt()
    assert restored.retained_bytes <= 1000
    assert restored.held_bytes()["bob"] == size_of(event("bob", 100))
    assert restored.evicted["heaviest"] > 0 and restored.evicted["over_share"] == 0


async def test_record_keeps_a_shared_logs_sequences() -> None:
    """A replica's own history of a shared log: entries keep the shared sequences,
    with gaps; a cursor resumes exactly, a sequence going back is refused."""
    broker = ResumeLogBroker(log_bytes=10_000)
    broker.record(topics.events("bob"), 5, event("bob", 1))
    broker.record(topics.events("alice"), 9, event("alice", 1))
    broker.record(topics.events("bob"), 12, event("bob", 2))
    got = await replay(broker, topics.events("bob"), 5, 1)
    assert [(d.seq, d.message["event"]["pad"]) for d in got] == [(12, "xx")]
    assert broker.last_seq == 12 and broker.held_bytes()["bob"] > 0
    with pytest.raises(ValueError, match="not after 12"):
        broker.record(topics.events("bob"), 12, event("bob", 3))


def test_entries_put_in_behind_its_back_are_counted_before_the_next_write() -> None:
    """The guard for a log filled directly (as a restore does) without adopt():
    the next write recounts first, and the recount may trim that very topic away;
    the write then starts it again above its floor, so an old cursor expires."""
    donor = ResumeLogBroker()
    donor.publish(topics.events("alice"), event("alice", 1200))
    lost = donor.last_seq
    broker = ResumeLogBroker(log_bytes=1000)
    broker._logs = donor._logs
    broker.last_seq = donor.last_seq
    broker.publish(topics.events("alice"), event("alice", 10))
    assert broker._logs[topics.events("alice")].evicted_upto == lost
    held = holdings(retained(broker))
    assert broker.held_bytes() == {k: v for k, v in held.items() if v}
    assert broker.retained_bytes == sum(held.values()) <= 1000
