"""Opening the database file: the lock, the connection's checks, the migration.

Apart from :class:`._store.Store` because all of it runs once, before the
writer thread exists, and turns sqlite3's errors into the one-line
:class:`StoreError` a person starting the server can act on.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
from pathlib import Path
from typing import IO, Any

from . import _tables as tables
from ._migrations import SCHEMA_VERSION, check, upgrade
from ._store_errors import StoreCorrupt, StoreError, StoreLocked, StoreUnreadable

#: The store's logger (the same name as :mod:`._store`'s).
log = logging.getLogger("meshsub_trio.meshery.store")


def _take_lock(lock: IO[str], path: Path) -> None:
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "unknown"
        raise StoreLocked(
            path,
            f"meshsub-trio (pid {holder}) is already using it",
            "stop that process, or pass another --data-dir",
        ) from None
    except OSError as error:
        raise StoreUnreadable(path, f"cannot lock it: {error.strerror or error}") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()


def _connect(path: Path, busy_timeout: float) -> sqlite3.Connection:
    with _classified(path):
        conn = sqlite3.connect(
            path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
    try:
        with _classified(path):
            check(conn, path)  # first: nothing is changed in a file that is not ours
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnreadable(path, f"cannot switch it to WAL mode (mode {mode})")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
            if problems != ["ok"]:
                raise StoreCorrupt(
                    path,
                    f"it is damaged ({'; '.join(problems)})",
                    "restore it from a backup, or move it away to start empty",
                )
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path, retention: tables.Retention) -> int:
    """Upgrade to the current schema in one transaction (all or nothing)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = upgrade(conn, path, retention)
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    if found not in (0, SCHEMA_VERSION):
        log.info("migrated %s from schema version %d to %d", path, found, SCHEMA_VERSION)
    return found


@contextlib.contextmanager
def _classified(path: Path) -> Any:
    """Turn sqlite3 errors at start into the one-line :class:`StoreError` they mean."""
    try:
        yield
    except StoreError:
        raise
    except sqlite3.Error as error:
        raise _classify(path, error) from None


def _classify(path: Path, error: sqlite3.Error) -> StoreError:
    text = str(error)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return StoreLocked(
            path, f"another process holds a lock on it ({text})", "stop that process"
        )
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        return StoreCorrupt(
            path,
            f"it is not a readable SQLite database ({text})",
            "restore it from a backup, or move it away to start empty",
        )
    if "unable to open" in lowered or "readonly" in lowered or "permission" in lowered:
        return StoreUnreadable(path, f"it cannot be opened for writing ({text})")
    return StoreCorrupt(path, f"it cannot be read ({text})")
