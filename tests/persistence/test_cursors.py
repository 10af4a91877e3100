"""Event cursors across a restart of the embedded default, in-process: the log
comes back with its sequences, trimmed history expires clearly, and new
sequences start above every cursor handed out before."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshsub_trio.brokers import CursorExpired
from meshsub_trio.meshery import create_app, default_data_dir, topics
from meshsub_trio.meshery._storage._tables import Retention

from ._replay import broker_of, replayed

USER = "u"


async def test_the_log_comes_back_with_its_sequences(tmp_path: Path) -> None:
    retain = Retention().events_per_user
    app = create_app(data_dir=tmp_path, simulator=False)
    seqs = []
    for n in range(retain + 5):
        app.model.publish_event(USER, {"severity": "debug", "description": f"e{n}"})
        seqs.append(broker_of(app).last_seq)
    profile = app.model.save_profile(USER, {"name": "p"})
    results = []
    for n in range(3):
        app.model.record_result(USER, profile["id"], {"name": f"r{n}"})
        results.append(broker_of(app).last_seq - 1)  # the result, then its profile's update
    handed_out = broker_of(app).last_seq
    await app.model.flush()
    app.close()

    again = create_app(data_dir=tmp_path, simulator=False)
    try:
        assert broker_of(again).last_seq >= handed_out  # new cursors above the old ones
        events = topics.events(USER)
        # The 5 oldest were trimmed: resuming right after the 5th is exact ...
        [first] = await replayed(again, events, seqs[4], 1)
        assert (first.seq, first.message["event"]["description"]) == (seqs[5], "e5")
        # ... resuming from before it would skip trimmed events: refused instead.
        with pytest.raises(CursorExpired):
            await replayed(again, events, seqs[3], 1)
        got = await replayed(again, topics.perf_results(USER, profile["id"]), results[0], 2)
        assert [d.seq for d in got] == results[1:]
        assert [d.message["result"]["name"] for d in got] == ["r1", "r2"]
        # A new event continues above everything handed out before the restart.
        again.model.publish_event(USER, {"severity": "debug", "description": "new"})
        assert broker_of(again).last_seq > handed_out
        assert len(again.model.events_of(USER)) == retain
    finally:
        again.close()


def test_default_data_dir_follows_xdg() -> None:
    assert str(default_data_dir({"XDG_DATA_HOME": "/data", "HOME": "/home/a"})) == (
        "/data/meshsub-trio"
    )
    # A relative XDG_DATA_HOME is invalid by the spec, so it is ignored.
    assert str(default_data_dir({"XDG_DATA_HOME": "rel", "HOME": "/home/a"})) == (
        "/home/a/.local/share/meshsub-trio"
    )
    assert str(default_data_dir({"HOME": "/home/a"})) == "/home/a/.local/share/meshsub-trio"
