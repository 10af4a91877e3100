"""The command line for scale-out: --broker / MESHSUB_BROKER, one simulator, clear failures."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import trio

from meshsub_trio.testing import NatsServer, open_nats_server

from ._kit import EVENTS, SOON, Reader, start_process


async def serve_fails(*args: str, env: dict[str, str] | None = None) -> str:
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "serve", "--port", "0", *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode != 0
    return result.stderr.decode()


async def test_help_documents_the_broker_and_the_one_simulator() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "serve", "--help"], capture_stdout=True
    )
    text = " ".join(result.stdout.decode().split())
    assert "--broker URL" in text and "$MESHSUB_BROKER" in text
    assert "exactly ONE of the processes" in text


async def test_bad_broker_urls_are_refused_clearly() -> None:
    stderr = await serve_fails(env={"MESHSUB_BROKER": "redis://somewhere"})
    assert "--broker must be 'memory' or nats://HOST:PORT" in stderr
    async with open_nats_server(jetstream=False) as plain:
        stderr = await serve_fails("--broker", plain.url)
    assert "cannot use the NATS broker" in stderr and "-js" in stderr


async def test_env_var_and_a_single_simulator(nats_server: NatsServer) -> None:
    env = {**os.environ, "MESHSUB_BROKER": nats_server.url}
    quiet = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshsub_trio", "serve", "--port", "0", "--keepalive", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    try:
        assert quiet.stdout is not None
        line = b""
        with trio.fail_after(SOON):
            while b"\n" not in line:
                line += await quiet.stdout.receive_some(256)
        quiet_port = int(line.split(b":")[-1])
        simulating = await start_process(
            "--broker", nats_server.url, "--simulator", "--rate", "20", "--seed", "3"
        )
        async with trio.open_nursery() as nursery:
            # The simulator runs in one process; its story reaches the other.
            reader = Reader(EVENTS.replace("description", "description systemID"), "quiet")
            await reader.start(nursery, quiet_port, cursor="0")
            await reader.wait_count(3)
            systems = {data["subscribeEvents"]["systemID"] for data in reader.data()}
            assert len(systems) == 1  # one story: the quiet process does not simulate
            nursery.cancel_scope.cancel()
        for process in (simulating.process, quiet):
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(SOON):
                assert await process.wait() == 0
        if simulating.process.stdout is not None:
            await simulating.process.stdout.aclose()
    finally:
        if quiet.returncode is None:
            quiet.kill()
            await quiet.wait()
        if quiet.stdout is not None:
            await quiet.stdout.aclose()
