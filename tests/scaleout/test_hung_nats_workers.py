"""The tester's case: ``serve --workers 2`` and its embedded nats-server SIGSTOPped.

Real processes throughout, the default bound (``NatsOptions().stale_timeout``):
within it every worker reports its broker link down (the BROKER controller
reads UNKOWN for its subscribers, ``/readyz`` answers 503 while ``/healthz``
stays 200) and refuses changes at once as BROKER_UNAVAILABLE; after SIGCONT
both recover, take changes again and replicate them to each other.
"""

from __future__ import annotations

import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import trio

from meshsub_trio.brokers import NatsOptions

from ..workers._kit import SOON, Conn, Supervisor, open_supervisor, owner_of
from ..workers.test_workers import _children, _cmdline, one_per_worker
from ._kit import CONTROLLERS

BOUND = NatsOptions().stale_timeout
#: What three busy processes on two shared cores may add to the bound.
SLACK = 3.0
ADD_CONTEXT = """mutation { addK8sContext(input: {name: "kind", server: "https://k",
  connection_id: "conn-1"}) { id } }"""
SAVE = 'mutation($n: String!) { savePattern(input: {name: $n, pattern_file: "y"}) { id } }'


async def status_by_worker(supervisor: Supervisor, path: str) -> dict[int, tuple[int, bytes]]:
    """The status and body of ``GET path`` from each worker, over fresh
    connections until the kernel has handed one to every worker."""
    pids = list(supervisor.workers.values())
    answers: dict[int, tuple[int, bytes]] = {}
    with trio.fail_after(SOON):
        while len(answers) < len(pids):
            stream = await trio.open_tcp_stream("127.0.0.1", supervisor.port)
            async with stream:
                owner = owner_of(supervisor.port, stream.socket.getsockname()[1], pids)
                await stream.send_all(
                    f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode()
                )
                reply = b""
                while chunk := await stream.receive_some():
                    reply += chunk
            if owner is not None:
                head, _, body = reply.partition(b"\r\n\r\n")
                answers[owner] = (int(head.split(b" ", 2)[1]), body)
    return answers


def broker_status(conn: Conn, op: str) -> str | None:
    latest = None
    for message in conn.by_op.get(op, []):
        if message["type"] == "next":
            for item in message["payload"]["data"]["subscribeMesheryControllersStatus"]:
                if item["controller"] == "BROKER":
                    latest = item["status"]
    return latest


async def answer(conn: Conn, query: str, **variables: Any) -> dict[str, Any]:
    """The one payload of a mutation run over *conn* (on that connection's worker)."""
    op = await conn.client.start(query, variables or None)
    await conn.wait(lambda: conn.by_op.get(op), "an answer")
    message = conn.by_op[op][0]
    return message["payload"] if message["type"] == "next" else {"errors": message["payload"]}


async def test_a_sigstopped_embedded_nats_server_is_noticed_by_every_worker(
    tmp_path: Path,
) -> None:
    async with (
        # How the workers ride out a hang: the supervisor's watchdog, which
        # would restart the server within 7 s, is off (its own tests).
        open_supervisor(tmp_path, env={"MESHSUB_NATS_WATCHDOG": "off"}) as supervisor,
        trio.open_nursery() as nursery,
        AsyncExitStack() as stack,
    ):
        [nats_pid] = [p for p in _children(supervisor.process.pid) if b"nats-server" in _cmdline(p)]
        placed = list((await one_per_worker(stack, nursery, supervisor)).values())
        assert "errors" not in await answer(placed[0], ADD_CONTEXT)
        status = {}
        for conn in placed:
            status[conn] = op = await conn.client.start(CONTROLLERS)
            await conn.wait(lambda c=conn, o=op: broker_status(c, o) == "CONNECTED", "CONNECTED")

        os.kill(nats_pid, signal.SIGSTOP)
        try:
            frozen_at = trio.current_time()
            with trio.fail_after(BOUND + SLACK):
                for conn, op in status.items():
                    await conn.wait(lambda c=conn, o=op: broker_status(c, o) == "UNKOWN", "UNKOWN")
            noticed = trio.current_time() - frozen_at
            for reply in (await status_by_worker(supervisor, "/readyz")).values():
                assert reply == (503, b'{"status":"not ready","reason":"broker reconnecting"}')
            for reply in (await status_by_worker(supervisor, "/healthz")).values():
                assert reply[0] == 200, reply
            for conn in placed:
                asked_at = trio.current_time()
                reply = await answer(conn, SAVE, n="during")
                assert trio.current_time() - asked_at < 1.0  # refused at once
                [error] = reply["errors"]
                assert error["extensions"]["code"] == "BROKER_UNAVAILABLE", error
                assert "the shared broker is reconnecting" in error["message"], error
        finally:
            os.kill(nats_pid, signal.SIGCONT)
        assert noticed <= BOUND + SLACK

        for conn, op in status.items():
            await conn.wait(lambda c=conn, o=op: broker_status(c, o) == "CONNECTED", "recovery")
        for reply in (await status_by_worker(supervisor, "/readyz")).values():
            assert reply == (200, b'{"status":"ready"}')
        for index, conn in enumerate(placed):
            reply = await answer(conn, SAVE, n=f"after-{index}")
            assert "errors" not in reply, reply
        fetch = '{ fetchPatterns(selector: {page: "0", pageSize: "50"}) { patterns { name } } }'
        for conn in placed:  # each worker applies the other's change from the log
            with trio.fail_after(SOON):
                while True:
                    reply = await answer(conn, fetch)
                    names = sorted(p["name"] for p in reply["data"]["fetchPatterns"]["patterns"])
                    if names == ["after-0", "after-1"]:
                        break
                    await trio.sleep(0.05)  # polled, bounded: nothing announces another's apply
        nursery.cancel_scope.cancel()
