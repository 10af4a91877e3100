"""``meshsub-trio serve --workers N`` as a user runs it, and which worker owns a socket.

The supervisor's stdout is its readiness channel: ``meshsub-trio serving on
URL`` once every worker serves, then ``meshsub-trio worker I pid P serving``
for each worker and again after every restart. A connection's worker is read
from the kernel (``/proc/net/tcp*`` and ``/proc/PID/fd``), not from the server.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from meshsub_trio.testing import ClientClosed

SOON = 20.0
GRAPHQL = "/api/system/graphql/query"
EVENTS = "subscription { subscribeEvents { id description } }"
PUBLISH = (
    "mutation($d: String!) { publishEvent(input: {severity: informational, description: $d})"
    " { id } }"
)
_WORKER = re.compile(rb"meshsub-trio worker (\d+) pid (\d+) serving")


class Supervisor:
    """A running ``serve --workers`` process and what its stdout said so far."""

    def __init__(self, process: trio.Process, log: Path) -> None:
        self.process = process
        self.log = log
        self.port = 0
        #: Worker index -> pid of its current process.
        self.workers: dict[int, int] = {}
        self.restarts = 0
        self.lines: list[bytes] = []
        self._changed = trio.Event()

    async def read_stdout(self, task_status: trio.TaskStatus[None]) -> None:
        assert self.process.stdout is not None
        pending = b""
        started = False
        async for chunk in self.process.stdout:
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self.lines.append(line)
                if line.startswith(b"meshsub-trio serving on http://127.0.0.1:"):
                    self.port = int(line.rsplit(b":", 1)[1])
                elif (match := _WORKER.search(line)) is not None:
                    index, pid = int(match.group(1)), int(match.group(2))
                    self.restarts += index in self.workers
                    self.workers[index] = pid
            self._changed.set()
            self._changed = trio.Event()
            if not started and self.port and len(self.workers) >= 1:
                started = True
                task_status.started()
        self._changed.set()
        if not started:
            raise AssertionError(f"the supervisor exited before serving:\n{self.stderr()}")

    async def wait_for(self, done: Any, what: str) -> None:
        with trio.fail_after(SOON):
            while not done():
                if self.process.returncode is not None:
                    raise AssertionError(f"supervisor exited waiting for {what}:\n{self.stderr()}")
                await self._changed.wait()

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@asynccontextmanager
async def open_supervisor(
    tmp: Path, *args: str, workers: int = 2, env: dict[str, str] | None = None
) -> AsyncIterator[Supervisor]:
    """``python -m meshsub_trio serve --workers N`` on a free port, every worker serving
    (*env* on top of this process's environment)."""
    log = tmp / f"supervisor-{len(list(tmp.glob('supervisor-*')))}.log"
    env = dict(os.environ, MESHSUB_DATA_DIR=str(tmp / "data"), **(env or {}))
    command = [sys.executable, "-m", "meshsub_trio", "serve", "--workers", str(workers)]
    command += ["--port", "0", "--keepalive", "0", "--no-simulator", *args]
    with open(log, "wb") as stderr:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=stderr, env=env
        )
    supervisor = Supervisor(process, log)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(SOON):
                await nursery.start(supervisor.read_stdout)
            await supervisor.wait_for(lambda: len(supervisor.workers) == workers, "workers")
            yield supervisor
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.terminate()  # drains the workers and stops nats-server
                with trio.move_on_after(SOON):
                    await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


def owner_of(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """The pid among *pids* holding the server end of 127.0.0.1:*client_port*."""
    inode = _server_socket_inode(server_port, client_port)
    if inode is None:
        return None
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            names = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for name in names:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}") == target:
                    return pid
            except OSError:
                continue
    return None


def _server_socket_inode(server_port: int, client_port: int) -> str | None:
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            next(file)
            for row in file:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return inode
    return None


class Conn:
    """One WebSocket client whose messages one task sorts by operation id."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.by_op: dict[str | None, list[dict[str, Any]]] = {}
        self.closed = False
        self._changed = trio.Event()

    async def pump(self) -> None:
        try:
            while True:
                message = await self.client.receive()
                self.by_op.setdefault(message.get("id"), []).append(message)
                self._notify()
        except ClientClosed:
            self.closed = True
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, done: Any, what: str) -> None:
        with trio.fail_after(SOON):
            while not done():
                if self.closed:
                    raise AssertionError(f"closed while waiting for {what}")
                await self._changed.wait()

    async def publish(self, description: str) -> None:
        """``publishEvent`` over this socket, so it runs on this connection's worker."""
        op = await self.client.start(PUBLISH, {"d": description})
        await self.wait(lambda: self.by_op.get(op), f"the result of {description}")
        message = self.by_op[op][0]
        assert message["type"] == "next" and "errors" not in message["payload"], message

    def events(self, op: str) -> list[tuple[str, str | None]]:
        """(description, cursor) of each event operation *op* received."""
        return [
            (
                m["payload"]["data"]["subscribeEvents"]["description"],
                m["payload"].get("extensions", {}).get("cursor"),
            )
            for m in self.by_op.get(op, [])
            if m["type"] == "next"
        ]

    async def wait_events(self, op: str, count: int) -> list[str]:
        await self.wait(lambda: len(self.events(op)) >= count, f"{count} events")
        return [description for description, _ in self.events(op)]


def local_port(client: Any) -> int:
    """The client side's port of a testing-kit WebSocket client."""
    return int(client._stream.socket.getsockname()[1])
