"""NATS mode without a retention cliff: with a log that keeps only 100
messages, 1,000 changes later a new replica (in this process, and a real
``meshsub-trio serve`` process) starts from the newest snapshot, replays only
what follows it, and serves all of the state."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from meshsub_trio import LogStream
from meshsub_trio.meshery import LOCAL_USER_ID, MesheryApp
from meshsub_trio.testing import NatsServer

from ..scaleout._kit import (
    EVENTS,
    EVENTS_PATH,
    SOON,
    Reader,
    Replica,
    descriptions,
    graphql,
    http_client,
    open_replica,
)

RETAIN = 100
CHANGES = 1000
USERS = (LOCAL_USER_ID, "someone-else")


def tiny_log() -> LogStream:
    return LogStream(name="MESHERY", subjects=("meshery.>",), max_msgs=RETAIN, heartbeat=0.5)  # the stream `serve` uses too


def view(app: MesheryApp) -> dict[str, Any]:
    """Everything a client can see of the model, in a comparable form."""
    model = app.model

    def ids(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted((str(r.get("user_id") or r.get("owner")), r["id"]) for r in records)

    return {
        "patterns": sorted((p["id"], p["pattern_file"]) for p in model.patterns_of(None)),
        "filters": ids(model.filters_of(None)),
        "contexts": ids(model.contexts()),
        "profiles": sorted((p["id"], p["total_results"]) for p in model.profiles()),
        "results": sorted(r["meshery_id"] for r in model.all_results()),
        "controllers": model.controller_items(),
        "namespaces": model.namespaces(),
        "components": model.meshmodel_summary("components"),
        "events": {user: [e["id"] for e in model.events_of(user)] for user in USERS},
    }


async def make_changes(replica: Replica) -> int:
    """1,000 changes of every kind, in batches (as traffic comes); the log entries made."""
    model = replica.app.model
    start = replica.app.replication.last_seq if replica.app.replication else 0
    profile = model.save_profile(LOCAL_USER_ID, {"name": "soak"})
    for n in range(CHANGES):
        kind = n % 8
        if kind == 0:
            model.save_pattern(
                LOCAL_USER_ID, {"id": f"p{n % 37}", "name": "d", "pattern_file": f"{n}"}
            )
        elif kind == 1:
            model.publish_event(USERS[n % 2], {"severity": "debug", "description": f"e{n}"})
        elif kind == 2:
            model.save_filter(LOCAL_USER_ID, {"id": f"f{n % 11}", "name": "f", "filter_file": "x"})
        elif kind == 3 and n % 3 == 0:
            model.delete_filter(LOCAL_USER_ID, f"f{(n // 3) % 11}")
        elif kind == 4:
            model.record_result(LOCAL_USER_ID, profile["id"], {"name": f"run {n}"})
        elif kind == 5 and n % 40 == 5:
            model.upsert_context({"name": f"c{n}", "server": f"https://c{n}"}, owner=LOCAL_USER_ID)
        elif kind == 6:
            model.add_object("cluster", "Namespace", "", f"ns{n % 13}")
        else:
            model.register_meshmodel("components", f"m{n % 17}", f"v{n % 5}", "X")
        if n % 20 == 19:
            await replica.sync()
    await replica.sync()
    assert replica.app.replication is not None
    return replica.app.replication.last_seq - start


async def test_a_late_replica_has_all_the_state_after_the_log_evicted_it(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    async with open_replica(nats_server, log=tiny_log()) as first:
        bus = first.app.replication
        assert bus is not None and bus.snapshotter is not None
        entries = await make_changes(first)
        assert entries > 3 * RETAIN  # most of the history is gone from the log
        with trio.fail_after(SOON):
            await bus.snapshotter.wait_covered(bus.last_seq - RETAIN // 2)
        expected = view(first.app)
        assert bus.gaps == 0

        async with open_replica(nats_server, log=tiny_log()) as late:
            late_bus = late.app.replication
            assert late_bus is not None and late_bus.snapshotter is not None
            assert late_bus.snapshotter.restored_seq > bus.last_seq - RETAIN
            assert late_bus.gaps == 0  # it replayed only what the log still holds
            assert late_bus.applied < RETAIN
            assert view(late.app) == expected

            # It keeps going: a change made afterwards reaches both.
            first.app.model.save_pattern(LOCAL_USER_ID, {"name": "later", "pattern_file": "z"})
            await first.sync()
            await late.sync()
            assert view(late.app) == view(first.app)
            first_state = view(first.app)

        # A real process, started last, serves the same state over HTTP.
        await check_process(nats_server, first_state, tmp_path / "serve.log")


async def check_process(nats_server: NatsServer, expected: dict[str, Any], log: Path) -> None:
    with log.open("wb") as errors:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "meshsub_trio", "serve", "--port", "0", "--keepalive", "0",
             "--broker", nats_server.url],
            stdout=subprocess.PIPE,
            stderr=errors,
        )  # fmt: skip
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(SOON):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(256)
                assert chunk, f"the server exited before listening: {log.read_text()}"
                line += chunk
        port = int(line.split(b":")[-1].split(b"\n")[0])
        async with http_client(port) as http:
            query = '{ fetchPatterns(selector: {page: "0", pageSize: "100"}) { patterns { id pattern_file } } }'
            answer = await graphql(http, query)
            patterns = sorted(
                (p["id"], p["pattern_file"]) for p in answer["data"]["fetchPatterns"]["patterns"]
            )
            assert patterns == expected["patterns"]
            events = (await http.get(EVENTS_PATH, params={"pagesize": "all"})).json()["events"]
            assert sorted(e["id"] for e in events) == sorted(expected["events"][LOCAL_USER_ID])
    finally:
        with trio.CancelScope(shield=True):
            process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def test_a_cursor_older_than_the_snapshot_resumes_from_the_log(
    nats_server: NatsServer,
) -> None:
    """A replica that started from a snapshot holds no history before it, but the
    log does: a cursor from before the snapshot gets what followed, from there."""
    async with open_replica(nats_server, log=tiny_log()) as first:
        bus = first.app.replication
        assert bus is not None and bus.snapshotter is not None
        await make_changes(first)
        cursor = bus.last_seq
        published = [f"after-{n}" for n in range(40)]
        for text in published:
            first.app.model.publish_event(LOCAL_USER_ID, {"severity": "debug", "description": text})
        await first.sync()
        with trio.fail_after(SOON):
            await bus.snapshotter.wait_covered(cursor + 25)
        async with (
            open_replica(nats_server, log=tiny_log()) as late,
            trio.open_nursery() as nursery,
        ):
            assert late.app.replication is not None and late.app.replication.snapshotter
            assert late.app.replication.snapshotter.restored_seq > cursor
            reader = Reader(EVENTS, "resumed on the late replica")
            await reader.start(nursery, late.port, cursor=str(cursor))
            await reader.wait_count(len(published))
            first.app.model.publish_event(
                LOCAL_USER_ID, {"severity": "debug", "description": "live"}
            )
            await reader.wait_count(len(published) + 1)
            assert descriptions(reader) == [*published, "live"]
            nursery.cancel_scope.cancel()
