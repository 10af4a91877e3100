"""One worker slot: a ``meshsub-trio serve`` child on inherited sockets, restarted if it dies.

A worker is the ordinary single-process server started with the user's own
options plus ``--workers 1`` and the shared ``--broker``; it learns its index
and listening descriptors from :data:`WORKER_ENV`. It is ready when it prints
the line every server prints (``meshsub-trio serving on ...``). Its stdin is a
pipe that only closes when the supervisor is gone, which ends the worker.
From then on its event loop beats on a pipe of its own (:mod:`._heartbeat`),
and a worker silent for the slot's timeout is killed, so that it restarts.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import trio

from ._heartbeat import HEARTBEAT_ENV, BeatPipe, Heartbeat, beat_interval, watch_heartbeats
from ._process import Backoff, stop_process

log = logging.getLogger("meshsub_trio.workers")

#: ``INDEX:FD[,FD...]``: set by the supervisor for its workers only.
WORKER_ENV = "_MESHSUB_WORKER"
READY = b"meshsub-trio serving on "


class WorkerFailed(RuntimeError):
    """A worker exited before it ever served: its own error is on stderr."""

    def __init__(self, index: int, code: int | None) -> None:
        super().__init__(f"worker {index} exited with code {code} before serving")
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
            try:
                process = await trio.lowlevel.open_process(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    pass_fds=[*self.fds, *([beats.write] if beats is not None else [])],
                    env=self._environment(beats),
                    start_new_session=True,  # a terminal's Ctrl-C is the supervisor's to order
                )
            except BaseException:
                if beats is not None:
                    beats.close()
                raise
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
            await backoff.wait()

    async def _serve(
        self,
        process: trio.Process,
        first: bool,
        task_status: trio.TaskStatus[WorkerSlot],
        beats: BeatPipe | None,
    ) -> int:
        """Wait for readiness (or the exit), then drain its stdout until it exits,
        watching its heartbeat meanwhile."""
        assert process.stdout is not None
        ready = await _read_until_ready(process.stdout)
        if ready:
            if first:
                task_status.started(self)
            else:
                announce(self)
        elif first and not self._stopping:
            raise WorkerFailed(self.index, await process.wait())
        async with trio.open_nursery() as nursery:
            if ready and beats is not None and not self._stopping:
                self._watching = trio.CancelScope()
                nursery.start_soon(self._watch, process, beats.read, self._watching)
            while await process.stdout.receive_some(4096):
                pass
            code = await process.wait()
            self._watching.cancel()
        return code

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

    async def stop(self, timeout: float) -> bool:
        """Drain it (SIGTERM), SIGKILL after *timeout*; no restart follows.

        False (and an error logged) when it had to be killed: it did not
        drain, so its clients may have lost what a drain would have flushed.
        """
        self._stopping = True
        self._watching.cancel()  # a drain has its own bound: no heartbeat kill during it
        process = self.process
        if process is None or process.returncode is not None:
            return True
        with trio.CancelScope(shield=True):
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(timeout):
                await process.wait()
            if process.returncode is not None:
                return True
            log.error(
                "worker %d did not drain within %.1f s: killing it (SIGKILL)",
                self.index,
                timeout,
                extra={"worker": self.index, "pid": process.pid},
            )
            process.kill()
            await process.wait()
        return False


async def _read_until_ready(stdout: trio.abc.ReceiveStream) -> bool:
    """Read the worker's stdout up to its serving line; False if it closed first."""
    pending = b""
    while True:
        chunk = await stdout.receive_some(4096)
        if not chunk:
            return False
        pending += chunk
        *lines, pending = pending.split(b"\n")
        if any(line.startswith(READY) for line in lines):
            return True
