"""A worker slot stopped while it restarts a worker: nothing starts after the stop.

The slot's loop waits (backoff) and then spawns; a stop that lands in
either must end the slot, not leave a new worker to start behind the
supervisor's back (serving after the drain began, or spawned with the
sockets closed under it). Fake workers (a Python one-liner that prints the
serving line and waits for its stdin to close) keep this fast; the moments
are reached through events and ``wait_all_tasks_blocked``, never a sleep.
"""

from __future__ import annotations

import signal
import sys

import pytest
import trio
import trio.testing

from meshsub_trio._supervisor import _worker
from meshsub_trio._supervisor._heartbeat import BeatPipe
from meshsub_trio._supervisor._worker import WorkerFailed, WorkerSlot, startup_timeout

SOON = 20.0
SERVES = "import sys; print('meshsub-trio serving on http://x', flush=True); sys.stdin.read()"
HANGS = "import sys; sys.stdin.read()"


class CountingSlot(WorkerSlot):
    """A slot whose second spawn waits for the test's go-ahead once it began."""

    def __init__(self, script: str, timeout: float = 0.0) -> None:
        super().__init__(0, [sys.executable, "-c", script], [], {}, timeout)
        self.spawned: list[trio.Process] = []
        self.spawning = trio.Event()
        self.go = trio.Event()
        self.hold_second = False

    async def _open(self, beats: BeatPipe | None) -> trio.Process:
        if self.spawned and self.hold_second:
            self.spawning.set()
            await self.go.wait()
        process = await super()._open(beats)
        self.spawned.append(process)
        return process


async def test_a_stop_during_the_restart_wait_ends_the_slot_without_a_new_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waiting = trio.Event()

    class Waits(_worker.Backoff):
        async def wait(self) -> None:  # as long as it takes: only the stop ends it
            waiting.set()
            await trio.sleep_forever()

    monkeypatch.setattr(_worker, "Backoff", Waits)
    slot = CountingSlot(SERVES)
    with trio.fail_after(SOON):
        async with trio.open_nursery() as nursery:  # exits only once run() returned
            await nursery.start(slot.run)
            [first] = slot.spawned
            first.kill()
            await waiting.wait()
            assert await slot.stop(5.0)
    assert slot.spawned == [first] and slot.restarts == 1


async def test_a_stop_during_a_spawn_stops_the_spawned_worker_and_ends_the_slot(
    capsys: pytest.CaptureFixture[str],
) -> None:
    slot = CountingSlot(SERVES)
    slot.hold_second = True
    stopped: list[bool] = []

    async def stop() -> None:
        stopped.append(await slot.stop(5.0))

    with trio.fail_after(SOON):
        async with trio.open_nursery() as nursery:  # exits only once run() returned
            await nursery.start(slot.run)
            slot.spawned[0].kill()
            await slot.spawning.wait()  # the replacement's spawn has begun
            nursery.start_soon(stop)
            await trio.testing.wait_all_tasks_blocked()  # stop() waits for that spawn
            assert not stopped
            slot.go.set()
    [_, replacement] = slot.spawned
    # Stopped as stop() stops any worker (SIGTERM, drained in time: True), never announced.
    assert stopped == [True] and replacement.returncode == -signal.SIGTERM
    assert f"pid {replacement.pid} serving" not in capsys.readouterr().out


async def test_a_first_start_past_the_start_up_bound_fails_with_one_reason() -> None:
    slot = CountingSlot(HANGS, timeout=0.25)
    began = trio.current_time()
    with trio.fail_after(SOON):
        async with trio.open_nursery() as nursery:
            with pytest.raises(WorkerFailed) as failed:
                await nursery.start(slot.run)
    took = trio.current_time() - began
    [process] = slot.spawned
    assert process.returncode == -signal.SIGKILL
    bound = startup_timeout(0.25)
    assert str(failed.value) == (
        f"worker 0 did not start serving within {bound:.1f} s (pid {process.pid}): killed it"
    )
    assert bound <= took < bound + 5.0


def test_the_start_up_bound_follows_the_worker_timeout() -> None:
    assert startup_timeout(30.0) == 60.0 and startup_timeout(2.0) == 4.0
    assert startup_timeout(0.0) == 0.0  # off, as the heartbeat is
