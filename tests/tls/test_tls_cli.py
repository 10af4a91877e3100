"""``meshsub-trio serve --certfile/--keyfile``: one-line errors, and SIGHUP reloading
the pair while a connected client stays connected."""

from __future__ import annotations

import json
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from trio_websocket import open_websocket

from .certs import Certs
from .conftest import client_context

APP = "meshsub_trio.examples.countdown:app"


def _serve(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "meshsub_trio", "serve", APP, "--port", "0", *map(str, args)],
        capture_output=True, text=True, timeout=20, check=False,
    )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing cert", "No such file or directory"),
        ("unreadable key", "Permission denied"),
        ("mismatched key", "does not match the certificate"),
        ("not a certificate", "not a PEM certificate"),
        ("client cert without CA", "--client-cert required needs --ca-certs"),
        ("key without cert", "need --certfile"),
    ],
)
def test_bad_tls_files_stop_serve_with_one_line(
    certs: Certs, tmp_path: Path, case: str, expected: str
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    locked = tmp_path / "locked.key"
    shutil.copy(certs.server.key, locked)
    locked.chmod(0)
    args = {
        "missing cert": ["--certfile", tmp_path / "absent.pem"],
        "unreadable key": ["--certfile", certs.server.cert, "--keyfile", locked],
        "mismatched key": ["--certfile", certs.server.cert, "--keyfile", certs.other_key],
        "not a certificate": ["--certfile", junk, "--keyfile", certs.server.key],
        "client cert without CA": [
            "--certfile", certs.server.cert, "--keyfile", certs.server.key,
            "--client-cert", "required",
        ],
        "key without cert": ["--keyfile", certs.server.key],
    }[case]
    if case == "unreadable key":
        try:
            locked.read_bytes()
        except PermissionError:
            pass
        else:
            args = ["--certfile", certs.server.cert, "--keyfile", tmp_path / "gone" / "k.key"]
            expected = "No such file or directory"  # as root every file is readable
    result = _serve(*args)
    assert result.returncode == 1, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("meshsub-trio: ") and expected in lines[0], lines[0]
    assert result.stdout == ""


# ---- SIGHUP ----------------------------------------------------------------------


class Lines:
    """A subprocess pipe read as lines, awaited (never slept on)."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.seen: list[str] = []

    async def until(self, text: str) -> str:
        while True:
            while b"\n" in self.buffer:
                line, _, self.buffer = self.buffer.partition(b"\n")
                decoded = line.decode()
                self.seen.append(decoded)
                if text in decoded:
                    return decoded
            data = await self.stream.receive_some(65536)
            if not data:
                raise AssertionError(f"stream ended before {text!r}: {self.seen}")
            self.buffer += data


@asynccontextmanager
async def _cli(cert: Path, key: Path) -> AsyncIterator[tuple[trio.Process, Lines, int]]:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "meshsub_trio", "serve", APP, "--port", "0",
         "--certfile", str(cert), "--keyfile", str(key)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        with trio.fail_after(20):
            line = await Lines(process.stdout).until("serving on")
        url = line.rsplit(" ", 1)[1]
        assert url.startswith("https://127.0.0.1:"), line
        yield process, Lines(process.stderr), int(url.rsplit(":", 1)[1])
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _server_cn(port: int, context: ssl.SSLContext) -> str:
    """The commonName of the certificate a new handshake gets."""
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost")
    try:
        await stream.do_handshake()
        cert = stream.getpeercert()
        assert cert is not None
        subject = {name: value for rdn in cert["subject"] for name, value in rdn}
        return str(subject["commonName"])
    finally:
        await trio.aclose_forcefully(stream)


async def test_sighup_reloads_the_pair_and_keeps_connections(
    certs: Certs, tmp_path: Path
) -> None:
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    shutil.copy(certs.server.cert, cert)
    shutil.copy(certs.server.key, key)
    context = client_context(certs)
    async with _cli(cert, key) as (process, stderr, port):
        assert await _server_cn(port, context) == "server-1"
        async with open_websocket(
            "127.0.0.1", port, "/ws", use_ssl=context, subprotocols=["graphql-transport-ws"]
        ) as ws:
            with trio.fail_after(10):
                await ws.send_message(json.dumps({"type": "connection_init"}))
                assert json.loads(await ws.get_message())["type"] == "connection_ack"
                query = "subscription { ticks(everyMs: 20) }"
                await ws.send_message(
                    json.dumps({"id": "t", "type": "subscribe", "payload": {"query": query}})
                )
                first = json.loads(await ws.get_message())["payload"]["data"]["ticks"]

                # Rotate: the new pair in place, then SIGHUP.
                shutil.copy(certs.server2.cert, cert)
                shutil.copy(certs.server2.key, key)
                process.send_signal(signal.SIGHUP)
                await stderr.until("TLS certificate reloaded")
                assert await _server_cn(port, context) == "server-2"

                # A broken file on the next SIGHUP keeps the working pair.
                cert.write_text("half-written\n")
                process.send_signal(signal.SIGHUP)
                await stderr.until("TLS reload failed")
                assert await _server_cn(port, context) == "server-2"

                # The client connected before both reloads still streams, in order.
                later = [
                    json.loads(await ws.get_message())["payload"]["data"]["ticks"]
                    for _ in range(5)
                ]
            assert later[0] > first and later == list(range(later[0], later[0] + 5))
            assert ws.closed is None
        assert process.returncode is None  # SIGHUP never stopped the server
