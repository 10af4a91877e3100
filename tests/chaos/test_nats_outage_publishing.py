"""A publisher's event loop keeps going when nats-server dies under it.

Found by a tester against ``serve --workers 2``: after a SIGKILL of the
embedded nats-server, one worker in three stayed at 100% of a core for good
(py-spy: ``Outbox.run`` -> ``Client.is_connected``). nats-py marks itself
disconnected at once but runs the disconnect callback later, in a task of its
own; in between, the outbox found nats-py disconnected while the link's
"connected" event was still set, so its wait returned at once and it looped
without ever yielding: the callback, the reconnect and both event loops
(asyncio and Trio share the thread) never ran again. A stuck loop cannot time
itself out, so the publisher runs in a child process watched from here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

__all__ = ["nats_server"]

ROOT = Path(__file__).resolve().parents[2]
#: Kills per test: before the fix about one in three stuck the child.
ROUNDS = 6
#: The child ticks every 20 ms; a live loop on a busy machine does within this.
ALIVE = 3.0


class Child:
    def __init__(self, process: trio.Process) -> None:
        assert process.stdout is not None
        self.process = process
        self.lines = process.stdout
        self._pending = b""

    async def line(self) -> str:
        while b"\n" not in self._pending:
            chunk = await self.lines.receive_some(65536)
            if not chunk:
                raise AssertionError("the publishing child exited")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    async def until(self, wanted: str, within: float, why: str) -> None:
        with trio.move_on_after(within) as scope:
            while await self.line() != wanted:
                pass
        assert not scope.cancelled_caught, why


async def test_a_publisher_outlives_nats_server_being_killed(nats_server: NatsServer) -> None:
    async with trio.open_nursery() as nursery:
        process = await nursery.start(
            lambda task_status: trio.run_process(
                [sys.executable, "-m", "tests.chaos._publishing_child", nats_server.url],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                check=False,
                task_status=task_status,
            )
        )
        child = Child(process)
        try:
            await child.until("state connected", 20, "the child never connected")
            for round_ in range(ROUNDS):
                await nats_server.stop(kill=True)
                await child.until("state reconnecting", ALIVE, f"round {round_}: no reconnecting")
                await child.until("tick", ALIVE, f"round {round_}: the child's loop is stuck")
                await nats_server.start()
                await child.until("state connected", 20, f"round {round_}: never reconnected")
                await child.until("tick", ALIVE, f"round {round_}: stuck after reconnecting")
        finally:
            process.kill()
