"""graphql-sse single connection mode across separate ``serve --broker nats://`` processes.

No supervisor: two real server processes on one real nats-server, as behind
a load balancer without session affinity. With the same
``MESHSUB_STREAM_SECRET`` they are one server: a token reserved on one
opens its stream on the other, and operations posted to either reach it.
A stream's process killed, its token's process says 404 within a round trip
(NATS "no responders"), not after the relay's 5 s deadline. Without a secret
each process keeps its tokens to itself (said at start-up); a short one
refuses to start. The secret travels in the environment only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from meshsub_trio._transports._sse_relay import CALL_TIMEOUT
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from ._kit import GRAPHQL, SOON, open_supervisor
from ._sse_pinned_kit import EVENT_STREAM, TOKEN, Answer, Pinned, operation
from ._sse_pinned_kit import request as pinned_request

__all__ = ["nats_server"]

SECRET = "the secret both processes were given, long enough"
QUERY = "{ __typename }"
#: How long "promptly" may take on this loaded 2-core machine: a round trip
#: or two, far under the relay's deadline.
PROMPT = 1.0


@dataclass
class Process:
    process: trio.Process
    port: int
    stderr: Path

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")


async def start(tmp: Path, name: str, nats: NatsServer, secret: str | None) -> Process:
    """``meshsub-trio serve --broker NATS`` on a free port, once it serves."""
    env = dict(os.environ, MESHSUB_DATA_DIR=str(tmp / name))
    env.pop("MESHSUB_STREAM_SECRET", None)
    if secret is not None:
        env["MESHSUB_STREAM_SECRET"] = secret
    command = [sys.executable, "-m", "meshsub_trio", "serve", "--broker", nats.url]
    command += ["--port", "0", "--keepalive", "0", "--no-simulator"]
    stderr = tmp / f"{name}.log"
    with open(stderr, "wb") as sink:
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=sink, env=env
        )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(SOON):
        while b"\n" not in line:
            chunk = await process.stdout.receive_some(256)
            assert chunk, f"{name} exited: {stderr.read_text()}"
            line += chunk
    assert line.startswith(b"meshsub-trio serving on http://127.0.0.1:"), line
    return Process(process, int(line.split(b"\n")[0].split(b":")[-1]), stderr)


@asynccontextmanager
async def two_processes(
    tmp: Path, nats: NatsServer, secret: str | None = SECRET
) -> AsyncIterator[tuple[Process, Process]]:
    started: list[Process] = []
    try:
        for name in ("a", "b"):
            started.append(await start(tmp, name, nats, secret))
        yield started[0], started[1]
    finally:
        with trio.CancelScope(shield=True):
            for entry in started:
                if entry.process.returncode is None:
                    entry.process.terminate()
                with trio.move_on_after(SOON):
                    await entry.process.wait()
                if entry.process.returncode is None:
                    entry.process.kill()
                    await entry.process.wait()
                assert entry.process.stdout is not None
                await entry.process.stdout.aclose()


def nats_connections(pid: int, nats_port: int) -> int:
    """TCP connections process *pid* holds to the nats-server on *nats_port*."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except FileNotFoundError:  # closed since the listing: not a connection held
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as file:
            for line in file.readlines()[1:]:
                fields = line.split()
                state, remote, inode = fields[3], fields[2], fields[9]
                if state == "01" and int(remote.rsplit(":", 1)[1], 16) == nats_port:
                    count += inode in inodes
    return count


async def call(
    server: Process, method: str, *, token: str | None = None, body: Any = None
) -> Answer:
    headers = {"accept": "*/*"}
    if token is not None:
        headers[TOKEN] = token
    data = b""
    if body is not None:
        data = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        pinned = Pinned(stream)
        return await pinned.read_body(await pinned.send(method, GRAPHQL, headers, data))


async def reserve(server: Process) -> str:
    answer = await call(server, "PUT")
    assert answer.status == 201, answer
    return answer.body.decode()


async def post(server: Process, token: str, op_id: str) -> int:
    return (await call(server, "POST", token=token, body=operation(op_id, QUERY))).status


@asynccontextmanager
async def event_stream(server: Process, token: str) -> AsyncIterator[Pinned]:
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        pinned = Pinned(stream)
        answer = await pinned.send("GET", GRAPHQL, {"accept": EVENT_STREAM, TOKEN: token})
        assert answer.status == 200, answer
        yield pinned


async def results(stream: Pinned, ids: set[str]) -> dict[str, Any]:
    """Each operation's ``next`` payload, once every one of *ids* has completed."""
    payloads: dict[str, Any] = {}
    done: set[str] = set()
    with trio.fail_after(SOON):
        while done != ids:
            name, data = await stream.next_sse()
            assert data["id"] in ids, data
            if name == "next":
                payloads[data["id"]] = data["payload"]
            elif name == "complete":
                done.add(data["id"])
    return payloads


async def test_reserve_on_one_stream_on_the_other_operations_on_both(
    tmp_path: Path,
    nats_server: NatsServer,
) -> None:
    async with two_processes(tmp_path, nats_server) as (a, b):
        # One NATS connection each: the relay rides on the app's own.
        nats_port = int(nats_server.url.rsplit(":", 1)[1])
        assert [nats_connections(p.process.pid, nats_port) for p in (a, b)] == [1, 1]
        token = await reserve(a)
        assert await post(b, token, "held-on-a") == 202  # before the stream: kept by a
        async with event_stream(b, token) as stream:
            for op_id, server in (("via-a", a), ("on-b", b), ("again-a", a)):
                assert await post(server, token, op_id) == 202, op_id
            ids = {"held-on-a", "via-a", "on-b", "again-a"}
            got = await results(stream, ids)
            # One stream per token, wherever it is asked for.
            async with await trio.open_tcp_stream("127.0.0.1", a.port) as raw:
                pinned = Pinned(raw)
                headers = {"accept": EVENT_STREAM, TOKEN: token}
                second = await pinned.read_body(await pinned.send("GET", GRAPHQL, headers))
            assert second.status == 409, second
        assert got == {op_id: {"data": {"__typename": "Query"}} for op_id in ids}
    for server in (a, b):
        assert SECRET not in server.log()


async def test_a_killed_stream_process_is_a_prompt_404(
    tmp_path: Path,
    nats_server: NatsServer,
) -> None:
    async with two_processes(tmp_path, nats_server) as (a, b):
        token = await reserve(a)
        async with event_stream(b, token):
            assert await post(a, token, "before") == 202
            b.process.kill()
            await b.process.wait()
            started = trio.current_time()
            with trio.fail_after(CALL_TIMEOUT + 3):
                status = await post(a, token, "after")
            took = trio.current_time() - started
        print(f"\n404 for a killed stream process after {took * 1000:.0f} ms")
        assert status == 404
        assert took < PROMPT, took
        # Forgotten, not merely unanswered: reserving with it gives a new token.
        again = await call(a, "PUT", token=token)
        assert again.status == 201 and again.body.decode() != token


async def test_a_killed_home_process_is_a_prompt_404_for_its_tokens(
    tmp_path: Path,
    nats_server: NatsServer,
) -> None:
    async with two_processes(tmp_path, nats_server) as (a, b):
        token = await reserve(a)
        assert await post(b, token, "kept-by-a") == 202  # b asks a, which holds it
        a.process.kill()
        await a.process.wait()
        started = trio.current_time()
        with trio.fail_after(CALL_TIMEOUT + 3):
            status = await post(b, token, "orphan")
        took = trio.current_time() - started
        print(f"\n404 for a killed home process after {took * 1000:.0f} ms")
        assert status == 404 and took < PROMPT, (status, took)


async def test_without_a_secret_tokens_stay_on_their_process(
    tmp_path: Path,
    nats_server: NatsServer,
) -> None:
    async with two_processes(tmp_path, nats_server, secret=None) as (a, b):
        assert "MESHSUB_STREAM_SECRET is not set" in a.log()
        token = await reserve(a)
        assert await post(b, token, "elsewhere") == 404  # b knows nothing of it
        async with event_stream(a, token) as stream:  # on its own process, as ever
            assert await post(a, token, "here") == 202
            assert await results(stream, {"here"}) == {"here": {"data": {"__typename": "Query"}}}


async def test_a_short_secret_refuses_to_start(tmp_path: Path, nats_server: NatsServer) -> None:
    env = dict(os.environ, MESHSUB_STREAM_SECRET="too short", MESHSUB_DATA_DIR=str(tmp_path))
    command = [sys.executable, "-m", "meshsub_trio", "serve", "--broker", nats_server.url]
    command += ["--port", "0", "--no-simulator"]
    with trio.fail_after(SOON):
        done = await trio.run_process(command, env=env, capture_stdout=True, capture_stderr=True,
                                      check=False)  # fmt: skip
    assert done.returncode != 0
    assert b"MESHSUB_STREAM_SECRET must be at least 16 characters" in done.stderr
    assert b"too short" not in done.stderr and b"serving on" not in done.stdout


async def test_a_supervisors_workers_hold_one_nats_connection_each(tmp_path: Path) -> None:
    """The relay once had a connection of its own in each worker: no longer."""
    async with open_supervisor(tmp_path) as supervisor:
        found = re.search(
            r"embedded nats-server ready url=nats://127\.0\.0\.1:(\d+)", supervisor.stderr()
        )
        assert found, supervisor.stderr()
        token = await pinned_request(supervisor, 0, "PUT")  # the relay is in use
        assert token.status == 201
        counts = [nats_connections(pid, int(found[1])) for pid in supervisor.workers.values()]
        assert counts == [1, 1], counts
