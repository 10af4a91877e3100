"""A version 1 database (an append-only log of every change message) becomes
version 2 (current state plus trimmed appends) when a newer server opens it:
in one transaction, keeping cursors, dropping live state and what the
retention no longer holds; a log it cannot read is refused, left as it was."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any, cast

import orjson
import pytest
import trio

from meshsub_trio import MemoryBroker
from meshsub_trio.brokers import Broker
from meshsub_trio.meshery import Model, StoreCorrupt, topics
from meshsub_trio.meshery._storage._store import DB_NAME, Store
from meshsub_trio.meshery._storage._tables import Retention

from ..scaleout._kit import EVENTS, EVENTS_PATH, Reader, descriptions, graphql, http_client
from ._kit import serving

#: The v1 layout, spelled out here rather than imported: the test pins the old format.
V1 = "CREATE TABLE changes (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, message TEXT NOT NULL)"
USER = "7f3f8b9e-4a55-4d36-9c1e-6d6f63616c00"  # the local user of `serve`


class Recording(MemoryBroker):
    """What a v1 server appended: every published change, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, Any]] = []

    def publish(self, topic: str, message: Any) -> None:
        self.sent.append((topic, message))
        super().publish(topic, message)


def v1_history() -> tuple[list[tuple[int, str, str]], dict[str, Any]]:
    """A real model's changes, as v1 rows, and what v2 must make of them."""
    # cast: MemoryBroker.subscribe is a context manager, the Broker protocol says iterator.
    model = Model(cast(Broker, Recording()))
    context = model.upsert_context({"name": "prod", "server": "https://prod:6443"}, owner=USER)
    model.set_controller_status(context["connection_id"], "BROKER", "CONNECTED")
    model.add_object(context["kubernetes_server_id"], "Pod", "default", "web-1")
    kept = model.save_pattern(USER, {"name": "bookinfo", "pattern_file": "a: 1"})
    kept = model.save_pattern(USER, {"id": kept["id"], "name": "bookinfo", "pattern_file": "a: 2"})
    gone = model.save_pattern(USER, {"name": "scratch", "pattern_file": "b: 1"})
    model.delete_pattern(USER, gone["id"])
    profile = model.save_profile(USER, {"name": "soak"})
    for n in range(3):
        model.record_result(USER, profile["id"], {"name": f"run {n}"})
    model.register_meshmodel("components", "istio-base", "1.22.0", "VirtualService")
    for n in range(5):
        model.publish_event(USER, {"severity": "warning", "description": f"v1-{n}"})
    model.publish_event("someone-else", {"severity": "debug", "description": "other"})
    broker = model.broker
    assert isinstance(broker, Recording)
    rows = [(seq, topic, orjson.dumps(m).decode()) for seq, (topic, m) in enumerate(broker.sent, 1)]
    expected = {
        "pattern": kept,
        "context": context["id"],
        "instance": model.system_id,
        "event_seqs": [seq for seq, topic, _ in rows if topic == topics.events(USER)],
    }
    return rows, expected


def write_v1(data_dir: Path, rows: list[tuple[int, str, str]]) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(data_dir / DB_NAME) as conn:
        conn.execute(V1)
        conn.executemany("INSERT INTO changes VALUES (?, ?, ?)", rows)
        conn.execute("PRAGMA user_version = 1")


def test_v1_becomes_v2(tmp_path: Path) -> None:
    rows, expected = v1_history()
    write_v1(tmp_path, rows)
    store = Store.open(tmp_path, retention=Retention(events_per_user=3, results_per_profile=2))
    try:
        assert store.migrated_from == 1
        stored = store.stored
        objects = [orjson.loads(body) for body in stored.objects]
        kinds = sorted(message["type"] for message in objects)
        assert kinds == ["k8s_context", "meshmodel", "pattern", "perf_profile"]  # no live state
        pattern = next(m["pattern"] for m in objects if m["type"] == "pattern")
        assert pattern == expected["pattern"]
        events = [seq for seq, topic, _ in stored.appends if topic == topics.events(USER)]
        assert events == expected["event_seqs"][-3:]  # the retention applies, cursors kept
        assert stored.horizons[topics.events(USER)] == expected["event_seqs"][-4]
        results = [body for _, topic, body in stored.appends if "perf_results" in topic]
        assert len(results) == 2
        assert stored.meta["reserved"] == str(len(rows))
        assert stored.meta["system_id"] == expected["instance"]
    finally:
        store.close()
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert "changes" not in tables and {"objects", "events", "results"} <= tables


def test_an_unreadable_v1_log_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    rows, _ = v1_history()
    rows[5] = (rows[5][0], rows[5][1], "{not json")
    write_v1(tmp_path, rows)
    with pytest.raises(StoreCorrupt, match=f"change {rows[5][0]} of its version 1 log"):
        Store.open(tmp_path)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM changes").fetchone()[0] == len(rows)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert names == {"changes"}


async def test_serve_migrates_a_v1_directory_and_keeps_its_cursors(tmp_path: Path) -> None:
    rows, expected = v1_history()
    data = tmp_path / "data"
    write_v1(data, rows)
    async with trio.open_nursery() as nursery:
        async with serving(data) as server, http_client(server.port) as http:
            query = '{ fetchPatterns(selector: {page: "0", pageSize: "9"}) { patterns { id } } }'
            answer = await graphql(http, query)
            assert answer["data"]["fetchPatterns"]["patterns"] == [
                {"id": expected["pattern"]["id"]}
            ]
            history = (await http.get(EVENTS_PATH, params={"pagesize": "all"})).json()
            assert sorted(e["description"] for e in history["events"]) == [
                f"v1-{n}" for n in range(5)
            ]
            # A cursor a v1 server handed out resumes right after its event.
            reader = Reader(EVENTS, "resumed from a v1 cursor")
            await reader.start(nursery, server.port, cursor=str(expected["event_seqs"][2]))
            await reader.wait_count(2)
            assert descriptions(reader) == ["v1-3", "v1-4"]
        nursery.cancel_scope.cancel()
