"""What a worker does differently from a lone server: its sockets, its log lines, its parent."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from ._sockets import inherited_listeners
from ._worker import WORKER_ENV


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker *index* of a supervisor, serving on inherited *fds*."""

    index: int
    fds: tuple[int, ...]

    def listeners(self) -> list[trio.SocketListener]:
        return inherited_listeners(list(self.fds))


def worker_role(environ: Mapping[str, str] = os.environ) -> WorkerRole | None:
    """The role the supervisor gave this process, or None for a lone server."""
    spec = environ.get(WORKER_ENV)
    if not spec:
        return None
    index, _, fds = spec.partition(":")
    try:
        return WorkerRole(int(index), tuple(int(fd) for fd in fds.split(",") if fd))
    except ValueError:
        raise SystemExit(f"meshsub-trio: bad {WORKER_ENV}={spec!r}") from None


class _WorkerField(logging.Filter):
    """Adds ``worker=INDEX`` to every line, so N interleaved logs stay apart."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):
            record.worker = self.index
        return True


def tag_log_lines(index: int) -> None:
    """Every handler of the root logger marks its lines with this worker's index."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(index))


async def end_with_parent() -> None:
    """SIGTERM ourselves (the usual graceful drain) once the supervisor's pipe closes.

    (A worker's graphql-sse relay is no business of this: every ``serve
    --broker nats://`` process runs one on its broker, see ``_cli_run``.)
    """
    await _wait_for_parent_gone()
    os.kill(os.getpid(), signal.SIGTERM)


async def _wait_for_parent_gone() -> None:
    stream = trio.lowlevel.FdStream(os.dup(0))
    async with stream:
        try:
            while await stream.receive_some(4096):
                pass
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
