"""Why the embedded database cannot be used: one clear error at start, never an empty state.

Each error's message is one line an operator can act on (the CLI prints it
and exits non-zero). :class:`StoreUnavailable` is different: it refuses one
change while serving, like a full broker queue, so it is a
:class:`BrokerUnavailable` and every caller already turns it into
``BROKER_UNAVAILABLE`` (HTTP 503) with nothing applied.
"""

from __future__ import annotations

from pathlib import Path

from .._replication._replication import BrokerUnavailable


class StoreError(Exception):
    """The data directory's database cannot be opened; the server must not start."""

    def __init__(self, path: Path | str, problem: str, advice: str = "") -> None:
        text = f"cannot use the Meshery database {path}: {problem}"
        if advice:
            text = f"{text}; {advice}"
        # One line, whatever SQLite's own message held.
        super().__init__(" ".join(part.strip() for part in text.splitlines()))
        self.path = Path(path)
        self.problem = problem


class StoreLocked(StoreError):
    """Another process holds the database (two servers on one directory would diverge)."""


class StoreCorrupt(StoreError):
    """The file is not a (healthy) meshsub-trio database."""


class StoreTooNew(StoreError):
    """The file was written by a newer meshsub-trio, whose layout this one cannot read."""


class StoreUnreadable(StoreError):
    """The directory or file cannot be created, read or written (permissions, not a directory)."""


class StoreUnavailable(BrokerUnavailable):
    """The database refused a change while serving (writer behind, or a write failed)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.args = (f"database unavailable, change not accepted: {reason}",)

    def __str__(self) -> str:
        return str(self.args[0])
