"""A database written before ids were escaped in topic names still resumes cleanly.

Earlier versions put ids into topic names as they were, so user "a.b"'s
results on profile "c" and user "a"'s on profile "b.c" were both stored under
``meshery.perf_results.a.b.c``, with one trim horizon, and "a.b"'s events
under ``meshery.events.a.b``. Read back now, each entry goes under the topic
its owner's escaped ids name, with the old topic's horizon: a cursor resumes
with the owner's entries only, one from before the horizon expires. The
previous version's rows are made here by renaming the topics a current server
stored (the layout is otherwise the same).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from meshsub_trio.brokers import CursorExpired, Delivery
from meshsub_trio.meshery import create_app, topics
from meshsub_trio.meshery._storage._store import DB_NAME

from ._replay import broker_of, replayed

TOKENS = {"token-ab": "a.b", "token-a": "a"}
#: Each user's profile: together, the one name both had before.
PROFILES = {"a.b": "c", "a": "b.c"}
SHARED = topics.PERF_RESULTS_PREFIX + "a.b.c"


def names(deliveries: list[Delivery[Any]]) -> list[str]:
    return [d.message["result"]["name"] for d in deliveries]


async def write_previous_version(data_dir: Path) -> dict[str, int]:
    """Results and events of both users, stored under the names the previous
    version gave them; the sequence of each by name."""
    app = create_app(data_dir=data_dir, simulator=False, tokens=TOKENS)
    seqs = {}
    try:
        for user, profile in PROFILES.items():
            app.model.save_profile(user, {"id": profile, "name": f"{user}'s"})
        for name in ("a.b-1", "a-1", "a.b-2", "a-2"):
            user = name.rpartition("-")[0]
            app.model.record_result(user, PROFILES[user], {"name": name})
            seqs[name] = broker_of(app).last_seq - 1  # the result, then its profile's update
        for name in ("a.b-e1", "a.b-e2"):
            app.model.publish_event("a.b", {"severity": "debug", "description": name})
            seqs[name] = broker_of(app).last_seq
        await app.model.flush()
    finally:
        app.close()
    with sqlite3.connect(data_dir / DB_NAME) as conn:
        unescaped = "? || owner || '.' || profile_id"
        renamed = conn.execute(
            f"UPDATE results SET topic = {unescaped}", (topics.PERF_RESULTS_PREFIX,)
        ).rowcount
        assert renamed == 4
        assert conn.execute("SELECT DISTINCT topic FROM results").fetchall() == [(SHARED,)]
        conn.execute("UPDATE events SET topic = ? || user_id", (topics.EVENTS_PREFIX,))
        # The old shared topic had been trimmed up to a.b-1 (by either owner's runs).
        conn.execute("INSERT INTO horizons VALUES (?, ?)", (SHARED, seqs["a.b-1"]))
    return seqs


async def test_old_names_resume_under_their_owner_s_topic(tmp_path: Path) -> None:
    seqs = await write_previous_version(tmp_path)
    again = create_app(data_dir=tmp_path, simulator=False, tokens=TOKENS)
    try:
        mine = topics.perf_results("a.b", "c")
        assert names(await replayed(again, mine, seqs["a.b-1"], 1)) == ["a.b-2"]
        theirs = topics.perf_results("a", "b.c")
        assert names(await replayed(again, theirs, seqs["a.b-1"], 2)) == ["a-1", "a-2"]
        # Before the old topic's horizon, something may have been trimmed: refused.
        with pytest.raises(CursorExpired):
            await replayed(again, mine, seqs["a.b-1"] - 1, 1)
        [event] = await replayed(again, topics.events("a.b"), seqs["a.b-e1"], 1)
        assert event.message["event"]["description"] == "a.b-e2"
        # Nothing is left under the old names, and new entries go to the owner's topics.
        assert not {SHARED, topics.EVENTS_PREFIX + "a.b"} & set(broker_of(again)._logs)
        again.model.record_result("a.b", "c", {"name": "a.b-3"})
        got = await replayed(again, mine, seqs["a.b-1"], 2)
        assert names(got) == ["a.b-2", "a.b-3"]
    finally:
        again.close()
