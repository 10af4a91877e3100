"""One worker slot: a ``meshsub-trio serve`` child on inherited sockets, restarted if it dies.

A worker is the ordinary single-process server started with the user's own
options plus ``--workers 1`` and the shared ``--broker``; it learns its index
and listening descriptors from :data:`WORKER_ENV`. It is ready when it prints
the line every server prints (``meshsub-trio serving on ...``). Its stdin is a
pipe that only closes when the supervisor is gone, which ends the worker.
From then on its event loop beats on a pipe of its own (:mod:`._heartbeat`),
and a worker silent for the slot's timeout is killed, so that it restarts.
Before that, a worker that does not serve within :func:`startup_timeout`
(hung importing the app, opening its broker, binding) is killed too: a
restart is tried, and a supervisor's first start fails instead.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from math import inf

import trio

from ._heartbeat import HEARTBEAT_ENV, BeatPipe, Heartbeat, beat_interval, watch_heartbeats
from ._process import Backoff, stop_process

log = logging.getLogger("meshsub_trio.workers")

#: ``INDEX:FD[,FD...]``: set by the supervisor for its workers only.
WORKER_ENV = "_MESHSUB_WORKER"
READY = b"meshsub-trio serving on "
#: The start-up bound in heartbeat timeouts: a start imports the app, opens its
#: broker and replays the shared log, which may take longer than a loop's beat.
STARTUP_TIMEOUTS = 2


def startup_timeout(timeout: float) -> float:
    """Seconds a (re)started worker has to serve, for a ``--worker-timeout`` of
    *timeout* (0: no bound, as no heartbeat)."""
    return STARTUP_TIMEOUTS * timeout


class WorkerFailed(RuntimeError):
    """A worker exited (or hung, and was killed) before it ever served: its
    own error, if any, is on stderr."""

    def __init__(self, index: int, code: int | None, reason: str | None = None) -> None:
        super().__init__(reason or f"worker {index} exited with code {code} before serving")
        self.index = index
        self.code = code


def announce(slot: WorkerSlot) -> None:
    """The line that tells operators and tests which process is which worker."""
    print(f"meshsub-trio worker {slot.index} pid {slot.pid} serving", flush=True)


class WorkerSlot:
    """Worker *index*: started, watched, restarted; :meth:`stop` ends it for good."""

    def __init__(
        self,
        index: int,
        command: list[str],
        fds: list[int],
        environment: dict[str, str],
        timeout: float = 0.0,
    ) -> None:
        self.index = index
        self.command = command
        self.fds = fds
        #: Set on top of the supervisor's own environment (the broker's URL).
        self.environment = environment
        #: ``--worker-timeout``: seconds without a heartbeat before the kill (0: never).
        self.timeout = timeout
        self.process: trio.Process | None = None
        self.restarts = 0
        #: Processes killed because their event loop stopped beating.
        self.timeouts = 0
        self._stopping = False
        #: The current process's heartbeat watch (cancelled when it exits or stops).
        self._watching = trio.CancelScope()
        #: The wait before a restart: :meth:`halt` calls the restart off.
        self._restarting = trio.CancelScope()
        #: Set unless a process is being spawned: :meth:`halt` waits for it, so
        #: that no process it did not see starts after it.
        self._spawned = trio.Event()
        self._spawned.set()

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _environment(self, beats: BeatPipe | None) -> dict[str, str]:
        env = dict(os.environ, **self.environment)
        env[WORKER_ENV] = f"{self.index}:{','.join(map(str, self.fds))}"
        env.pop(HEARTBEAT_ENV, None)  # never a stale one from our own environment
        if beats is not None:
            env[HEARTBEAT_ENV] = Heartbeat(beats.write, beat_interval(self.timeout)).spec
        return env

    async def run(
        self, task_status: trio.TaskStatus[WorkerSlot] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the worker until :meth:`stop`; report started after its first readiness."""
        backoff = Backoff()
        first = True
        while not self._stopping:
            beats = BeatPipe() if self.timeout > 0 else None
            self._spawned = trio.Event()
            try:
                process = await self._open(beats)
            except BaseException:
                if beats is not None:
                    beats.close()
                raise
            finally:
                self._spawned.set()
            if beats is not None:
                beats.close_write()  # the child's copy is the only one: its exit is our EOF
            self.process = process
            backoff.started()
            try:
                code = await self._serve(process, first, task_status, beats)
            finally:
                await stop_process(process, timeout=2.0)
                with trio.CancelScope(shield=True):
                    for pipe in (process.stdin, process.stdout):
                        if pipe is not None:
                            await pipe.aclose()
                if beats is not None:
                    beats.close()
            first = False
            if self._stopping:
                return
            self.restarts += 1
            log.warning(
                "worker %d exited (code %s): restarting",
                self.index,
                code,
                extra={"worker": self.index, "pid": process.pid},
            )
            self._restarting = trio.CancelScope()
            with self._restarting:  # halt() ends the wait: the loop then ends too
                await backoff.wait()

    async def _open(self, beats: BeatPipe | None) -> trio.Process:
        return await trio.lowlevel.open_process(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            pass_fds=[*self.fds, *([beats.write] if beats is not None else [])],
            env=self._environment(beats),
            start_new_session=True,  # a terminal's Ctrl-C is the supervisor's to order
        )

    async def _serve(
        self,
        process: trio.Process,
        first: bool,
        task_status: trio.TaskStatus[WorkerSlot],
        beats: BeatPipe | None,
    ) -> int:
        """Wait for readiness (or the exit, or the start-up bound: then kill it),
        then drain its stdout until it exits, watching its heartbeat meanwhile."""
        assert isinstance(process.stdout, trio.lowlevel.FdStream)
        late: str | None = None
        bound = startup_timeout(self.timeout)
        deadline = trio.current_time() + bound if bound > 0 else inf
        ready = await _read_until_ready(process.stdout, deadline)
        if ready is None:
            ready = False
            late = self._kill_late(process, bound, first)
        if ready:
            if first:
                task_status.started(self)
            elif not self._stopping:
                announce(self)
        elif first and not self._stopping:
            raise WorkerFailed(self.index, await process.wait(), late)
        async with trio.open_nursery() as nursery:
            if ready and beats is not None and not self._stopping:
                self._watching = trio.CancelScope()
                nursery.start_soon(self._watch, process, beats.read, self._watching)
            while await process.stdout.receive_some(4096):
                pass
            code = await process.wait()
            self._watching.cancel()
        return code

    def _kill_late(self, process: trio.Process, bound: float, first: bool) -> str | None:
        """SIGKILL *process*, which did not serve within *bound* seconds (a stop
        under way has its own bound); the first start then fails, a restart is
        restarted. Why, for the first start's failure."""
        if self._stopping or process.returncode is not None:
            return None
        reason = (
            f"worker {self.index} did not start serving within {bound:.1f} s "
            f"(pid {process.pid}): killed it"
        )
        if not first:
            log.error(
                "worker %d did not start serving within %.1f s: killing it to restart it",
                self.index,
                bound,
                extra={"worker": self.index, "pid": process.pid, "timeout": bound},
            )
        process.kill()
        return reason

    async def _watch(self, process: trio.Process, fd: int, scope: trio.CancelScope) -> None:
        """Kill *process* (SIGKILL: a stopped or spinning loop ignores SIGTERM)
        if its loop stops beating; the restart loop then starts a new one."""

        def hung(silence: float) -> None:
            # Checked here, at the kill, not only by cancelling the watch: a
            # deadline may already have woken this task when stop() began.
            if self._stopping or process.returncode is not None:
                return
            log.error(
                "worker %d's event loop sent no heartbeat for %.1f s: killing it to restart it",
                self.index,
                silence,
                extra={"worker": self.index, "pid": process.pid, "timeout": self.timeout},
            )
            self.timeouts += 1
            process.kill()

        with scope:
            await watch_heartbeats(fd, self.timeout, hung)

    def signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def halt(self) -> None:
        """Start no process from now on: a restart's wait is called off, and a
        spawn already under way is waited for, so :meth:`stop` sees (and
        stops) its process instead of missing it."""
        self._stopping = True
        self._watching.cancel()  # a drain has its own bound: no heartbeat kill during it
        self._restarting.cancel()
        with trio.CancelScope(shield=True):
            await self._spawned.wait()

    async def stop(self, timeout: float) -> bool:
        """Drain it (SIGTERM), SIGKILL after *timeout*; no restart follows.

        False (and an error logged) when it had to be killed: it did not
        drain, so its clients may have lost what a drain would have flushed.
        """
        await self.halt()
        process = self.process
        if process is None:
            return True
        killed = False

        def overdue() -> None:
            nonlocal killed
            killed = True
            log.error(
                "worker %d did not drain within %.1f s: killing it (SIGKILL)",
                self.index,
                timeout,
                extra={"worker": self.index, "pid": process.pid},
            )

        await stop_process(process, timeout=timeout, overdue=overdue)
        return not killed


async def _read_until_ready(stdout: trio.lowlevel.FdStream, deadline: float) -> bool | None:
    """Read the worker's stdout up to its serving line: True; False if it closed
    first, None if *deadline* passed first.

    At the deadline what the pipe holds is read once more, so a supervisor
    that was itself held up finds a line written meanwhile instead of
    killing a worker that served.
    """
    pending = b""
    while True:
        chunk: bytes | None = None
        with trio.move_on_at(deadline):
            chunk = await stdout.receive_some(4096)
        if chunk is None:
            try:
                chunk = os.read(stdout.fileno(), 4096)
            except BlockingIOError:
                return None
        if not chunk:
            return False
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if any(line.startswith(READY) for line in lines):
            return True
