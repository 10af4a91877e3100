"""What a worker does differently from a lone server: its sockets, its log lines, its parent."""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from ._heartbeat import Heartbeat, heartbeat_from
from ._sockets import inherited_listeners
from ._worker import WORKER_ENV


@dataclass(frozen=True)
class WorkerRole:
    """This process is worker *index* of a supervisor, serving on inherited *fds*."""

    index: int
    fds: tuple[int, ...]
    #: Where its event loop proves it runs (None: the supervisor watches no loop).
    heartbeat: Heartbeat | None = None

    def listeners(self) -> list[trio.SocketListener]:
        return inherited_listeners(list(self.fds))


def worker_role(environ: Mapping[str, str] = os.environ) -> WorkerRole | None:
    """The role the supervisor gave this process, or None for a lone server."""
    spec = environ.get(WORKER_ENV)
    if not spec:
        return None
    index, _, fds = spec.partition(":")
    try:
        listening = tuple(int(fd) for fd in fds.split(",") if fd)
        return WorkerRole(int(index), listening, heartbeat_from(environ))
    except ValueError:
        raise SystemExit(f"meshsub-trio: bad {WORKER_ENV}={spec!r}") from None


#: The ``worker`` field of the supervisor's own lines.
SUPERVISOR = "supervisor"


class _WorkerField(logging.Filter):
    """Adds ``worker=INDEX`` (or ``worker=supervisor``) to every line, so N + 1
    interleaved logs stay apart. Always text, in JSON too: a log index gets one
    type for the field (an integer-typed field would refuse ``supervisor``)."""

    def __init__(self, who: int | str) -> None:
        super().__init__()
        self.who = str(who)

    def filter(self, record: logging.LogRecord) -> bool:
        # A line about a worker (the supervisor's "worker 1 exited") keeps its index.
        record.worker = str(getattr(record, "worker", self.who))
        return True


def tag_log_lines(who: int | str) -> None:
    """Every handler of the root logger marks its lines with *who* wrote them: a
    worker's index, or :data:`SUPERVISOR`."""
    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerField(who))


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
