"""Real ``meshsub-trio serve`` processes for the client tests: start, kill, restart on a port.

A process is ready once it printed where it listens; it is always stopped
(SIGTERM, then SIGKILL) when its block ends.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import trio

from ._kit import SOON, event

APP = "tests.client._apps:quiet_meshery"
EVENTS_PATH = "/api/system/events"


@dataclass
class ServeProcess:
    process: trio.Process
    port: int

    def kill(self) -> None:
        self.process.kill()

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    async def wait(self) -> int:
        with trio.fail_after(SOON):
            return await self.process.wait()

    def http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=SOON)


async def start_serve(*args: str, port: int = 0) -> ServeProcess:
    """``python -m meshsub_trio serve APP ARGS --port PORT``, once it is listening."""
    command = [sys.executable, "-m", "meshsub_trio", "serve", APP, *args, "--port", str(port)]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    line = b""
    try:
        with trio.fail_after(SOON):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(256)
                assert chunk, f"the server exited before listening (port {port})"
                line += chunk
    except BaseException:
        process.kill()
        raise
    finally:
        await process.stdout.aclose()
    assert line.startswith(b"meshsub-trio serving on http://127.0.0.1:"), line
    return ServeProcess(process, int(line.split(b":")[-1].split(b"\n")[0]))


@asynccontextmanager
async def processes() -> AsyncIterator[list[ServeProcess]]:
    """A list to put started processes in; each is stopped when the block ends."""
    started: list[ServeProcess] = []
    try:
        yield started
    finally:
        with trio.CancelScope(shield=True):
            for proc in started:
                if proc.process.returncode is None:
                    proc.terminate()
                with trio.move_on_after(5):
                    await proc.process.wait()
                if proc.process.returncode is None:
                    proc.kill()
                    await proc.process.wait()


async def post_events(http: httpx.AsyncClient, descriptions: list[str]) -> None:
    """POST each event; a 201 means it was logged (on NATS, for a NATS broker)."""
    for description in descriptions:
        response = await http.post(EVENTS_PATH, json=event(description))
        assert response.status_code == 201, response.text
