"""The command line as an operator uses it: a real process, real signals."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import trio

from ..wsclient import LEGACY, TRANSPORT, open_raw_client


async def start_cli(*args: str) -> tuple[trio.Process, int]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshsub_trio", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(20):
        while b"\n" not in line:
            chunk = await process.stdout.receive_some(256)
            assert chunk, "server exited before listening"
            line += chunk
    assert line.startswith(b"meshsub-trio serving on http://127.0.0.1:"), line
    return process, int(line.split(b":")[-1].split(b"\n")[0])


async def stop(process: trio.Process) -> None:
    process.kill()
    await process.wait()
    if process.stdout is not None:
        await process.stdout.aclose()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_signal_closes_1001_and_exits_0(signum: int) -> None:
    process, port = await start_cli("meshsub_trio.examples.countdown:app", "--keepalive", "0")
    try:
        codes: list[int] = []
        async with trio.open_nursery() as nursery:

            async def subscriber(protocol: str, ready: trio.Event) -> None:
                async with open_raw_client(port, subprotocols=[protocol]) as client:
                    await client.init()
                    kind = "subscribe" if protocol == TRANSPORT else "start"
                    query = "subscription { ticks(everyMs: 10) }"
                    await client.send({"id": "1", "type": kind, "payload": {"query": query}})
                    await client.receive_until("next" if protocol == TRANSPORT else "data")
                    ready.set()
                    codes.append((await client.expect_close(10))[0])

            ready = [trio.Event(), trio.Event()]
            nursery.start_soon(subscriber, TRANSPORT, ready[0])
            nursery.start_soon(subscriber, LEGACY, ready[1])
            for event in ready:
                with trio.fail_after(10):
                    await event.wait()
            process.send_signal(signum)
        with trio.fail_after(5):
            assert await process.wait() == 0
        assert codes == [1001, 1001]
    finally:
        await stop(process)


async def test_app_path_errors_are_clear() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "serve", "no_such_module:app", "--port", "0"],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    assert result.returncode != 0
    assert b"cannot load 'no_such_module:app'" in result.stderr


async def test_help_lists_the_keepalive_flag() -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "meshsub_trio", "serve", "--help"], capture_stdout=True
    )
    assert b"--keepalive" in result.stdout and b"APP" in result.stdout.upper()


