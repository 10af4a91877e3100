"""graphql-sse single connection mode under ``serve --workers 2`` when a worker or the broker fails.

A request that needs another worker's answer gets one within a bound: the
worker holding the stream killed, its token's worker says 404 (the stream is
gone) and frees the token, at once (NATS says nobody listens on the dead
worker's subject; it took the relay's 5.5 s deadline before); the broker
frozen, a request that must cross is 503 with ``Retry-After``, while one
that needs no crossing is answered as ever.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

from meshsub_trio._supervisor._nats_watch import WATCHDOG_ENV
from meshsub_trio._transports._sse_relay import CALL_TIMEOUT, GRACE

from ._kit import SOON, Supervisor, open_supervisor
from ._sse_pinned_kit import connection_on, event_stream, operation, request

QUERY = "{ __typename }"
#: What a bounded wait may take on a loaded machine, beyond the bound itself.
MARGIN = 3.0
#: "At once" on this loaded 2-core machine: a round trip or two, far under the deadline.
PROMPT = 1.0


async def reserve(supervisor: Supervisor, index: int) -> str:
    answer = await request(supervisor, index, "PUT")
    assert answer.status == 201, answer
    return answer.body.decode()


async def post(
    supervisor: Supervisor,
    index: int,
    token: str,
    op_id: str,
    connection: trio.SocketStream | None = None,
) -> tuple[int, str]:
    body = operation(op_id, QUERY)
    answer = await request(supervisor, index, "POST", token=token, body=body, connection=connection)
    return answer.status, answer.headers.get("retry-after", "")


async def dead(pid: int) -> None:
    """Until *pid* has exited (its sockets closed), reaped or not."""
    with trio.fail_after(MARGIN):
        while True:
            try:
                with open(f"/proc/{pid}/stat") as file:
                    if file.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                        return
            except OSError:
                return
            await trio.sleep(0.005)


def nats_server_pid(supervisor: Supervisor) -> int:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                parent = int(file.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as file:
                command = file.read()
        except OSError:
            continue
        if parent == supervisor.process.pid and b"nats-server" in command:
            return int(entry)
    raise AssertionError("the supervisor runs no nats-server")


async def test_a_stream_whose_worker_died_is_forgotten_by_its_tokens_worker(
    tmp_path: Path,
) -> None:
    async with open_supervisor(tmp_path) as supervisor:
        token = await reserve(supervisor, 0)
        async with event_stream(supervisor, 1, token):
            assert await post(supervisor, 0, token, "before") == (202, "")
            # Placed first: while worker 1 restarts, half of new connections wait for it.
            connection = await connection_on(supervisor, 0)
            killed = supervisor.workers[1]
            os.kill(killed, signal.SIGKILL)
            await dead(killed)  # a request sent before that is lost with it
            started = trio.current_time()
            with trio.fail_after(CALL_TIMEOUT + GRACE + MARGIN):
                status, _ = await post(supervisor, 0, token, "after", connection)
            took = trio.current_time() - started
            assert status == 404
            assert took < PROMPT, took
        # (Worker 1 back first: until then, new connections on its socket wait.)
        await supervisor.wait_for(lambda: supervisor.workers[1] != killed, "worker 1 restarted")
        # Forgotten, not merely unanswered: the token can no longer be found.
        again = await request(supervisor, 0, "PUT", token=token)
        assert again.status == 201 and again.body.decode() != token


async def test_a_frozen_broker_is_a_503_only_for_what_must_cross_it(tmp_path: Path) -> None:
    # The supervisor's watchdog would kill the frozen nats-server after 6-7 s,
    # about when this test continues it: off, so that the freeze is the test's.
    async with open_supervisor(tmp_path, env={WATCHDOG_ENV: "off"}) as supervisor:
        token = await reserve(supervisor, 0)
        async with event_stream(supervisor, 0, token) as stream:
            assert await post(supervisor, 1, token, "crossed") == (202, "")
            nats = nats_server_pid(supervisor)
            connection = await connection_on(supervisor, 1)
            os.kill(nats, signal.SIGSTOP)
            try:
                started = trio.current_time()
                with trio.fail_after(CALL_TIMEOUT + GRACE + MARGIN):
                    assert await post(supervisor, 1, token, "frozen", connection) == (503, "1")
                assert trio.current_time() - started >= CALL_TIMEOUT  # waited, boundedly
                # The stream's own worker needs nobody: answered at once.
                with trio.fail_after(MARGIN):
                    assert await post(supervisor, 0, token, "local") == (202, "")
            finally:
                os.kill(nats, signal.SIGCONT)
            with trio.fail_after(SOON):
                while (await post(supervisor, 1, token, "thawed"))[0] != 202:
                    await trio.sleep(0.1)
            done: set[str] = set()
            with trio.fail_after(SOON):
                while done != {"crossed", "local", "thawed"}:
                    name, data = await stream.next_sse()
                    if name == "complete":
                        done.add(data["id"])
                    assert data["id"] != "frozen", data
