"""The embedded database on its own, without sockets: what it keeps, how it
trims, when a flush returns, and how it refuses what it cannot make durable."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from meshsub_trio.meshery import StoreUnavailable, topics
from meshsub_trio.meshery._storage._store import DB_NAME, Store
from meshsub_trio.meshery._storage._tables import Retention

SOON = 10.0


def event(user: str, n: int) -> dict[str, Any]:
    return {"type": "event", "op": "append", "event": {"id": f"e{n}", "userID": user, "n": n}}


def result(profile: str, n: int) -> dict[str, Any]:
    body = {"meshery_id": f"r{n}", "performance_profile": profile, "user_id": "u"}
    return {"type": "perf_result", "op": "append", "seq": n, "result": body}


def pattern(pattern_id: str, name: str) -> dict[str, Any]:
    record = {"id": pattern_id, "name": name, "user_id": "u"}
    return {"type": "pattern", "op": "upsert", "pattern": record}


def opened(tmp_path: Path, **options: Any) -> Store:
    store = Store.open(tmp_path, **options)
    store.start(system_id="instance-1")
    return store


@contextmanager
def write_locked(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another connection holding the database's write lock: the writer must wait."""
    other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        yield other
    finally:
        other.execute("ROLLBACK")
        other.close()


def rows(tmp_path: Path, sql: str) -> list[Any]:
    """Read the file through an independent connection: what is really on disk."""
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        return list(conn.execute(sql))


async def test_state_rows_and_appends_survive_reopening(tmp_path: Path) -> None:
    store = opened(tmp_path)
    store.record(1, topics.configuration("u"), pattern("p1", "first"))
    store.record(2, topics.configuration("u"), pattern("p2", "gone"))
    store.record(3, topics.configuration("u"), pattern("p1", "renamed"))
    delete = {"type": "pattern", "op": "delete", "user_id": "u", "id": "p2"}
    store.record(4, topics.configuration("u"), delete)
    store.record(5, topics.events("u"), event("u", 5))
    store.record(6, topics.perf_results("u", "prof"), result("prof", 6))
    await store.flush()
    store.close()

    again = Store.open(tmp_path)
    try:
        stored = again.stored
        assert [orjson.loads(body)["pattern"] for body in stored.objects] == [
            {"id": "p1", "name": "renamed", "user_id": "u"}
        ]
        assert [(seq, topic) for seq, topic, _ in stored.appends] == [
            (5, topics.events("u")),
            (6, topics.perf_results("u", "prof")),
        ]
        assert stored.meta["system_id"] == "instance-1" and again.starts == 1
        assert again.migrated_from == 2
    finally:
        again.close()


async def test_live_state_is_not_kept(tmp_path: Path) -> None:
    store = opened(tmp_path)
    try:
        item = {"connectionID": "c", "controller": "BROKER", "status": "CONNECTED", "version": ""}
        obj = {"cluster_id": "k", "kind": "Pod", "namespace": "default", "name": "p"}
        assert not store.record(
            1, topics.CONTROLLERS, {"type": "controller", "op": "upsert", "item": item}
        )
        assert not store.record(
            2, topics.CLUSTER_RESOURCES, {"type": "cluster_object", "op": "upsert", "object": obj}
        )
        assert store.stats()["recorded"] == 0
    finally:
        store.close()


async def test_appends_are_trimmed_to_the_retention_and_remember_the_horizon(
    tmp_path: Path,
) -> None:
    store = opened(tmp_path, retention=Retention(events_per_user=3, results_per_profile=2))
    for seq in range(1, 8):
        store.record(seq, topics.events("u"), event("u", seq))
    store.record(8, topics.events("v"), event("v", 8))
    for seq in range(9, 12):
        store.record(seq, topics.perf_results("u", "prof"), result("prof", seq))
    await store.flush()
    store.close()

    assert rows(tmp_path, "SELECT seq FROM events WHERE user_id = 'u' ORDER BY seq") == [
        (5,), (6,), (7,)
    ]  # fmt: skip
    assert rows(tmp_path, "SELECT seq FROM events WHERE user_id = 'v'") == [(8,)]
    assert rows(tmp_path, "SELECT seq FROM results ORDER BY seq") == [(10,), (11,)]
    horizons = dict(rows(tmp_path, "SELECT topic, evicted_upto FROM horizons"))
    assert horizons == {topics.events("u"): 4, topics.perf_results("u", "prof"): 9}


@pytest.mark.parametrize("apart", [False, True], ids=["one-write", "trimmed-before"])
async def test_deleting_a_profile_drops_its_results(tmp_path: Path, apart: bool) -> None:
    """A delete naming no owner (every owner's) drops each owner's horizon too,
    whether its results were trimmed in the same write or an earlier one."""
    store = opened(tmp_path, retention=Retention(results_per_profile=1))
    profile = {"type": "perf_profile", "op": "upsert", "profile": {"id": "prof", "user_id": "u"}}
    store.record(1, topics.PERF_PROFILES, profile)
    for seq in (2, 3):
        store.record(seq, topics.perf_results("u", "prof"), result("prof", seq))
    if apart:
        await store.flush()
        assert rows(tmp_path, "SELECT count(*) FROM horizons") == [(1,)]
    store.record(4, topics.PERF_PROFILES, {"type": "perf_profile", "op": "delete", "id": "prof"})
    await store.flush()
    store.close()
    assert rows(tmp_path, "SELECT count(*) FROM objects") == [(0,)]
    assert rows(tmp_path, "SELECT count(*) FROM results") == [(0,)]
    assert rows(tmp_path, "SELECT count(*) FROM horizons") == [(0,)]


async def test_flush_returns_only_once_the_change_is_on_disk(tmp_path: Path) -> None:
    store = opened(tmp_path, busy_timeout=SOON)
    try:
        with write_locked(tmp_path):
            store.record(1, topics.events("u"), event("u", 1))
            flushed = trio.Event()

            async def flush() -> None:
                await store.flush()
                flushed.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flush)
                # The writer is stuck behind the lock: nothing may claim durability.
                await trio.testing.wait_all_tasks_blocked()
                assert not flushed.is_set()
                assert store.stats()["committed"] == 0
                nursery.cancel_scope.cancel()
        with trio.fail_after(SOON):
            await store.flush()
        assert rows(tmp_path, "SELECT seq FROM events") == [(1,)]
    finally:
        store.close()


async def test_a_failed_write_refuses_every_later_change(tmp_path: Path) -> None:
    store = opened(tmp_path, busy_timeout=0.05)
    try:
        with write_locked(tmp_path):
            store.record(1, topics.events("u"), event("u", 1))
            with trio.fail_after(SOON), pytest.raises(StoreUnavailable, match="database"):
                await store.flush()
        with pytest.raises(StoreUnavailable):
            store.check_room()
        with pytest.raises(StoreUnavailable):
            store.record(2, topics.events("u"), event("u", 2))
    finally:
        store.close()


async def test_a_full_queue_refuses_before_anything_changes(tmp_path: Path) -> None:
    store = opened(tmp_path, max_pending=3, busy_timeout=SOON)
    try:
        with write_locked(tmp_path):
            accepted = 0
            with pytest.raises(StoreUnavailable, match="wait for the disk"):
                for seq in range(1, 10):
                    store.check_room()
                    store.record(seq, topics.events("u"), event("u", seq))
                    accepted += 1
            # The writer may hold one batch of its own while it waits for the lock.
            assert 3 <= accepted <= 4
        with trio.fail_after(SOON):
            await store.flush()
        assert rows(tmp_path, "SELECT count(*) FROM events") == [(accepted,)]
    finally:
        store.close()


async def test_reservations_stay_ahead_of_every_handed_out_sequence(tmp_path: Path) -> None:
    store = Store.open(tmp_path, reserve_block=8)
    resume = store.start(system_id="x")
    assert (resume, store.reserved) == (0, 8)
    store.reserve(20)
    store.record(1, topics.events("u"), event("u", 1))
    with trio.fail_after(SOON):
        await store.flush()  # the batch with the record carries the reservation asked before
    assert store.reserved == 20
    store.close()
    # A new start continues after the reservation: above any cursor handed out.
    again = Store.open(tmp_path, reserve_block=8)
    try:
        assert again.start(system_id="x") == 20
        assert again.reserved == 28
        assert again.stored.meta["system_id"] == "x"
    finally:
        again.close()


async def test_records_are_kept_per_owner(tmp_path: Path) -> None:
    """Two users may use one id (the model keys records by owner and id)."""
    store = opened(tmp_path)
    for seq, user in enumerate(("alice", "bob"), 1):
        record = {"id": "same", "name": user, "user_id": user}
        store.record(seq, topics.configuration(user), {"type": "filter", "op": "upsert",
                                                       "filter": record})  # fmt: skip
    store.record(3, topics.configuration("alice"), {"type": "filter", "op": "delete",
                                                    "user_id": "alice", "id": "same"})  # fmt: skip
    context = {"id": "ctx", "owner": "carol", "name": "c"}
    store.record(
        4, topics.K8S_CONTEXTS, {"type": "k8s_context", "op": "upsert", "context": context}
    )
    store.record(5, topics.K8S_CONTEXTS, {"type": "k8s_context", "op": "delete", "id": "ctx"})
    await store.flush()
    store.close()
    assert rows(tmp_path, "SELECT kind, owner, id FROM objects") == [("filter", "bob", "same")]


async def test_a_stuck_disk_is_an_error_not_an_acknowledgement(tmp_path: Path) -> None:
    store = opened(tmp_path, busy_timeout=SOON)
    try:
        with write_locked(tmp_path):
            store.record(1, topics.events("u"), event("u", 1))
            with pytest.raises(StoreUnavailable, match="did not confirm a commit within"):
                await store.flush(timeout=0.2)
        with trio.fail_after(SOON):
            await store.flush()  # the commit went through once the disk was back
    finally:
        store.close()
