"""Child-process chores shared by the worker slots and the embedded nats-server."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Protocol

import trio

#: A child up this long is healthy again: its next restart is immediate.
HEALTHY_AFTER = 10.0
_PR_SET_PDEATHSIG = 1


class Backoff:
    """Restart delays: immediate after a healthy run, doubling while a child crash-loops."""

    def __init__(self, first: float = 0.1, limit: float = 5.0) -> None:
        self.first = first
        self.limit = limit
        self._delay = 0.0
        self._started = trio.current_time()

    def started(self) -> None:
        self._started = trio.current_time()

    async def wait(self) -> None:
        if trio.current_time() - self._started >= HEALTHY_AFTER:
            self._delay = 0.0
        await trio.sleep(self._delay)
        self._delay = min(self.limit, max(self.first, self._delay * 2))


class Child(Protocol):
    """What :func:`stop_process` needs: a ``trio.Process`` or a :class:`Spawned`."""

    @property
    def returncode(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def kill(self) -> None: ...

    async def wait(self) -> int: ...


async def stop_process(
    child: Child,
    *,
    timeout: float,
    sig: int = signal.SIGTERM,
    overdue: Callable[[], None] | None = None,
) -> int:
    """Send *sig*, SIGKILL if it has not exited after *timeout* (calling
    *overdue* first, if given: a worker slot reports it); its exit code."""
    code = -1
    with trio.CancelScope(shield=True):
        if child.returncode is None:
            if timeout > 0:
                child.send_signal(sig)
            with trio.move_on_after(timeout):
                await child.wait()
            if child.returncode is None:
                if overdue is not None:
                    overdue()
                child.kill()
        code = await child.wait()
    return code


class Spawned:
    """A child forked by the main thread, so Linux's parent-death signal means our death.

    ``trio.lowlevel.open_process`` forks from a worker thread, and Linux sends
    ``PR_SET_PDEATHSIG`` when the forking *thread* exits: an idle pool thread
    would stop nats-server after a few seconds. Its exit is awaited on a
    pidfd where there is one, else in a thread.
    """

    def __init__(self, command: list[str]) -> None:
        self.popen = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # a terminal's Ctrl-C is the supervisor's to order
            preexec_fn=_death_signal(signal.SIGTERM),
        )
        assert self.popen.stderr is not None
        self.stderr = trio.lowlevel.FdStream(os.dup(self.popen.stderr.fileno()))
        self.popen.stderr.close()

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def send_signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()

    async def wait(self) -> int:
        if self.popen.poll() is None:
            if hasattr(os, "pidfd_open"):
                with _pidfd(self.popen.pid) as fd:
                    await trio.lowlevel.wait_readable(fd)
            else:  # pragma: no cover - no pidfd (macOS, old Linux)
                await trio.to_thread.run_sync(self.popen.wait, abandon_on_cancel=True)
        return self.popen.wait()


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int]:
    fd = os.pidfd_open(pid)
    try:
        yield fd
    finally:
        trio.lowlevel.notify_closing(fd)
        os.close(fd)


def _death_signal(sig: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to send *sig* when the parent dies (None elsewhere)."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    prctl = ctypes.CDLL(name, use_errno=True).prctl

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)

    return hook
