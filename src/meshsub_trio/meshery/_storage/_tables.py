"""The embedded database's current layout (schema v2): how rows are written and read.

Why state rows and trimmed appends instead of a change log: the file stays
the size of the data (a log grows forever), and loading it applies each
object once. Row meaning is decided by :mod:`._rows`; this module only
turns it into SQL, for the writer thread and for migrations alike. Nothing
here commits: callers own the transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field

from .._model import _topics as topics
from ._rows import Change

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE objects (
    kind TEXT NOT NULL, owner TEXT NOT NULL, id TEXT NOT NULL, body TEXT NOT NULL,
    PRIMARY KEY (kind, owner, id)
);
CREATE INDEX objects_by_id ON objects (kind, id);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, topic TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX events_by_user ON events (user_id, seq);
CREATE TABLE results (
    seq INTEGER PRIMARY KEY, owner TEXT NOT NULL, profile_id TEXT NOT NULL,
    topic TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX results_by_profile ON results (owner, profile_id, seq);
CREATE TABLE horizons (topic TEXT PRIMARY KEY, evicted_upto INTEGER NOT NULL) WITHOUT ROWID;
"""

_UPSERT = (
    "INSERT INTO objects (kind, owner, id, body) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (kind, owner, id) DO UPDATE SET body = excluded.body"
)
_HORIZON = (
    "INSERT INTO horizons (topic, evicted_upto) VALUES (?, ?) ON CONFLICT (topic) "
    "DO UPDATE SET evicted_upto = max(evicted_upto, excluded.evicted_upto)"
)
_META = "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = ?"


@dataclass(frozen=True)
class Retention:
    """How much of each append the model keeps; the database keeps the same."""

    events_per_user: int = 1000
    results_per_profile: int = 1000


@dataclass(frozen=True, slots=True)
class Entry:
    """One committed change: its log sequence, topic, JSON text and row operations."""

    seq: int
    topic: str
    body: str
    changes: tuple[Change, ...]


@dataclass
class Stored:
    """Everything a start reads back, in the order it must be applied."""

    meta: dict[str, str] = field(default_factory=dict)
    #: Upsert messages (JSON), oldest object first.
    objects: list[str] = field(default_factory=list)
    #: ``(seq, topic, JSON)`` of retained events and results, by sequence.
    appends: list[tuple[int, str, str]] = field(default_factory=list)
    #: Per topic, the newest sequence trimmed away: older cursors have expired.
    horizons: dict[str, int] = field(default_factory=dict)


def create(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def set_meta(conn: sqlite3.Connection, key: str, value: str | int) -> None:
    text = str(value)
    conn.execute(_META, (key, text, text))


def write(conn: sqlite3.Connection, entries: Iterable[Entry], retention: Retention) -> None:
    """Apply *entries* in order, then trim each touched user's events and profile's results."""
    users: dict[str, str] = {}
    profiles: dict[tuple[str, str], str] = {}
    for entry in entries:
        for change in entry.changes:
            action, owner = change.action, change.owner
            if action == "put":
                conn.execute(_UPSERT, (change.kind, owner, change.key, entry.body))
            elif action == "delete":
                _delete(conn, "objects", "kind = ? AND id = ?", (change.kind, change.key), owner)
            elif action == "event":
                conn.execute(
                    "INSERT INTO events VALUES (?, ?, ?, ?)",
                    (entry.seq, change.key, entry.topic, entry.body),
                )
                users[change.key] = entry.topic
            elif action == "result":
                assert owner is not None
                conn.execute(
                    "INSERT INTO results VALUES (?, ?, ?, ?, ?)",
                    (entry.seq, owner, change.key, entry.topic, entry.body),
                )
                profiles[(owner, change.key)] = entry.topic
            elif action == "drop_results":
                # Every owner's topic goes when the delete names none (an earlier
                # write may have trimmed them already: their horizons are rows now).
                owners = [owner] if owner is not None else _owners(conn, change.key)
                _delete(conn, "results", "profile_id = ?", (change.key,), owner)
                for key in [k for k in profiles if k[1] == change.key and owner in (None, k[0])]:
                    del profiles[key]
                for who in owners:
                    topic = topics.perf_results(who, change.key)
                    conn.execute("DELETE FROM horizons WHERE topic = ?", (topic,))
                still = conn.execute(
                    "SELECT 1 FROM results WHERE profile_id = ? LIMIT 1", (change.key,)
                ).fetchone()
                topic = topics.PERF_RESULTS_PREFIX + change.key
                # A previous version's topic, per profile id, whoever owns it; unless
                # that name is an owner's topic now (id "x.y": user x's profile y).
                if still is None and topics.results_owner(topic) is None:
                    conn.execute("DELETE FROM horizons WHERE topic = ?", (topic,))
    for user, topic in users.items():
        _trim(conn, "events", "user_id = ?", (user,), topic, retention.events_per_user)
    for (owner, profile), topic in profiles.items():
        where = "owner = ? AND profile_id = ?"
        _trim(conn, "results", where, (owner, profile), topic, retention.results_per_profile)


def _owners(conn: sqlite3.Connection, profile_id: str) -> list[str]:
    """Who holds results of *profile_id* (each owner's own profile of that id)."""
    query = "SELECT DISTINCT owner FROM results WHERE profile_id = ?"
    return [owner for (owner,) in conn.execute(query, (profile_id,))]


def _delete(
    conn: sqlite3.Connection, table: str, where: str, args: tuple[str, ...], owner: str | None
) -> None:
    """Delete *owner*'s rows matching *where* (every owner's when None)."""
    if owner is None:
        conn.execute(f"DELETE FROM {table} WHERE {where}", args)
    else:
        conn.execute(f"DELETE FROM {table} WHERE {where} AND owner = ?", (*args, owner))


def _trim(
    conn: sqlite3.Connection,
    table: str,
    where: str,
    args: tuple[str, ...],
    topic: str,
    keep: int,
) -> None:
    """Keep the newest *keep* rows matching *where*; remember the newest one dropped."""
    row = conn.execute(
        f"SELECT seq FROM {table} WHERE {where} ORDER BY seq DESC LIMIT 1 OFFSET ?",
        (*args, keep),
    ).fetchone()
    if row is None:
        return
    conn.execute(f"DELETE FROM {table} WHERE {where} AND seq <= ?", (*args, row[0]))
    conn.execute(_HORIZON, (topic, row[0]))


def read(conn: sqlite3.Connection) -> Stored:
    """The whole current state (reads happen at start only)."""
    stored = Stored()
    stored.meta = dict(conn.execute("SELECT key, value FROM meta"))
    stored.objects = [body for (body,) in conn.execute("SELECT body FROM objects ORDER BY rowid")]
    stored.appends = list(
        conn.execute(
            "SELECT seq, topic, body FROM events UNION ALL "
            "SELECT seq, topic, body FROM results ORDER BY seq"
        )
    )
    stored.horizons = dict(conn.execute("SELECT topic, evicted_upto FROM horizons"))
    return stored
