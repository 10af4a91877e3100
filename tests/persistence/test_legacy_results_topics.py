"""A database written before perf results had a topic per owner still resumes cleanly.

Earlier versions logged a result under ``meshery.perf_results.<profile id>``,
one topic for every owner of that id, and stored that topic (and its trim
horizon) in the ``results`` and ``horizons`` rows. Read back now, each result
goes under its owner's topic with the old topic's horizon: a cursor resumes
with the owner's results only, one from before the horizon expires, and
nothing crashes. The previous version's rows are made here by renaming the
topics a current server stored (the layout is otherwise the same).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from meshsub_trio.brokers import CursorExpired
from meshsub_trio.meshery import create_app, topics
from meshsub_trio.meshery._storage._store import DB_NAME

from ._replay import broker_of, replayed

LEGACY = topics.PERF_RESULTS_PREFIX + "load-test"
TOKENS = {"token-a": "alice", "token-b": "bob"}


async def write_previous_version(data_dir: Path) -> dict[str, int]:
    """Two users' results on one profile id, stored as the previous version did;
    the sequence of each result by name."""
    app = create_app(data_dir=data_dir, simulator=False, tokens=TOKENS)
    seqs = {}
    try:
        for user in ("alice", "bob"):
            app.model.save_profile(user, {"id": "load-test", "name": f"{user}'s"})
        for name in ("bob-1", "alice-1", "bob-2", "alice-2"):
            app.model.record_result(name.split("-")[0], "load-test", {"name": name})
            seqs[name] = broker_of(app).last_seq - 1  # the result, then its profile's update
        await app.model.flush()
    finally:
        app.close()
    with sqlite3.connect(data_dir / DB_NAME) as conn:
        renamed = conn.execute("UPDATE results SET topic = ?", (LEGACY,)).rowcount
        assert renamed == 4
        # The old shared topic had been trimmed up to bob-1 (by either owner's runs).
        conn.execute("INSERT INTO horizons VALUES (?, ?)", (LEGACY, seqs["bob-1"]))
    return seqs


async def test_old_results_resume_under_their_owner_s_topic(tmp_path: Path) -> None:
    seqs = await write_previous_version(tmp_path)
    again = create_app(data_dir=tmp_path, simulator=False, tokens=TOKENS)
    try:
        bob = topics.perf_results("bob", "load-test")
        [next_of_bob] = await replayed(again, bob, seqs["bob-1"], 1)
        assert (next_of_bob.seq, next_of_bob.message["result"]["name"]) == (
            seqs["bob-2"],
            "bob-2",
        )
        alice = topics.perf_results("alice", "load-test")
        got = await replayed(again, alice, seqs["bob-1"], 2)
        assert [d.message["result"]["name"] for d in got] == ["alice-1", "alice-2"]
        # Before the old topic's horizon, something may have been trimmed: refused.
        with pytest.raises(CursorExpired):
            await replayed(again, bob, seqs["bob-1"] - 1, 1)
        # Nothing is left under the old name, and a new result goes to the owner's topic.
        assert LEGACY not in broker_of(again)._logs
        again.model.record_result("bob", "load-test", {"name": "bob-3"})
        got = await replayed(again, bob, seqs["bob-1"], 2)
        assert [d.message["result"]["name"] for d in got] == ["bob-2", "bob-3"]
    finally:
        again.close()
