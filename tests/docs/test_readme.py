"""Every code block in the README runs, as written, so the docs cannot drift.

Each block is recognised by what it is for and run the way a reader would:
shell blocks in bash, Python blocks with the interpreter (or pytest, for the
testing example), the JavaScript block under Node with the npm packages of
``tests/interop/js``. The only change made to a block is the address: the
README says ``127.0.0.1:9081`` (and ``4222`` for NATS), the tests use free
ports. :func:`test_every_block_is_run` fails when a block appears that no test
knows, so a new example cannot slip in untested.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trio

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
JS_DIR = ROOT / "tests" / "interop" / "js"
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Block:
    language: str
    line: int
    text: str


def readme_blocks() -> list[Block]:
    blocks: list[Block] = []
    language: str | None = None
    lines: list[str] = []
    start = 0
    for number, line in enumerate(README.read_text("utf-8").splitlines(), 1):
        if line.startswith("```"):
            if language is None:
                language, lines, start = line[3:].strip(), [], number
            else:
                blocks.append(Block(language, start, "\n".join(lines) + "\n"))
                language = None
        elif language is not None:
            lines.append(line)
    return blocks


def find(predicate: Callable[[Block], bool]) -> Block:
    found = [block for block in readme_blocks() if predicate(block)]
    assert len(found) == 1, f"expected one such README block, found {len(found)}"
    return found[0]


#: What each block is for: (name, how it is recognised).
KINDS: dict[str, Callable[[Block], bool]] = {
    "install and serve": lambda b: b.language == "sh" and "pip install -e ." in b.text,
    "the test command": lambda b: b.language == "sh" and b.text.strip() == "bash scripts/test",
    "graphql-ws in Node": lambda b: b.language == "js" and '"graphql-ws"' in b.text,
    "graphql-sse in Node": lambda b: b.language == "js" and '"graphql-sse"' in b.text,
    "EventSource in Node": lambda b: b.language == "js" and '"eventsource"' in b.text,
    "publish with curl": lambda b: b.language == "sh" and b.text.startswith("curl"),
    "scale-out": lambda b: b.language == "sh" and "nats-server" in b.text,
    "testing conftest": lambda b: b.text.startswith("# conftest.py"),
    "testing example": lambda b: b.text.startswith("# test_reconnect.py"),
    "embedding": lambda b: b.language == "python" and "nursery.start(serve" in b.text,
    "Python client": lambda b: b.language == "python" and "open_client" in b.text,
    "subscribe command": lambda b: b.language == "sh" and "meshsub-trio subscribe" in b.text,
    "synopsis": lambda b: b.language == "" and b.text.startswith("meshsub-trio serve"),
}


def test_every_block_is_run() -> None:
    blocks = readme_blocks()
    assert len(blocks) >= len(KINDS)
    for block in blocks:
        kinds = [name for name, matches in KINDS.items() if matches(block)]
        assert len(kinds) == 1, f"README line {block.line}: no test runs this block ({kinds})"


# ---- running things ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MESHSUB_DATA_DIR", ":memory:")
    return env


class Running:
    """A process started from a README block, its output read line by line."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._buffer = b""

    async def until(self, wanted: Callable[[str], bool], timeout: float = 30) -> str:
        """The first line of output *wanted* accepts (stdout and stderr together)."""
        assert self.process.stdout is not None
        with trio.fail_after(timeout):
            while True:
                for line in self.lines:
                    if wanted(line):
                        return line
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"exited before the expected line: {self.lines}")
                self._buffer += chunk
                *complete, self._buffer = self._buffer.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)


@asynccontextmanager
async def running(command: list[str], cwd: Path = ROOT) -> AsyncIterator[Running]:
    """Start *command* in its own process group; stop the whole group on the way out."""
    process = await trio.lowlevel.open_process(
        command,
        cwd=str(cwd),
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield Running(process)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGTERM)
                with trio.move_on_after(10):
                    await process.wait()
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


def serving_port(line: str) -> int:
    return int(line.rsplit(":", 1)[1])


@asynccontextmanager
async def meshery(*args: str) -> AsyncIterator[int]:
    """``meshsub-trio serve`` (Meshery's API) on a free port, the simulator fast."""
    command = [str(BIN / "meshsub-trio"), "serve", "--port", "0", "--rate", "10", *args]
    async with running(command) as server:
        line = await server.until(lambda text: text.startswith("meshsub-trio serving on"))
        yield serving_port(line)


def on_port(block: Block, port: int, *, default: int = 9081) -> str:
    return block.text.replace(f"127.0.0.1:{default}", f"127.0.0.1:{port}")


# ---- the blocks --------------------------------------------------------------------------


async def test_install_and_serve() -> None:
    block = find(KINDS["install and serve"])
    command = block.text.strip() + " --port 0"  # the README's port may be taken here
    async with running(["bash", "-c", command]) as server:
        line = await server.until(lambda t: t.startswith("meshsub-trio serving on"), 180)
        async with httpx.AsyncClient() as http:
            health = await http.get(f"http://127.0.0.1:{serving_port(line)}/healthz")
    assert health.json() == {"status": "ok"}


def test_the_test_command_is_what_ci_runs() -> None:
    """Running it here would run this test again: CI runs it, through ``.ci/run``."""
    block = find(KINDS["the test command"])
    assert f"exec {block.text.strip()}" in (ROOT / ".ci" / "run").read_text("utf-8")


@asynccontextmanager
async def node_snippet(kind: str) -> AsyncIterator[Running]:
    """The README's *kind* JavaScript block under Node, against a Meshery server.

    The script is written beside ``tests/interop/js`` so its imports resolve to
    the pinned npm packages there, and removed afterwards.
    """
    block = find(KINDS[kind])
    async with meshery() as port:
        script = JS_DIR / f".readme-snippet-{os.getpid()}.mjs"
        script.write_text(on_port(block, port), "utf-8")
        try:
            async with running(["node", str(script)], cwd=JS_DIR) as node:
                yield node
        finally:
            script.unlink()


@pytest.mark.parametrize("kind", ["graphql-ws in Node", "graphql-sse in Node"])
async def test_graphql_clients_in_node(kind: str) -> None:
    async with node_snippet(kind) as node:
        await node.until(lambda t: "subscribeEvents" in t)
        line = await node.until(lambda t: "severity:" in t)
    assert re.search(r"severity: '\w+'", line), line


async def test_eventsource_in_node() -> None:
    async with node_snippet("EventSource in Node") as node:
        line = await node.until(lambda t: re.match(r"\d+ \S", t) is not None)
    cursor, description = line.split(" ", 1)
    assert int(cursor) > 0 and description


async def test_publish_with_curl() -> None:
    block = find(KINDS["publish with curl"])
    async with meshery() as port:
        result = await trio.run_process(
            ["bash", "-c", on_port(block, port)], capture_stdout=True, env=environment()
        )
    assert b'"description":"disk almost full"' in result.stdout


async def test_scale_out() -> None:
    block = find(KINDS["scale-out"])
    nats_port, ports = free_port(), [free_port(), free_port()]
    text = block.text.replace("4222", str(nats_port))
    text = text.replace("9081", str(ports[0])).replace("9082", str(ports[1]))
    lines = [re.sub(r"\s+#.*$", "", line).rstrip(" &") for line in text.splitlines()]
    nats_line, secret_line, *serve_lines = [line for line in lines if line.strip()]
    assert nats_line.startswith("nats-server -js")
    assert secret_line.startswith("export MESHSUB_STREAM_SECRET=")
    # One shell in the README: both processes inherit the one secret it exports.
    made = subprocess.run(
        ["bash", "-c", f'{secret_line}; printf %s "$MESHSUB_STREAM_SECRET"'],
        capture_output=True, check=True, timeout=10,
    )  # fmt: skip
    secret = made.stdout.decode()
    assert len(secret) >= 16
    serve_lines = [f"MESHSUB_STREAM_SECRET='{secret}' {line}" for line in serve_lines]
    async with running(["bash", "-c", f"{nats_line} -a 127.0.0.1 -p {nats_port}"]) as nats:
        await nats.until(lambda t: "Server is ready" in t)
        async with running(["bash", "-c", serve_lines[0]]) as first:
            await first.until(lambda t: t.startswith("meshsub-trio serving on"), 60)
            async with running(["bash", "-c", serve_lines[1]]) as second:
                await second.until(lambda t: t.startswith("meshsub-trio serving on"), 60)
                async with httpx.AsyncClient(timeout=10) as http:
                    posted = await http.post(
                        f"http://127.0.0.1:{ports[0]}/api/system/events",
                        json={"severity": "informational", "description": "seen on both"},
                    )
                    assert posted.status_code == 201, posted.text
                    listed = await http.get(f"http://127.0.0.1:{ports[1]}/api/system/events")
    assert "seen on both" in listed.text


async def test_testing_example(tmp_path: Path) -> None:
    conftest, example = find(KINDS["testing conftest"]), find(KINDS["testing example"])
    (tmp_path / "conftest.py").write_text(conftest.text, "utf-8")
    (tmp_path / "test_reconnect.py").write_text(example.text, "utf-8")
    result = await trio.run_process(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=str(tmp_path), capture_stdout=True, capture_stderr=True, check=False,
        env=environment(),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout.decode()[-2000:]
    assert b"1 passed" in result.stdout


async def test_embedding(tmp_path: Path) -> None:
    script = tmp_path / "embedded.py"
    script.write_text(find(KINDS["embedding"]).text, "utf-8")
    async with running([sys.executable, str(script)]) as app:
        line = await app.until(lambda t: t.startswith("GraphQL over HTTP:"))
        url = line.split()[-1]
        async with httpx.AsyncClient() as http:
            answer = await http.post(url, json={"query": "{ hello }"})
        await app.until(lambda t: t.startswith("playground:"))
    assert answer.json() == {"data": {"hello": "world"}}


async def cluster_synced(port: int) -> None:
    """Until the simulated cluster's first sync is in (a moment after start):
    before it, the README's namespace query rightly answers ``[]``."""
    query = {"query": "{ getAvailableNamespaces { namespace } }"}
    async with httpx.AsyncClient() as http:
        with trio.fail_after(30):
            while True:
                answer = await http.post(f"http://127.0.0.1:{port}/api", json=query)
                if answer.json()["data"]["getAvailableNamespaces"]:
                    return
                await trio.sleep(0.05)  # polling a condition, bounded above


async def test_python_client(tmp_path: Path) -> None:
    block = find(KINDS["Python client"])
    async with meshery() as port:
        await cluster_synced(port)
        script = tmp_path / "client.py"
        script.write_text(on_port(block, port), "utf-8")
        async with running([sys.executable, str(script)]) as client:
            namespaces = await client.until(lambda t: "getAvailableNamespaces" in t)
            event = await client.until(lambda t: "severity" in t)
    assert "namespace" in namespaces
    assert re.search(r"'severity': '\w+'", event), event


async def test_subscribe_command() -> None:
    block = find(KINDS["subscribe command"])
    async with meshery() as port:
        with trio.fail_after(60):
            result = await trio.run_process(
                ["bash", "-c", on_port(block, port)], capture_stdout=True, env=environment()
            )
    lines = result.stdout.decode().splitlines()
    assert len(lines) == 3 and all('"subscribeEvents"' in line for line in lines), lines


def usage_options(help_text: str) -> dict[str, set[str] | None]:
    """Each option of a ``--help``'s usage, with its choices (None: it has none)."""
    usage = help_text.split("\n\n", 1)[0]
    options: dict[str, set[str] | None] = {}
    for name, choices in re.findall(r"(--[a-z][a-z-]*)(?: \{([^}]*)\})?", usage):
        options[name] = set(choices.split(",")) if choices else None
    options.pop("--help", None)
    return options


async def test_synopsis_names_real_options() -> None:
    """The README's synopsis and ``--help`` name the same options, choices alike."""
    block = find(KINDS["synopsis"])
    commands: dict[str, str] = {}
    for line in block.text.replace("\\\n", " ").split("meshsub-trio ")[1:]:
        command = line.split()[0]
        commands[command] = line
    assert set(commands) == {"serve", "subscribe"}
    for command, line in commands.items():
        result = await trio.run_process(
            [sys.executable, "-m", "meshsub_trio", command, "--help"], capture_stdout=True
        )
        real = usage_options(result.stdout.decode())
        named = set(re.findall(r"--[a-z][a-z-]*", line))
        assert named - set(real) == set(), f"the synopsis of {command} has no such option"
        assert set(real) - named == set(), f"the synopsis of {command} leaves these out"
        for option, choices in real.items():
            if choices is None:
                continue
            shown = re.search(rf"{option} ([^\s\]]+)", line)
            assert shown is not None, f"{command} {option}: no value in the synopsis"
            assert set(shown.group(1).split("|")) == choices, (
                f"{command} {option}: the synopsis says {shown.group(1)}, --help {choices}"
            )


async def test_serve_help_shows_every_default() -> None:
    """README: ``serve --help`` lists every option with its default (a flag is
    off until given, so only options taking a value say one)."""
    from meshsub_trio._cli_args import build_parser

    parser = build_parser()
    [commands] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    serve = commands.choices["serve"]
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "serve", "--help"], capture_stdout=True
    )
    shown = " ".join(result.stdout.decode().split())
    for action in serve._actions:
        if isinstance(action, argparse._HelpAction | argparse._StoreConstAction):
            continue
        name = "/".join(action.option_strings) or action.dest
        expanded = (action.help or "") % dict(vars(action), prog=serve.prog)  # as argparse does
        text = " ".join(expanded.split())
        assert "default" in text.lower(), f"{name} shows no default"
        if action.default is not None:
            assert str(action.default) in text, f"{name} shows another default than its own"
        assert text in shown, f"{name}'s help is not what serve --help prints"


@pytest.fixture(autouse=True)
def _readme_exists() -> None:
    assert README.is_file()
