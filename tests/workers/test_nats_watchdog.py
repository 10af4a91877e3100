"""A hung embedded nats-server is killed and restarted; a slow or stopping one is not.

A nats-server that exits is restarted by the supervisor's loop; one that
hangs (here SIGSTOPped: alive, its port accepting, silent) would stay down
for good. The watchdog (``_supervisor/_nats_watch.py``) probes it for its
``INFO`` greeting and SIGKILLs it after too many silent probes in a row, so
the loop starts it again on the same port and store. The tests use short
bounds (``MESHSUB_NATS_WATCHDOG``) and real processes throughout.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
import trio

from meshsub_trio import Config
from meshsub_trio._supervisor import _run, plan_for
from meshsub_trio._supervisor._embedded_nats import START_TIMEOUT, EmbeddedNats, find_nats_server
from meshsub_trio._supervisor._nats_watch import (
    DEFAULT_WATCHDOG,
    WATCHDOG_ENV,
    Watchdog,
    greets,
    watchdog_from,
)
from meshsub_trio.brokers._nats_options import NatsOptions

from ._kit import EVENTS, Conn, Supervisor, open_supervisor
from .test_workers import _children, one_per_worker

#: The end-to-end test's bounds: a hang is killed within 1.25 s.
FAST = Watchdog(interval=0.25, timeout=0.5, failures=2)
FAST_ENV = {WATCHDOG_ENV: f"{FAST.interval},{FAST.timeout},{FAST.failures}"}
#: In-process tests: a hang would be killed within 0.25 s.
QUICK = Watchdog(interval=0.05, timeout=0.1, failures=2)
CONTROLLERS = "subscription { subscribeMesheryControllersStatus { controller status } }"
ADD_CONTEXT = "mutation($i: K8sContextInput!) { addK8sContext(input: $i) { id } }"
CONTEXTS = 'subscription { subscribeK8sContext(selector: {page: "0", pageSize: "10"}) { contexts { name } } }'
_READY = re.compile(r"embedded nats-server ready url=nats://127\.0\.0\.1:(\d+) pid=(\d+)")
KILLED = "hung, killing it (SIGKILL)"


def nats_servers(supervisor: Supervisor) -> list[tuple[int, int]]:
    """(port, pid) of every nats-server the supervisor has reported ready, in order."""
    text = supervisor.log.read_text(errors="replace")
    return [(int(port), int(pid)) for port, pid in _READY.findall(text)]


def broker_statuses(conn: Conn, op: str) -> list[str]:
    """The BROKER controller's statuses as *conn*'s subscription *op* was told them."""
    return [
        item["status"]
        for message in conn.by_op.get(op, [])
        if message["type"] == "next"
        for item in message["payload"]["data"]["subscribeMesheryControllersStatus"]
        if item["controller"] == "BROKER"
    ]


def down_and_back(statuses: list[str]) -> bool:
    """Whether a status other than CONNECTED came, and CONNECTED after it."""
    down = next((i for i, status in enumerate(statuses) if status != "CONNECTED"), None)
    return down is not None and "CONNECTED" in statuses[down:]


async def first_result(conn: Conn, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    """An operation over *conn*'s socket (so on its worker): its first data, not errors."""
    op = await conn.client.start(query, variables)
    await conn.wait(lambda: conn.by_op.get(op), "a result")
    message = conn.by_op[op][0]
    assert message["type"] == "next" and "errors" not in message["payload"], message
    return dict(message["payload"]["data"])


async def test_a_hung_nats_server_is_killed_and_restarted_with_its_data(tmp_path: Path) -> None:
    # The workers' own probe of a silent server is put far beyond the test, so
    # the watchdog's kill is what ends the outage (and the flag is seen to
    # reach every worker's broker). A short --worker-timeout checks that the
    # outage never holds a worker's event loop: no worker is restarted.
    stale = "--nats-stale-timeout", "60", "--worker-timeout", "3"
    async with (
        open_supervisor(tmp_path, *stale, env=FAST_ENV) as supervisor,
        trio.open_nursery() as nursery,
        AsyncExitStack() as stack,
    ):
        connected = re.findall(
            r"connected to NATS at \S+ stale_timeout=(\S+) worker=(\d)",
            supervisor.log.read_text(errors="replace"),
        )
        assert sorted(connected) == [("60.0", "0"), ("60.0", "1")], supervisor.stderr()
        [(port, hung)] = nats_servers(supervisor)
        assert hung in _children(supervisor.process.pid)
        placed = list((await one_per_worker(stack, nursery, supervisor)).values())
        # Stored before the hang: a context (its BROKER controller shows each
        # worker's link) and an event.
        await first_result(placed[0], ADD_CONTEXT, {"i": {"name": "kind", "server": "https://k"}})
        await placed[0].publish("before")
        status = {}
        for conn in placed:
            status[conn] = await conn.client.start(CONTROLLERS)
            await conn.wait(
                lambda c=conn: broker_statuses(c, status[c]) == ["CONNECTED"],
                "the context's BROKER controller",
            )
        workers = dict(supervisor.workers)

        os.kill(hung, signal.SIGSTOP)
        stopped = trio.current_time()
        # The kill comes within FAST.bound; the restart then waits for its readiness.
        with trio.fail_after(FAST.bound + START_TIMEOUT):
            while len(nats_servers(supervisor)) < 2:
                await trio.sleep(0.02)  # a log file: no event to wait on
            assert await greets(port, FAST.timeout)
        took = trio.current_time() - stopped
        print(f"SIGSTOP to a new nats-server greeting on the same port: {took:.2f} s")
        [_, (again_port, new)] = nats_servers(supervisor)
        assert again_port == port and new != hung
        assert new in _children(supervisor.process.pid)
        assert not os.path.exists(f"/proc/{hung}")  # killed and reaped
        log = supervisor.log.read_text(errors="replace")
        assert KILLED in log and f"pid={hung}" in log.split(KILLED, 1)[1].splitlines()[0]

        # The workers rode it out (no restart), saw the broker go and come back,
        # and take changes again; what was stored before the hang is still there.
        for conn in placed:
            await conn.wait(
                lambda c=conn: down_and_back(broker_statuses(c, status[c])),
                "BROKER down, then CONNECTED again",
            )
        assert supervisor.workers == workers and supervisor.restarts == 0
        for n, conn in enumerate(placed):
            await conn.publish(f"after-{n}")
        for conn in placed:
            op = await conn.client.start(EVENTS, extensions={"cursor": "0"})
            assert await conn.wait_events(op, 3) == ["before", "after-0", "after-1"]
            contexts = await first_result(conn, CONTEXTS, {})
            assert [c["name"] for c in contexts["subscribeK8sContext"]["contexts"]] == ["kind"]
        nursery.cancel_scope.cancel()


async def test_a_server_slower_to_start_than_the_bound_is_not_probed_before_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A start replays the JetStream store before it serves, which may take a
    # while: probing it then would kill every slow start. This one is silent
    # (not even listening) for four times the watchdog's bound.
    await start_and_stop(slow_nats_server(tmp_path, 4 * QUICK.bound))
    assert KILLED not in caplog.text


def slow_nats_server(tmp_path: Path, seconds: float) -> EmbeddedNats:
    """An embedded nats-server whose binary sits silent for *seconds* first."""
    slow = tmp_path / "slow-nats-server"
    slow.write_text(f'#!/bin/sh\nsleep {seconds}\nexec {find_nats_server()} "$@"\n')
    slow.chmod(0o755)
    store = tmp_path / "store"
    store.mkdir()
    return EmbeddedNats(str(slow), str(store), QUICK)


async def start_and_stop(nats: EmbeddedNats) -> None:
    """Start *nats*, check it greets, stop it."""
    with trio.fail_after(START_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(nats.run)
            assert nats.port is not None and await greets(nats.port, START_TIMEOUT)
            await nats.stop(timeout=5.0)


async def test_stopping_a_hung_server_is_the_stop_s_business_not_the_watchdog_s(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A stopped process ignores SIGTERM until continued, so stop() waits out its
    # timeout and SIGKILLs it: the watchdog, whose bound is far shorter, must
    # neither kill it first nor report a hang.
    nats = EmbeddedNats(find_nats_server(), str(tmp_path), QUICK)
    with trio.fail_after(START_TIMEOUT):
        async with trio.open_nursery() as nursery:
            await nursery.start(nats.run)
            process = nats.process
            assert process is not None
            os.kill(process.pid, signal.SIGSTOP)
            await nats.stop(timeout=4 * QUICK.bound)
    assert process.returncode == -signal.SIGKILL
    assert KILLED not in caplog.text and "restarting" not in caplog.text


def test_the_watchdog_s_bounds_come_from_the_environment() -> None:
    assert watchdog_from({}) is DEFAULT_WATCHDOG
    assert watchdog_from({WATCHDOG_ENV: " off "}) is None
    assert watchdog_from({WATCHDOG_ENV: "0.25, 0.5, 2"}) == FAST
    assert FAST.bound == 1.25
    # The default kills a hang before the workers' own probe gives up on it.
    assert DEFAULT_WATCHDOG.bound == 7.0 < NatsOptions().stale_timeout
    for bad in ("1,2", "1,2,3,4", "x,1,1", "0,1,1", "1,-1,1", "1,nan,1", "1,1,0", "1,1,1.5"):
        with pytest.raises(ValueError, match=r"^MESHSUB_NATS_WATCHDOG must be INTERVAL,TIMEOUT"):
            watchdog_from({WATCHDOG_ENV: bad})


def test_a_bad_watchdog_setting_is_one_line_and_exit_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv(WATCHDOG_ENV, "1,2")
    args = argparse.Namespace(workers=2, broker=None, simulator=None, worker_timeout=30.0)
    plan = plan_for(["serve", "--workers", "2"], args, Config(port=0), str(tmp_path))
    assert _run.run_supervisor(plan) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("meshsub-trio: MESHSUB_NATS_WATCHDOG must be INTERVAL,TIMEOUT,FAILURES")


async def test_a_start_slower_than_its_warning_bound_is_waited_for(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reviewer's find: a start not ready within START_TIMEOUT was killed and
    started again, so a store whose replay takes longer (after a crash, or the
    watchdog's own kill) never came back. Now it is warned about and waited for."""
    import meshsub_trio._supervisor._embedded_nats as embedded

    monkeypatch.setattr(embedded, "START_TIMEOUT", 0.3)
    await start_and_stop(slow_nats_server(tmp_path, 1.0))
    assert "still waiting" in caplog.text
    assert "did not start" not in caplog.text and "restarting" not in caplog.text
