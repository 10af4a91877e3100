"""Real ``meshsub-trio serve --data-dir`` processes for the persistence tests.

A server is ready once it printed where it listens (no polling, no sleep);
one that must refuse to start is run to its exit and its stderr read back.
Everything waits under :data:`SOON`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

#: Generous bound for "arrives" (a start includes reading the database).
SOON = 20.0


@dataclass
class Served:
    process: trio.Process
    port: int
    stderr: Path

    def sigkill(self) -> None:
        """SIGKILL: no shutdown, no flush, nothing the process could still do."""
        self.process.kill()


def _command(data_dir: Path | str, *args: str) -> list[str]:
    return [
        sys.executable, "-m", "meshsub_trio", "serve", "--data-dir", str(data_dir),
        "--port", "0", "--keepalive", "0", "--no-simulator", *args,
    ]  # fmt: skip


@asynccontextmanager
async def serving(data_dir: Path, *args: str, log: Path | None = None) -> AsyncIterator[Served]:
    """One server on *data_dir*; killed on exit if still alive."""
    stderr = log or data_dir.parent / f"stderr-{len(list(data_dir.parent.glob('stderr-*')))}.txt"
    with stderr.open("wb") as errors:
        process = await trio.lowlevel.open_process(
            _command(data_dir, *args), stdout=subprocess.PIPE, stderr=errors
        )
    try:
        assert process.stdout is not None
        line = b""
        with trio.fail_after(SOON):
            while b"\n" not in line:
                chunk = await process.stdout.receive_some(256)
                assert chunk, f"the server exited before listening: {stderr.read_text()}"
                line += chunk
        assert line.startswith(b"meshsub-trio serving on http://127.0.0.1:"), line
        yield Served(process, int(line.split(b":")[-1].split(b"\n")[0]), stderr)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()


async def refused(data_dir: Path, *args: str) -> tuple[int, list[str]]:
    """Run a server that must not start: its exit code and its stderr lines."""
    with trio.fail_after(SOON):
        done = await trio.run_process(
            _command(data_dir, *args), capture_stdout=True, capture_stderr=True, check=False
        )
    assert b"serving on" not in done.stdout, "the server started"
    return done.returncode, done.stderr.decode().splitlines()
