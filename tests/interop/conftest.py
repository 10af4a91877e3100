"""Interop plumbing: asyncio clients in a worker thread, Node scripts as subprocesses.

The server always runs in the Trio test (the ``server``/``start_server``
fixtures); third-party clients run beside it, so every byte crosses a real
socket. Nothing here sleeps: the two sides synchronise on server metrics and
on explicit handshakes (stdin lines for Node, a Trio portal for asyncio).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from meshsub_trio import App, Context, Server
from meshsub_trio.examples.countdown import countdown, ticks

T = TypeVar("T")

JS_DIR = Path(__file__).parent / "js"
NODE_MODULES = JS_DIR / "node_modules"
INSTALL_HINT = "run scripts/install-test-deps (npm ci in tests/interop/js) first"


# ---- an app that shows what the connection carried ----------------------------

PARAMS_SCHEMA = """
type Query {
  hello: String!
  connectionParam(name: String!): String
}
type Subscription {
  countdown(to: Int!): Int!
  ticks(everyMs: Int = 50): Int!
}
"""

#: connection_init payloads carrying this token are refused (4403 / connection_error).
REFUSED_TOKEN = "wrong"


async def _on_connect(ctx: Context) -> Any:
    """Refuse the bad token; otherwise ack with a payload echoing the params."""
    params = ctx.connection_params or {}
    if params.get("token") == REFUSED_TOKEN:
        return False
    return {"greeting": "welcome", "echo": params}


def _connection_param(_root: Any, info: Any, name: str) -> str | None:
    params = info.context.connection_params or {}
    value = params.get(name)
    return None if value is None else str(value)


def make_params_app() -> App:
    """The countdown app plus an ack payload and a field reading connection params."""
    return App(
        PARAMS_SCHEMA,
        resolvers={
            "Query": {
                "hello": lambda _root, _info: "Hello from meshsub-trio",
                "connectionParam": _connection_param,
            }
        },
        streamers={"countdown": countdown, "ticks": ticks},
        on_connect=_on_connect,
    )


@pytest.fixture
async def params_server(start_server: Callable[..., Awaitable[Server]]) -> Server:
    """A server whose on_connect hook echoes connection params into the ack."""
    return await start_server(app=make_params_app())


def ws_url(server: Server, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{server.port}{path}"


async def wait_metrics(
    server: Server, predicate: Callable[[Any], bool], timeout: float = 5.0
) -> None:
    """Wait for a server-side condition, failing (not hanging) if it never holds."""
    with trio.fail_after(timeout):
        await server.metrics.wait_for(predicate)


async def wait_idle(server: Server, timeout: float = 5.0) -> None:
    """Every connection gone and every operation cleaned up, within *timeout*."""
    with trio.fail_after(timeout):
        await server.metrics.wait_idle()


# ---- asyncio clients (gql) in a worker thread -------------------------------------


async def run_asyncio(make_coro: Callable[[], Coroutine[Any, Any, T]], timeout: float = 15.0) -> T:
    """Run an asyncio coroutine on its own loop in a worker thread.

    The asyncio side carries its own deadline, so the thread always ends and
    the Trio side never has to abandon it; its exceptions re-raise here.
    """

    async def bounded() -> T:
        return await asyncio.wait_for(make_coro(), timeout)

    def run() -> T:
        # A plain selector loop, whatever the policy: once trio-asyncio is
        # imported (the NATS tests), its policy would make ``asyncio.run``
        # build a SyncTrioEventLoop, on which callbacks see no running loop.
        with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
            return runner.run(bounded())

    with trio.fail_after(timeout + 5):
        return await trio.to_thread.run_sync(run)


class TrioPortal:
    """Lets asyncio code (in a worker thread) await a Trio function in the test.

    Used to check the server's metrics at a precise point of a client's run,
    while the client keeps its connection open.
    """

    def __init__(self) -> None:
        self._token = trio.lowlevel.current_trio_token()

    async def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return await asyncio.to_thread(trio.from_thread.run, fn, *args, trio_token=self._token)


@pytest.fixture
async def portal() -> TrioPortal:
    """Async so that it is built inside the test's Trio run (it needs its token)."""
    return TrioPortal()


# ---- Node scripts ------------------------------------------------------------------


def _installed_mismatches() -> list[str]:
    """Locked dependencies that node_modules lacks or holds at another version."""
    wanted: dict[str, str] = json.loads((JS_DIR / "package.json").read_text())["dependencies"]
    problems = []
    for name, version in wanted.items():
        manifest = NODE_MODULES / name / "package.json"
        if not manifest.is_file():
            problems.append(f"{name} is missing")
        elif (found := json.loads(manifest.read_text())["version"]) != version:
            problems.append(f"{name} is {found}, the lock wants {version}")
    return problems


@pytest.fixture(scope="session")
def node() -> str:
    """The node binary, with the locked packages installed; fails (never skips) if not."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail(f"node is not on PATH: install Node.js >= 20, then {INSTALL_HINT}")
    if problems := _installed_mismatches():
        pytest.fail(f"{NODE_MODULES}: {'; '.join(problems)}: {INSTALL_HINT}")
    return binary


@dataclass
class NodeRun:
    """What one script printed: its events in order, its exit code and stderr."""

    script: str
    events: list[dict[str, Any]] = field(default_factory=list)
    returncode: int | None = None
    stderr: str = ""

    def named(self, name: str) -> list[dict[str, Any]]:
        return [event for event in self.events if event["event"] == name]

    def kinds(self) -> list[str]:
        return [event["event"] for event in self.events]

    def __str__(self) -> str:
        lines = "\n  ".join(json.dumps(event) for event in self.events)
        tail = self.stderr.strip()[-2000:]
        return f"{self.script} exited {self.returncode}; events:\n  {lines}\nstderr:\n{tail}"

    def assert_ok(self) -> None:
        """The script finished its scenario: exit 0, a final ``done``, no failure event."""
        assert self.returncode == 0 and self.kinds()[-1:] == ["done"], str(self)
        assert not self.named("failure"), str(self)


class NodeSession:
    """A running script: read its events as they arrive and answer on stdin."""

    def __init__(self, process: trio.Process, run: NodeRun) -> None:
        self._process = process
        self._buffer = b""
        self.run = run

    async def _next_line(self) -> bytes | None:
        assert self._process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self._process.stdout.receive_some()
            if not chunk:
                rest, self._buffer = self._buffer, b""
                return rest or None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    async def next_event(self) -> dict[str, Any] | None:
        """The next event, or None at end of output. Non-JSON lines fail the test."""
        line = await self._next_line()
        if line is None:
            return None
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"non-JSON output {line!r}\n{self.run}") from None
        self.run.events.append(event)
        return event

    async def expect(self, name: str) -> dict[str, Any]:
        """Read up to the first event called *name*; fail if the script ends first."""
        while (event := await self.next_event()) is not None:
            if event["event"] == name:
                return event
            if event["event"] == "failure":
                break
        raise AssertionError(f"no {name!r} event\n{self.run}")

    async def answer(self, line: str) -> None:
        assert self._process.stdin is not None
        await self._process.stdin.send_all(line.encode() + b"\n")

    async def drain(self) -> None:
        while await self.next_event() is not None:
            pass


async def _collect_stderr(stream: trio.abc.ReceiveStream, run: NodeRun) -> None:
    """Kept as it arrives, so a failure mid-session can still show it."""
    async for chunk in stream:
        run.stderr += chunk.decode(errors="replace")


async def _close_pipes(process: trio.Process) -> None:
    """run_process leaves pipes it did not create to us: close them (no fd leaks)."""
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            await stream.aclose()


@asynccontextmanager
async def node_session(
    node: str, script: str, *args: str, timeout: float = 20.0
) -> AsyncIterator[NodeSession]:
    """Start ``node js/<script> <args>``; on exit read the rest and reap it.

    If the test body fails, the process is killed with the nursery.
    """
    run = NodeRun(script)
    command = [node, str(JS_DIR / script), *args]
    process: trio.Process | None = None
    try:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        command,
                        cwd=str(JS_DIR),
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        check=False,
                    )
                )
                assert process is not None and process.stderr is not None
                nursery.start_soon(_collect_stderr, process.stderr, run)
                session = NodeSession(process, run)
                yield session
                await session.drain()
                run.returncode = await process.wait()
    finally:
        if process is not None:
            with trio.CancelScope(shield=True):
                await _close_pipes(process)


async def run_node(node: str, script: str, *args: str, timeout: float = 20.0) -> NodeRun:
    """Run a script to the end without interaction and return what it printed."""
    async with node_session(node, script, *args, timeout=timeout) as session:
        pass
    return session.run


# ---- the shipped CLI -----------------------------------------------------------------

_SERVING = re.compile(rb"meshsub-trio serving on (http://\S+)")


@dataclass
class CliServer:
    """A ``meshsub-trio serve`` subprocess: its URL, and how it ended."""

    url: str = ""
    returncode: int | None = None
    output: bytearray = field(default_factory=bytearray)


@asynccontextmanager
async def cli_server(*args: str, timeout: float = 20.0) -> AsyncIterator[CliServer]:
    """Run ``python -m meshsub_trio serve <args> --port 0``; SIGTERM it on exit.

    Yields once the CLI has printed its URL, so nothing races its startup.
    """
    cli = CliServer()
    command = [sys.executable, "-m", "meshsub_trio", "serve", *args, "--port", "0"]
    process: trio.Process | None = None
    try:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                process = await nursery.start(
                    partial(
                        trio.run_process,
                        command,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT,
                        check=False,
                    )
                )
                assert process is not None and process.stdout is not None
                async for chunk in process.stdout:
                    cli.output += chunk
                    if match := _SERVING.search(cli.output):
                        cli.url = match.group(1).decode()
                        break
                assert cli.url, f"the CLI exited before serving:\n{cli.output.decode()}"
                nursery.start_soon(_keep_reading, process.stdout, cli.output)
                try:
                    yield cli
                finally:
                    if process.returncode is None:
                        process.send_signal(signal.SIGTERM)
                cli.returncode = await process.wait()
    finally:
        if process is not None:
            with trio.CancelScope(shield=True):
                await _close_pipes(process)


async def _keep_reading(stream: trio.abc.ReceiveStream, sink: bytearray) -> None:
    async for chunk in stream:
        sink += chunk
