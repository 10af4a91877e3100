"""A database that cannot be used stops the start with one clear error, never
an empty state: in the library (a StoreError subclass) and in ``meshsub-trio
serve`` (one stderr line, a non-zero exit)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from meshsub_trio.meshery import (
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreTooNew,
    StoreUnreadable,
    create_app,
)
from meshsub_trio.meshery._storage._store import DB_NAME, Store

from ._kit import refused, serving


def saved_design(data_dir: Path) -> None:
    """A healthy database holding one design (written by the app itself)."""

    async def save() -> None:
        app = create_app(data_dir=data_dir, simulator=False)
        app.model.save_pattern("u", {"name": "keep me", "pattern_file": "x: 1"})
        await app.model.flush()
        app.close()

    trio.run(save)


def one_line(error: StoreError) -> str:
    text = str(error)
    assert "\n" not in text and text.startswith("cannot use the Meshery database ")
    return text


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    (tmp_path / DB_NAME).write_bytes(b"certainly not SQLite\n" * 500)
    with pytest.raises(StoreCorrupt) as raised:
        Store.open(tmp_path)
    assert "not a readable SQLite database" in one_line(raised.value)


def test_a_damaged_page(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    store.start(system_id="x")
    store._conn.execute("CREATE TABLE filler (blob TEXT)")  # pages beyond the schema's
    store._conn.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 200)
    store.close()
    path = tmp_path / DB_NAME
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 3 * page + 300] = b"\xab" * 300
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt) as raised:
        Store.open(tmp_path)
    assert "damaged" in one_line(raised.value) or "not a readable" in str(raised.value)


def test_a_database_of_another_application_is_left_alone(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreCorrupt, match="another application"):
        Store.open(tmp_path)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    saved_design(tmp_path)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreTooNew) as raised:
        Store.open(tmp_path)
    assert "schema version 99 is newer" in one_line(raised.value)
    with sqlite3.connect(tmp_path / DB_NAME) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 99
        assert conn.execute("SELECT count(*) FROM objects").fetchone()[0] == 1


def test_a_second_server_on_the_same_directory(tmp_path: Path) -> None:
    first = Store.open(tmp_path)
    try:
        with pytest.raises(StoreLocked) as raised:
            Store.open(tmp_path)
        assert "is already using it" in one_line(raised.value)
    finally:
        first.close()
    Store.open(tmp_path).close()  # the lock went with the first store


def test_a_sqlite_lock_held_by_another_program(tmp_path: Path) -> None:
    saved_design(tmp_path)
    other = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(StoreLocked) as raised:
            Store.open(tmp_path, busy_timeout=0.05)
        assert "holds a lock" in one_line(raised.value)
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreUnreadable):
        Store.open(tmp_path / "file")


# ------------------------------------------------------------------ the CLI


def stderr_line(lines: list[str]) -> str:
    """Exactly one line on stderr, the CLI's, and no traceback."""
    assert len(lines) == 1, lines
    assert lines[0].startswith("meshsub-trio: cannot use the Meshery database "), lines
    return lines[0]


async def test_serve_refuses_a_corrupt_database(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / DB_NAME).write_bytes(b"certainly not SQLite\n" * 500)
    code, lines = await refused(data)
    assert code != 0
    assert "not a readable SQLite database" in stderr_line(lines)


async def test_serve_refuses_a_directory_another_server_uses(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with serving(data) as first:
        code, lines = await refused(data)
        assert code != 0
        assert f"(pid {first.process.pid}) is already using it" in stderr_line(lines)


async def test_serve_refuses_a_newer_schema(tmp_path: Path) -> None:
    data = tmp_path / "data"
    await trio.to_thread.run_sync(saved_design, data)
    with sqlite3.connect(data / DB_NAME) as conn:
        conn.execute("PRAGMA user_version = 7")
    code, lines = await refused(data)
    assert code != 0
    assert "schema version 7 is newer" in stderr_line(lines)
