"""The worker timeout: each worker's event loop beats over a pipe; a silent one is killed.

A worker that exits is restarted by its slot, but one whose Trio loop is
stuck (a busy loop, a blocking call, a deadlock in a thread it waits on)
keeps its process, its listening socket and its clients, and serves none of
them. Exits are all the supervisor would see, so each worker proves its loop
runs: a task beside the server writes one byte to an inherited pipe every
:func:`beat_interval` seconds. The supervisor reads the other end; after
``--worker-timeout`` seconds without a byte it SIGKILLs the worker (which
ends a stopped or spinning process alike) and the slot restarts it.

The write is non-blocking and a full pipe drops the beat: a supervisor that
falls behind must never stall its workers. Only a worker that said it serves
is watched (start-up may import and replay for a while: its own, longer
bound is :func:`._worker.startup_timeout`), and the watch ends before a
drain begins, so a drain's own bound decides about a slow drain.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

#: ``FD,INTERVAL``: the pipe a worker beats on, and how often; set for workers only.
HEARTBEAT_ENV = "_MESHSUB_HEARTBEAT"
#: Seconds between beats when the timeout allows it (gunicorn's workers notify as often).
BEAT_EVERY = 1.0
#: Beats per timeout at the least: a few late beats (a loaded machine) are no hang.
BEATS_PER_TIMEOUT = 4
_BEAT = b"."


def beat_interval(timeout: float) -> float:
    """How often a worker beats for a supervisor waiting *timeout* seconds."""
    return min(BEAT_EVERY, timeout / BEATS_PER_TIMEOUT)


@dataclass(frozen=True)
class Heartbeat:
    """Where and how often this worker's loop says it is alive."""

    fd: int
    interval: float

    @property
    def spec(self) -> str:
        return f"{self.fd},{self.interval!r}"


def heartbeat_from(environ: Mapping[str, str]) -> Heartbeat | None:
    """The heartbeat the supervisor asked for, or None (a lone ``serve`` sends nothing)."""
    spec = environ.get(HEARTBEAT_ENV)
    if not spec:
        return None
    fd, _, interval = spec.partition(",")
    try:
        heartbeat = Heartbeat(int(fd), float(interval))
    except ValueError:
        raise SystemExit(f"meshsub-trio: bad {HEARTBEAT_ENV}={spec!r}") from None
    if heartbeat.fd < 0 or not heartbeat.interval > 0:
        raise SystemExit(f"meshsub-trio: bad {HEARTBEAT_ENV}={spec!r}")
    return heartbeat


async def send_heartbeats(heartbeat: Heartbeat) -> None:
    """Beat until cancelled, or until the supervisor's end is gone (its own
    pipe, stdin, then ends this worker). Never blocks: a beat the pipe cannot
    take is dropped, the next one will do."""
    fd = heartbeat.fd
    os.set_blocking(fd, False)
    os.set_inheritable(fd, False)  # a child of ours must not hold the supervisor's pipe open
    try:
        while True:
            try:
                os.write(fd, _BEAT)
            except BlockingIOError:
                pass  # the supervisor has 64 KiB of beats to read: it is not waiting on us
            except OSError:
                return  # EPIPE: nobody reads any more
            await trio.sleep(heartbeat.interval)
    finally:
        os.close(fd)


class BeatPipe:
    """One worker process's heartbeat pipe, as the supervisor holds it.

    The write end goes to the child (``pass_fds``) and is closed here as
    soon as the child holds its copy, so the read end sees end-of-file
    exactly when the worker is gone.
    """

    def __init__(self) -> None:
        self.read, self.write = os.pipe()
        os.set_blocking(self.read, False)
        self._write_open = True
        self._read_open = True

    def close_write(self) -> None:
        if self._write_open:
            self._write_open = False
            os.close(self.write)

    def close(self) -> None:
        self.close_write()
        if self._read_open:
            self._read_open = False
            trio.lowlevel.notify_closing(self.read)
            os.close(self.read)


async def watch_heartbeats(fd: int, timeout: float, hung: Callable[[float], None]) -> None:
    """Read beats from *fd* until the writer closes it (the worker exited);
    call ``hung(silence)`` once and return after *timeout* seconds without one.

    The pipe is read once more when the deadline passes, so a supervisor
    that was itself held up (stopped, starved of CPU) finds the beats that
    came meanwhile instead of killing every worker as it resumes.
    """
    last = trio.current_time()
    while True:
        with trio.move_on_at(last + timeout):
            await trio.lowlevel.wait_readable(fd)
        try:
            received = os.read(fd, 4096)
        except BlockingIOError:
            received = None
        if received == b"":
            return
        now = trio.current_time()
        if received:
            last = now
        elif now - last >= timeout:
            hung(now - last)
            return
