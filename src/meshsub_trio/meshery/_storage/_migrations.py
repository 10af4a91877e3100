"""Schema versions of the embedded database, and the path from each old one to now.

The version lives in ``PRAGMA user_version``. Versions:

* 0: a new, empty file (no tables yet): the current layout is created.
* 1: the first layout, an append-only log of every change message,
  ``changes(seq, topic, message)``. Simple, but it grew forever and a start
  replayed all of it (controller and cluster churn included).
* 2 (current, :mod:`._tables`): the latest state per object plus events and
  results trimmed to the model's retention.

A migration runs inside the caller's transaction, so a crash halfway leaves
the old version intact. A file newer than this server is refused: reading
it would silently lose what the newer layout added.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import orjson

from . import _tables as tables
from ._rows import changes_of
from ._store_errors import StoreCorrupt, StoreTooNew

SCHEMA_VERSION = 2
#: The v1 layout (kept so tests, and anyone curious, can build a v1 file).
V1_SCHEMA = (
    "CREATE TABLE changes (seq INTEGER PRIMARY KEY, topic TEXT NOT NULL, message TEXT NOT NULL)"
)
#: Rows migrated per batch (bounds memory on a large v1 log).
_BATCH = 1000


def version_of(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check(conn: sqlite3.Connection, path: Path) -> int:
    """The file's version, refusing (before anything is written to it) a newer
    one or another application's database; returns the version found."""
    found = version_of(conn)
    if found > SCHEMA_VERSION:
        raise StoreTooNew(
            path,
            f"its schema version {found} is newer than this server knows ({SCHEMA_VERSION})",
            "upgrade meshsub-trio, or pass another --data-dir",
        )
    if found == 0:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master")]
        if names:
            raise StoreCorrupt(
                path,
                f"it is a SQLite file of another application (tables {', '.join(names[:5])})",
                "pass another --data-dir",
            )
    return found


def upgrade(conn: sqlite3.Connection, path: Path, retention: tables.Retention) -> int:
    """Bring the database to :data:`SCHEMA_VERSION`; returns the version found."""
    found = check(conn, path)
    if found == 0:
        tables.create(conn)
    elif found == 1:
        _v1_to_v2(conn, path, retention)
    if found != SCHEMA_VERSION:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return found


def _v1_to_v2(conn: sqlite3.Connection, path: Path, retention: tables.Retention) -> None:
    """Replay the v1 log into v2 rows (live state and trimmed history drop out)."""
    tables.create(conn)
    newest = 0
    system_id: str | None = None
    cursor = conn.execute("SELECT seq, topic, message FROM changes ORDER BY seq")
    while rows := cursor.fetchmany(_BATCH):
        entries = []
        for seq, topic, text in rows:
            try:
                message = orjson.loads(text)
            except orjson.JSONDecodeError:
                raise StoreCorrupt(
                    path,
                    f"change {seq} of its version 1 log is not JSON, so it cannot be migrated",
                    "restore it from a backup",
                ) from None
            system_id = _instance_of(message) or system_id
            entries.append(tables.Entry(seq, topic, text, changes_of(message)))
            newest = seq
        tables.write(conn, entries, retention)
    tables.set_meta(conn, "last_seq", newest)
    tables.set_meta(conn, "reserved", newest)
    if system_id is not None:
        tables.set_meta(conn, "system_id", system_id)
    conn.execute("DROP TABLE changes")


def _instance_of(message: Any) -> str | None:
    """The Meshery instance id a v1 message names (v1 did not store it apart;
    a context records it, where an event's ``systemID`` may come from a client)."""
    if not isinstance(message, dict):
        return None
    if message.get("type") == "k8s_context" and message.get("op") == "upsert":
        instance: str | None = message["context"].get("meshery_instance_id")
        return instance
    return None
