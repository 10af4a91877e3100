"""``meshsub-trio subscribe``: one JSON line per payload, notices on stderr, exit codes.

In-process through :func:`subscribe_command`, and end to end as a real
subprocess whose connection is reset mid-stream by the fault proxy.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio

from meshsub_trio.client._command import add_subscribe_command, subscribe_command
from meshsub_trio.testing import open_fault_proxy

from ._kit import EVENTS, SOON, ws_url
from .conftest import Meshery


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="meshsub-trio")
    add_subscribe_command(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["subscribe", *argv])


async def run(*argv: str) -> tuple[int, list[dict[str, Any]], str]:
    out, err = io.StringIO(), io.StringIO()
    with trio.fail_after(SOON):
        code = await subscribe_command(parse(*argv), out, err)
    return code, [json.loads(line) for line in out.getvalue().splitlines()], err.getvalue()


async def test_prints_one_json_object_per_payload_and_stops_at_count(meshery: Meshery) -> None:
    for n in range(5):
        meshery.publish(f"c{n}")
    code, lines, err = await run(EVENTS, "--url", meshery.url, "--cursor", "1", "--count", "3")
    assert code == 0 and err == ""  # a healthy run says nothing on stderr
    assert [line["data"]["subscribeEvents"]["description"] for line in lines] == [
        "c1",
        "c2",
        "c3",
    ]
    assert [line["extensions"]["cursor"] for line in lines] == ["2", "3", "4"]


async def test_exits_0_when_the_server_completes(meshery: Meshery) -> None:
    code, lines, _ = await run(
        "query Q($ids: [String!]) { getAvailableNamespaces(k8sClusterIDs: $ids) { namespace } }",
        "--url",
        meshery.url.replace("ws://", "http://"),
        "--variables",
        '{"ids": []}',
        "--transport",
        "legacy",
    )
    assert code == 0 and lines == [{"data": {"getAvailableNamespaces": []}}]


async def test_exit_codes_say_what_failed(make_meshery: Callable[..., Any]) -> None:
    meshery: Meshery = await make_meshery(tokens={"good": "alice"})
    code, _, err = await run(EVENTS, "--url", meshery.url, "--token", "bad")
    assert code == 3 and "AuthRefused" in err
    code, _, err = await run("subscription { nope }", "--url", meshery.url, "--token", "good")
    assert code == 4 and "nope" in err
    code, lines, _ = await run(EVENTS, "--url", meshery.url, "--token", "good", "--cursor", "99")
    assert code == 6 and lines == []


async def test_credentials_in_a_url_never_reach_stderr() -> None:
    """A reviewer's find: every disconnect notice and the final error named the
    URL with its password. Nothing listens on the port: connects fail, notices
    and NetworkGone follow."""
    import socket

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    url = f"ws://alice:s3cretPW@127.0.0.1:{port}/graphql"
    code, _, err = await run(EVENTS, "--url", url, "--give-up-after", "0.5")
    assert code != 0 and "ws://***@127.0.0.1" in err, err
    assert "s3cretPW" not in err and "alice" not in err


def test_usage_errors() -> None:
    with pytest.raises(SystemExit):
        parse(EVENTS)  # no --url
    with pytest.raises(SystemExit):
        parse(EVENTS, "--url", "ws://x", "--variables", "[1]")
    with pytest.raises(SystemExit):
        parse(EVENTS, "--url", "ws://x", "--count", "0")


def _command_line() -> list[str]:
    """``meshsub-trio subscribe``, as a user runs it."""
    return [sys.executable, "-m", "meshsub_trio", "subscribe"]


async def test_end_to_end_a_reset_mid_stream_loses_nothing(meshery: Meshery) -> None:
    async with open_fault_proxy("127.0.0.1", meshery.server.port) as proxy:
        command = [
            *_command_line(),
            EVENTS,
            "--url",
            ws_url(proxy.port),
            "--cursor",
            "0",
            "--count",
            "6",
            "--ping-interval",
            "0.2",
            "--pong-timeout",
            "0.2",
        ]
        process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        lines: list[dict[str, Any]] = []
        errors = bytearray()

        async def read_stderr() -> None:
            assert process.stderr is not None
            async for chunk in process.stderr:
                errors.extend(chunk)

        async def read_lines(count: int, buffered: bytearray) -> None:
            assert process.stdout is not None
            while len(lines) < count:
                while b"\n" not in buffered:
                    chunk = await process.stdout.receive_some(65536)
                    assert chunk, f"the command ended early: {errors.decode()}"
                    buffered.extend(chunk)
                line, _, rest = bytes(buffered).partition(b"\n")
                buffered[:] = rest
                lines.append(json.loads(line))

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_stderr)
                buffered = bytearray()
                with trio.fail_after(SOON):
                    for n in range(3):
                        meshery.publish(f"x{n}")
                    await read_lines(3, buffered)
                    proxy.reset()
                    for n in range(3, 6):
                        meshery.publish(f"x{n}")
                    await read_lines(6, buffered)
                    assert await process.wait() == 0
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert [line["data"]["subscribeEvents"]["description"] for line in lines] == [
        f"x{n}" for n in range(6)
    ]
    text = errors.decode()
    assert "disconnected" in text and "reconnecting" in text and "connected to" in text, text


@pytest.mark.parametrize(
    ("blocked", "transport", "needs"),
    [("trio_websocket", "ws", "trio-websocket"), ("httpx", "sse", "httpx")],
)
def test_without_the_client_extra_the_message_says_what_to_install(
    blocked: str, transport: str, needs: str
) -> None:
    # A base install (`pip install -e .`) lacks the client extra: the command
    # says what to install in one line and exits 1 (as `serve --workers`
    # does without its extra), without a traceback.
    script = (
        f"import sys; sys.modules[{blocked!r}] = None\n"
        "from meshsub_trio._cli import main\n"
        "sys.argv = ['meshsub-trio', 'subscribe', 'subscription { x }', "
        f"'--url', 'http://127.0.0.1:9/graphql', '--transport', {transport!r}]\n"
        "raise SystemExit(main())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1, done.stderr
    assert done.stdout == ""
    what = "WebSocket client" if transport == "ws" else "SSE transport"
    assert done.stderr.splitlines() == [
        f"meshsub-trio subscribe: error: the {what} needs {needs}: "
        "pip install 'meshsub-trio[client]'"
    ]
