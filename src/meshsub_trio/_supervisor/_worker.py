"""One worker slot: a ``meshsub-trio serve`` child on inherited sockets, restarted if it dies.

A worker is the ordinary single-process server started with the user's own
options plus ``--workers 1`` and the shared ``--broker``; it learns its index
and listening descriptors from :data:`WORKER_ENV`. It is ready when it prints
the line every server prints (``meshsub-trio serving on ...``). Its stdin is a
pipe that only closes when the supervisor is gone, which ends the worker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

import trio

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
        self, index: int, command: list[str], fds: list[int], environment: dict[str, str]
    ) -> None:
        self.index = index
        self.command = command
        self.fds = fds
        #: Set on top of the supervisor's own environment (the broker's URL).
        self.environment = environment
        self.process: trio.Process | None = None
        self.restarts = 0
        self._stopping = False

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ, **self.environment)
        env[WORKER_ENV] = f"{self.index}:{','.join(map(str, self.fds))}"
        return env

    async def run(
        self, task_status: trio.TaskStatus[WorkerSlot] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the worker until :meth:`stop`; report started after its first readiness."""
        backoff = Backoff()
        first = True
        while not self._stopping:
            process = await trio.lowlevel.open_process(
                self.command,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=self.fds,
                env=self._environment(),
                start_new_session=True,  # a terminal's Ctrl-C is the supervisor's to order
            )
            self.process = process
            backoff.started()
            try:
                code = await self._serve(process, first, task_status)
            finally:
                await stop_process(process, timeout=2.0)
                with trio.CancelScope(shield=True):
                    for pipe in (process.stdin, process.stdout):
                        if pipe is not None:
                            await pipe.aclose()
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
        self, process: trio.Process, first: bool, task_status: trio.TaskStatus[WorkerSlot]
    ) -> int:
        """Wait for readiness (or the exit), then drain its stdout until it exits."""
        assert process.stdout is not None
        ready = await _read_until_ready(process.stdout)
        if ready:
            if first:
                task_status.started(self)
            else:
                announce(self)
        elif first and not self._stopping:
            raise WorkerFailed(self.index, await process.wait())
        while await process.stdout.receive_some(4096):
            pass
        return await process.wait()

    def signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signum)

    async def stop(self, timeout: float) -> None:
        """Drain it (SIGTERM), SIGKILL after *timeout*; no restart follows."""
        self._stopping = True
        if self.process is not None:
            await stop_process(self.process, timeout=timeout)


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
