"""The embedded database: SQLite in WAL mode, read at start, written by one thread.

Why a thread: SQLite calls block (and a commit waits for fsync), so none
runs on the event loop. Committed changes go to a bounded queue; one writer
thread takes everything queued, writes it in one transaction (a group
commit) and then wakes whoever waits in :meth:`Store.flush`, which is how a
mutation is answered only once its change is on disk. A full queue or a
failed write refuses further changes (:class:`StoreUnavailable`) rather
than acknowledging what is not durable.

Durability (``PRAGMA synchronous``): ``"full"`` (the default) syncs the WAL
at every commit, so an acknowledged change survives a power loss;
``"normal"`` syncs only at checkpoints, so it survives a crash of the
process (SIGKILL included) but the last commits may be lost with the power.

Opening takes an exclusive lock (``meshery.lock`` in the directory, with
the holder's pid in it) for as long as the store is open: two servers on one
database would each serve their own diverging copy. The checks made while
opening (lock, integrity, migration) are in :mod:`._opening`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections import deque
from pathlib import Path
from typing import IO, Any

import orjson
import trio

from . import _tables as tables
from ._opening import _classified, _connect, _migrate, _take_lock
from ._rows import changes_of
from ._store_errors import (
    StoreUnavailable,
    StoreUnreadable,
)

log = logging.getLogger("meshsub_trio.meshery.store")

DB_NAME = "meshery.sqlite3"
LOCK_NAME = "meshery.lock"
DURABILITY = {"full": "FULL", "normal": "NORMAL"}
#: Log sequences reserved ahead on disk (see :meth:`Store.reserve`).
RESERVE = 1 << 16
#: Entries one transaction takes at most.
_MAX_BATCH = 4096

Waiter = tuple[int, trio.lowlevel.TrioToken, trio.Event]


class Store:
    """One open database. Use :meth:`open`, :meth:`start`, then :meth:`record` and
    :meth:`flush` from the event loop; :meth:`close` when done."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        lock: IO[str],
        *,
        retention: tables.Retention,
        max_pending: int,
        reserve_block: int,
        stored: tables.Stored,
        migrated_from: int,
    ) -> None:
        self.path = path
        self.retention = retention
        self.max_pending = max_pending
        #: How many log sequences one reservation covers.
        self.reserve_block = reserve_block
        #: What the database held when it was opened (read once, at start).
        self.stored = stored
        #: The schema version found on disk (0: a new file).
        self.migrated_from = migrated_from
        self._conn = conn
        self._lock = lock
        self._cond = threading.Condition()
        self._queue: deque[tables.Entry] = deque()
        self._enqueued = 0
        self._committed = 0
        self._waiters: list[Waiter] = []
        self._failure: str | None = None
        self._closing = False
        self._thread: threading.Thread | None = None
        #: Log sequences up to this one may be handed out (durably reserved).
        self.reserved = 0
        self._reserve_wanted = 0
        #: Counters: transactions written, entries written.
        self.commits = 0
        self.written = 0

    # ------------------------------------------------------------ opening

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        *,
        durability: str = "full",
        retention: tables.Retention | None = None,
        max_pending: int = 10_000,
        busy_timeout: float = 2.0,
        reserve_block: int = RESERVE,
    ) -> Store:
        """Lock, open, check, migrate and read the database in *data_dir*.

        Raises a :class:`StoreError` subclass, with a one-line message, when
        the database cannot be used; never opens an empty one instead.
        """
        if durability not in DURABILITY:
            raise ValueError(f"durability must be one of {sorted(DURABILITY)}, got {durability!r}")
        directory = Path(data_dir).expanduser().absolute()
        path = directory / DB_NAME
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            lock = (directory / LOCK_NAME).open("a+", encoding="ascii")
        except OSError as error:
            raise StoreUnreadable(directory, error.strerror or str(error)) from None
        try:
            _take_lock(lock, path)
            conn = _connect(path, busy_timeout)
        except BaseException:
            lock.close()
            raise
        try:
            chosen = retention or tables.Retention()
            conn.execute(f"PRAGMA synchronous = {DURABILITY[durability]}")
            with _classified(path):
                found = _migrate(conn, path, chosen)
                stored = tables.read(conn)
        except BaseException:
            conn.close()
            lock.close()
            raise
        return cls(
            path,
            conn,
            lock,
            retention=chosen,
            max_pending=max_pending,
            reserve_block=reserve_block,
            stored=stored,
            migrated_from=found,
        )

    def start(self, *, system_id: str) -> int:
        """Record this start (and the instance id), reserve sequences, start the writer.

        Returns the log sequence to continue from: every sequence handed out
        before (even one never committed) is at most that.
        """
        meta = self.stored.meta
        resume = max(int(meta.get("reserved", 0)), int(meta.get("last_seq", 0)))
        self.reserved = self._reserve_wanted = resume + self.reserve_block
        with _classified(self.path):
            self._conn.execute("BEGIN IMMEDIATE")
            tables.set_meta(self._conn, "system_id", system_id)
            tables.set_meta(self._conn, "starts", self.starts + 1)
            tables.set_meta(self._conn, "reserved", self.reserved)
            self._conn.execute("COMMIT")
        self._thread = threading.Thread(target=self._run, name="meshery-store", daemon=True)
        self._thread.start()
        return resume

    def forget_loaded(self) -> None:
        """Drop what was read at start (applied by now), keeping only its meta."""
        self.stored = tables.Stored(meta=self.stored.meta)

    @property
    def starts(self) -> int:
        """How many times a server started on this database before this one."""
        return int(self.stored.meta.get("starts", 0))

    # ------------------------------------------------------------ writing

    def check_room(self) -> None:
        """Refuse (before anything changes) when the writer failed or is too far behind."""
        if self._failure is not None:
            raise StoreUnavailable(self._failure)
        if len(self._queue) >= self.max_pending:
            raise StoreUnavailable(f"{len(self._queue)} changes still wait for the disk")

    def record(self, seq: int, topic: str, message: Any) -> bool:
        """Queue *message* (logged as *seq*) for the writer; False if nothing is kept of it."""
        changes = changes_of(message)
        if not changes:
            return False
        entry = tables.Entry(seq, topic, orjson.dumps(message).decode(), changes)
        with self._cond:
            if self._failure is not None:
                raise StoreUnavailable(self._failure)
            self._queue.append(entry)
            self._enqueued += 1
            self._cond.notify()
        return True

    def reserve(self, upto: int) -> None:
        """Ask the writer to reserve log sequences up to *upto* on disk.

        Why: subscribers see a change before it is on disk, so a client may
        hold a cursor the database never saw. A restart continues after the
        reservation, above any such cursor, so it never hands out a sequence
        a client already holds.
        """
        with self._cond:
            if upto > self._reserve_wanted:
                self._reserve_wanted = upto
                self._cond.notify()

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything recorded before the call is committed to disk.

        Raises :class:`StoreUnavailable` if the writer failed, or did not
        commit within *timeout* seconds (a stuck disk): never returns as if
        durable when it is not.
        """
        try:
            with trio.fail_after(timeout):
                await self._flush()
        except trio.TooSlowError:
            raise StoreUnavailable(f"the disk did not confirm a commit within {timeout}s") from None

    async def _flush(self) -> None:
        token = trio.lowlevel.current_trio_token()
        with self._cond:
            target = self._enqueued
            done = self._committed >= target
            if not done and self._failure is None:
                waiter: Waiter = (target, token, trio.Event())
                self._waiters.append(waiter)
        if done:
            await trio.lowlevel.checkpoint()
            return
        if self._failure is None:
            try:
                await waiter[2].wait()
            finally:
                with self._cond, contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
        if self._committed < target:
            raise StoreUnavailable(self._failure or "the database is closed")

    @property
    def pending(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, int]:
        return {
            "pending": len(self._queue),
            "recorded": self._enqueued,
            "committed": self._committed,
            "commits": self.commits,
            "reserved": self.reserved,
            "failed": int(self._failure is not None),
        }

    # ------------------------------------------------------------ the writer

    def _run(self) -> None:
        """The writer thread: group-commit whatever is queued, until closed."""
        while True:
            with self._cond:
                while not self._work() and not self._closing:
                    self._cond.wait()
                if not self._work() or self._failure is not None:
                    return
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), _MAX_BATCH))]
                reserve = self._reserve_wanted
            try:
                self._write(batch, reserve)
            except Exception as error:  # anything: waiters must hear of it, not hang
                self._fail(f"writing {self.path} failed: {error}")
                return
            with self._cond:
                self._committed += len(batch)
                self.reserved = max(self.reserved, reserve)
                self._wake(lambda target: target <= self._committed)

    def _work(self) -> bool:
        return bool(self._queue) or self._reserve_wanted > self.reserved

    def _write(self, batch: list[tables.Entry], reserve: int) -> None:
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            tables.write(conn, batch, self.retention)
            if batch:
                tables.set_meta(conn, "last_seq", max(entry.seq for entry in batch))
            if reserve > self.reserved:
                tables.set_meta(conn, "reserved", reserve)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        self.commits += 1
        self.written += len(batch)

    def _fail(self, reason: str) -> None:
        log.error("%s; refusing changes from now on", reason)
        with self._cond:
            self._failure = reason
            self._wake(lambda _target: True)

    def _wake(self, ready: Any) -> None:
        """Set the events of satisfied waiters (called with the lock held)."""
        keep: list[Waiter] = []
        for waiter in self._waiters:
            if not ready(waiter[0]):
                keep.append(waiter)
                continue
            with contextlib.suppress(trio.RunFinishedError):
                waiter[1].run_sync_soon(waiter[2].set)
        self._waiters = keep

    # ------------------------------------------------------------ closing

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, stop the writer, close the file, release the lock."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("the database writer did not finish within %ss", timeout)
                return
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._conn.close()
        with self._cond:
            if self._failure is None:
                self._failure = "the database is closed"
            self._wake(lambda _target: True)
        self._lock.close()
