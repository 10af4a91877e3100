"""``--worker-timeout``: a worker whose event loop stops is killed and restarted.

A worker that exits is restarted, but one whose loop is stuck keeps its
process and its clients and serves none of them. Each worker's loop beats on
a pipe to the supervisor; a silent one is SIGKILLed and its slot restarts it.
A stuck loop is played here by SIGSTOP (the whole process stops, exactly as
far as the supervisor can tell); a short ``--worker-timeout`` keeps the tests
quick. At shutdown, a worker that cannot drain is killed by the drain's own
bound (never by the heartbeat watch), and the exit status says so.
"""

from __future__ import annotations

import os
import re
import signal
import sys
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from meshsub_trio._cli_args import parse_serve_args
from meshsub_trio._supervisor._heartbeat import (
    HEARTBEAT_ENV,
    Heartbeat,
    beat_interval,
    heartbeat_from,
    send_heartbeats,
    watch_heartbeats,
)
from meshsub_trio._supervisor._run import EXIT_WORKER_KILLED, STOP_MARGIN
from meshsub_trio._supervisor._worker import startup_timeout
from meshsub_trio.testing import open_graphql_ws

from ._kit import EVENTS, GRAPHQL, SOON, Conn, Supervisor, open_supervisor
from .test_workers import _children, _cmdline, one_per_worker

#: Short, to keep these tests quick; its start-up bound (twice this) must
#: still be far above a worker's start on a loaded two-core CI machine (~1 s).
TIMEOUT = 3.0
#: What a busy machine (two shared cores, other suites) may add to a bound.
SLACK = 3.0
#: How long a worker takes to start and serve again after a kill, at the most.
RESTART = 10.0
#: The drain's bound (``Plan.drain_timeout``: close_timeout 2 s + 0.5) plus the margin.
DRAIN_BOUND = 2.5 + STOP_MARGIN
HUNG = "'s event loop sent no heartbeat for "


def lines_with(supervisor: Supervisor, text: str) -> list[str]:
    return [
        line for line in supervisor.log.read_text(errors="replace").splitlines() if text in line
    ]


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as file:
        pairs = [item.partition(b"=") for item in file.read().split(b"\0") if item]
    return {key.decode(): value.decode(errors="replace") for key, _, value in pairs}


async def test_a_stopped_worker_is_killed_restarted_and_its_client_resumes(
    tmp_path: Path,
) -> None:
    async with (
        open_supervisor(tmp_path, "--worker-timeout", str(TIMEOUT)) as supervisor,
        trio.open_nursery() as nursery,
        AsyncExitStack() as stack,
    ):
        placed = await one_per_worker(stack, nursery, supervisor)
        victim_pid, survivor_pid = list(placed)
        victim, survivor = placed[victim_pid], placed[survivor_pid]
        index = next(i for i, pid in supervisor.workers.items() if pid == victim_pid)
        other = 1 - index
        assert environ_of(victim_pid)[HEARTBEAT_ENV].endswith(f",{beat_interval(TIMEOUT)!r}")
        op = await victim.client.start(EVENTS, extensions={"cursor": "0"})
        for n in range(3):
            await survivor.publish(f"e-{n}")
        before = await victim.wait_events(op, 3)

        os.kill(victim_pid, signal.SIGSTOP)  # its loop stops, its process and sockets stay
        stopped = trio.current_time()
        for n in range(3, 6):  # the other worker serves on meanwhile
            await survivor.publish(f"e-{n}")
        with trio.fail_after(TIMEOUT + SLACK):  # the kill closes its socket; nothing else would
            await victim.wait(lambda: victim.closed, "the stopped worker's kill")
        killed = trio.current_time() - stopped
        await supervisor.wait_for(lambda: supervisor.workers[index] != victim_pid, "a restart")
        serving = trio.current_time() - stopped
        print(f"SIGSTOP to the kill: {killed:.2f} s; to a new worker serving: {serving:.2f} s")
        # Not before the timeout: the last beat came at most one interval before the stop.
        assert killed >= TIMEOUT - beat_interval(TIMEOUT)
        assert serving <= TIMEOUT + SLACK + RESTART
        assert not os.path.exists(f"/proc/{victim_pid}")  # killed and reaped
        [line] = lines_with(supervisor, HUNG)
        assert line.split(" meshsub_trio.workers: ", 1)[1].startswith(
            f"worker {index}'s event loop sent no heartbeat for "
        ), line
        assert "s: killing it to restart it" in line and f"pid={victim_pid}" in line, line
        assert lines_with(supervisor, f"worker {index} exited (code -9): restarting")
        assert supervisor.workers[other] == survivor_pid and supervisor.restarts == 1

        # The client comes back (to whichever worker the kernel picks) with its cursor.
        client = await stack.enter_async_context(
            open_graphql_ws("127.0.0.1", supervisor.port, GRAPHQL)
        )
        again = Conn(client)
        with trio.fail_after(SOON):
            await client.init()
        nursery.start_soon(again.pump)
        cursor = victim.events(op)[-1][1]
        op = await client.start(EVENTS, extensions={"cursor": cursor})
        await survivor.publish("e-6")
        after = await again.wait_events(op, 4)
        assert before + after == [f"e-{n}" for n in range(7)]
        # And the new worker beats: it is watched like the first.
        assert HEARTBEAT_ENV in environ_of(supervisor.workers[index])
        nursery.cancel_scope.cancel()


async def test_a_beating_worker_is_never_killed_nor_one_paused_for_less_than_the_timeout(
    tmp_path: Path,
) -> None:
    # Several timeouts long: two workers serving events, and one of them
    # frozen again and again for under half the timeout, as a loop held by a
    # large fan-out (~1.3 s, under the default 30 s) is. None of it is a hang.
    async with (
        open_supervisor(tmp_path, "--worker-timeout", str(TIMEOUT)) as supervisor,
        trio.open_nursery() as nursery,
        AsyncExitStack() as stack,
    ):
        workers = dict(supervisor.workers)
        placed = await one_per_worker(stack, nursery, supervisor)
        paused_pid, other_pid = list(placed)
        op = await placed[other_pid].client.start(EVENTS, extensions={"cursor": "0"})
        end = trio.current_time() + 4 * TIMEOUT
        published = 0
        while trio.current_time() < end:
            os.kill(paused_pid, signal.SIGSTOP)
            await trio.sleep(TIMEOUT / 3)  # the pause itself, not a wait for anything
            os.kill(paused_pid, signal.SIGCONT)
            await placed[paused_pid].publish(f"e-{published}")  # its loop runs again
            published += 1
            await trio.sleep(TIMEOUT / 3)
        assert published >= 4
        await placed[other_pid].wait_events(op, published)
        assert supervisor.workers == workers and supervisor.restarts == 0
        assert not lines_with(supervisor, HUNG) and not lines_with(supervisor, "restarting")
        nursery.cancel_scope.cancel()


async def _spawned_worker(supervisor: Supervisor, known: set[int]) -> tuple[int, float]:
    """A new child of the supervisor, once it runs a worker's command (not the
    fork still running the supervisor's), and when it was first seen."""
    seen: dict[int, float] = {}
    with trio.fail_after(SOON):
        while True:
            for pid in set(_children(supervisor.process.pid)) - known:
                seen.setdefault(pid, trio.current_time())
                if b"--workers\x001\x00" in _cmdline(pid):
                    return pid, seen[pid]
            await trio.sleep(0.005)  # /proc: no event to wait on


async def test_a_restarted_worker_hung_before_serving_is_killed_within_the_start_up_bound(
    tmp_path: Path,
) -> None:
    bound = startup_timeout(TIMEOUT)
    async with open_supervisor(tmp_path, "--worker-timeout", str(TIMEOUT)) as supervisor:
        workers = dict(supervisor.workers)
        index, victim = 0, workers[0]
        known = set(_children(supervisor.process.pid))
        os.kill(victim, signal.SIGKILL)
        killed_victim = trio.current_time()
        # Its replacement hangs in its start-up: stopped before it can serve.
        hung, seen = await _spawned_worker(supervisor, known)
        os.kill(hung, signal.SIGSTOP)
        pidfd = os.pidfd_open(hung)
        try:
            with trio.fail_after(bound + SLACK):
                await trio.lowlevel.wait_readable(pidfd)  # readable once it exited
        finally:
            os.close(pidfd)
        ended = trio.current_time()
        await supervisor.wait_for(
            lambda: supervisor.workers[index] not in (victim, hung), "a third worker serving"
        )
        serving = trio.current_time()
        print(
            f"start-up bound {bound:.1f} s: replacement seen to its kill {ended - seen:.2f} s; "
            f"to a third worker serving {serving - seen:.2f} s"
        )
        assert ended - killed_victim >= bound  # its bound began after the victim's death
        assert ended - seen <= bound + SLACK
        assert serving - seen <= bound + SLACK + RESTART
        assert not os.path.exists(f"/proc/{hung}")  # killed and reaped
        [line] = lines_with(supervisor, " did not start serving within ")
        assert (
            f"worker {index} did not start serving within {bound:.1f} s: killing it to restart it"
            in line
        ), line
        assert f"pid={hung}" in line, line
        assert len(lines_with(supervisor, f"worker {index} exited (code -9): restarting")) == 2
        # Never announced; the other worker was left alone, and no heartbeat kill was involved.
        assert not [line for line in supervisor.lines if f"pid {hung} serving".encode() in line]
        assert supervisor.workers[1] == workers[1] and supervisor.restarts == 1
        assert not lines_with(supervisor, HUNG)
        assert HEARTBEAT_ENV in environ_of(supervisor.workers[index])


async def test_a_first_start_that_hangs_fails_the_supervisor_with_one_line(
    tmp_path: Path,
) -> None:
    # An APP whose import never returns (its worker stops itself): every
    # worker hangs in its first start. The supervisor does not wait forever.
    (tmp_path / "hangs_at_import.py").write_text(
        "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\napp = None\n"
    )
    log = tmp_path / "supervisor.log"
    env = dict(os.environ, MESHSUB_DATA_DIR=str(tmp_path / "data"), PYTHONPATH=str(tmp_path))
    command = [sys.executable, "-m", "meshsub_trio", "serve", "hangs_at_import:app"]
    command += ["--workers", "2", "--port", "0", "--worker-timeout", "1"]
    bound = startup_timeout(1.0)
    began = trio.current_time()
    with open(log, "wb") as stderr:
        process = await trio.lowlevel.open_process(command, stderr=stderr, env=env)
    try:
        # The bound, then the other worker's stop (SIGTERM, SIGKILL 2 s later: stopped too).
        with trio.fail_after(bound + 2.0 + SLACK + RESTART):
            code = await process.wait()
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
                await process.wait()
    took = trio.current_time() - began
    print(f"a hung first start to the supervisor's exit: {took:.2f} s (bound {bound:.1f} s)")
    text = log.read_text(errors="replace")
    assert code == 1, text
    [line] = [line for line in text.splitlines() if "did not start serving" in line]
    assert re.fullmatch(
        rf"meshsub-trio: worker [01] did not start serving within {bound:.1f} s "
        r"\(pid \d+\): killed it",
        line,
    ), text
    assert took >= bound and "restarting" not in text and "Traceback" not in text, text


async def _cannot_drain(tmp_path: Path, timeout: str) -> tuple[int, list[str], dict[int, int]]:
    """SIGTERM a supervisor one of whose workers is stopped: its exit status,
    its log lines and its workers (index -> pid) as they were."""
    async with open_supervisor(tmp_path, "--worker-timeout", timeout) as supervisor:
        workers = dict(supervisor.workers)
        os.kill(workers[1], signal.SIGSTOP)
        supervisor.process.send_signal(signal.SIGTERM)
        with trio.fail_after(DRAIN_BOUND + SLACK):
            code = await supervisor.process.wait()
    return code, supervisor.log.read_text(errors="replace").splitlines(), workers


async def test_a_worker_that_cannot_drain_is_killed_and_the_exit_status_says_so(
    tmp_path: Path,
) -> None:
    # --worker-timeout 0: nothing watches the loops, only the drain's bound
    # applies. 2: the stopped worker would be killed by the watch long before
    # the drain's bound, but a drain is the drain's business alone (no kill
    # for silence, no restart). Both run at once: each waits out the bound.
    outcomes: dict[str, tuple[int, list[str], dict[int, int]]] = {}

    async def run(timeout: str) -> None:
        place = tmp_path / f"timeout-{timeout}"
        place.mkdir()
        outcomes[timeout] = await _cannot_drain(place, timeout)

    async with trio.open_nursery() as nursery:
        for timeout in ("0", "2"):
            nursery.start_soon(run, timeout)
    for timeout, (code, log, workers) in outcomes.items():
        text = "\n".join(log)
        assert code == EXIT_WORKER_KILLED, text
        [killed] = [line for line in log if "did not drain within" in line]
        assert f"worker 1 did not drain within {DRAIN_BOUND:.1f} s: killing it (SIGKILL)" in killed
        assert f"pid={workers[1]}" in killed, killed
        [summary] = [line for line in log if "had to be killed instead of draining" in line]
        assert (
            f"worker 1 had to be killed instead of draining: exit status {EXIT_WORKER_KILLED}"
            in summary
        )
        assert HUNG not in text and "restarting" not in text, (timeout, text)
        # The other worker drained as usual.
        assert any(
            "SIGTERM received: shutting down" in line and line.endswith(" worker=0") for line in log
        ), text
        for pid in workers.values():
            assert not os.path.exists(f"/proc/{pid}")


async def test_a_clean_drain_exits_0(tmp_path: Path) -> None:
    async with open_supervisor(tmp_path, "--worker-timeout", str(TIMEOUT)) as supervisor:
        supervisor.process.send_signal(signal.SIGTERM)
        with trio.fail_after(DRAIN_BOUND + SLACK):
            assert await supervisor.process.wait() == 0, supervisor.stderr()
    assert not lines_with(supervisor, "did not drain") and not lines_with(supervisor, HUNG)


def test_the_option_is_read_and_checked_like_the_other_durations(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args, resolved = parse_serve_args(["serve"])
    assert args.worker_timeout == 30.0 and resolved.sources["worker_timeout"] == "default"
    assert parse_serve_args(["serve", "--worker-timeout", "0"])[0].worker_timeout == 0.0
    config = tmp_path / "meshsub.toml"
    config.write_text("[serve]\nworker-timeout = 5\n")
    args, resolved = parse_serve_args(["serve", "--config", str(config)])
    assert args.worker_timeout == 5.0 and resolved.sources["worker_timeout"].startswith("file")
    monkeypatch.setenv("MESHSUB_WORKER_TIMEOUT", "7.5")
    args, resolved = parse_serve_args(["serve", "--config", str(config)])
    assert args.worker_timeout == 7.5
    assert resolved.sources["worker_timeout"] == "env MESHSUB_WORKER_TIMEOUT"
    for bad in ("-1", "nan", "soon"):
        with pytest.raises(SystemExit):
            parse_serve_args(["serve", "--worker-timeout", bad])
        assert "--worker-timeout" in capsys.readouterr().err
    monkeypatch.setenv("MESHSUB_WORKER_TIMEOUT", "-1")
    with pytest.raises(SystemExit, match="MESHSUB_WORKER_TIMEOUT: '-1' is a negative duration"):
        parse_serve_args(["serve"])


def test_a_lone_server_has_no_heartbeat_and_a_bad_one_is_refused() -> None:
    assert heartbeat_from({}) is None
    assert heartbeat_from({HEARTBEAT_ENV: "7,0.5"}) == Heartbeat(7, 0.5)
    for bad in ("7", "x,1", "7,0", "-1,1", "7,nan"):
        with pytest.raises(SystemExit, match=HEARTBEAT_ENV):
            heartbeat_from({HEARTBEAT_ENV: bad})
    # Several beats per timeout, at most one a second.
    assert beat_interval(30.0) == 1.0 and beat_interval(2.0) == 0.5


async def test_a_full_pipe_drops_beats_and_never_blocks_the_loop() -> None:
    read, write = os.pipe()
    os.set_blocking(write, False)
    try:
        while True:  # the supervisor is not reading: fill its pipe
            os.write(write, b"x" * 65536)
    except BlockingIOError:
        pass
    interval = 0.01
    with trio.move_on_after(20 * interval) as waited:
        await send_heartbeats(Heartbeat(write, interval))  # closes *write* when cancelled
    assert waited.cancelled_caught
    drained = b""
    while chunk := os.read(read, 1 << 20):  # EOF: the beater closed its end
        drained += chunk
    os.close(read)
    assert set(drained) == {ord("x")}  # every beat dropped, none blocked


async def test_the_watch_reads_beats_and_reports_silence_once() -> None:
    read, write = os.pipe()
    os.set_blocking(read, False)
    alive = os.dup(write)  # the worker's process, still there once its beats stop
    silences: list[float] = []
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_heartbeats, Heartbeat(write, 0.02))  # closes *write*
            with trio.move_on_after(0.5):  # five timeouts of beats: nothing to report
                await watch_heartbeats(read, 0.1, silences.append)
            assert silences == []
            nursery.cancel_scope.cancel()
        with trio.fail_after(5):  # no more beats: reported once, then the watch ends
            await watch_heartbeats(read, 0.1, silences.append)
        assert len(silences) == 1 and silences[0] >= 0.1
        os.close(alive)
        alive = -1
        with trio.fail_after(5):  # the worker exited: end of file ends the watch, no report
            await watch_heartbeats(read, 0.1, silences.append)
        assert len(silences) == 1
    finally:
        if alive >= 0:
            os.close(alive)
        os.close(read)
