"""The servers under test: how to start each one, and where it listens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from tlscerts import BenchCert

BENCH_DIR = Path(__file__).resolve().parent
PYTHON = sys.executable


@dataclass(frozen=True)
class ServerSpec:
    """One server under test; ``{port}`` in ``argv`` is replaced at start."""

    key: str
    label: str
    argv: tuple[str, ...]
    ws_path: str
    http_path: str
    #: "meshsub" (the subject), "peer" (a GraphQL peer) or "raw" (a transport limit)
    role: str
    env: dict[str, str] = field(default_factory=dict)
    #: Whether the server speaks only TLS (``{certfile}``/``{keyfile}`` in ``argv``).
    tls: bool = False
    #: How the load generator subscribes: "ws" (graphql-transport-ws) or "sse"
    #: (graphql-sse distinct connections mode: a POST per subscription).
    transport: str = "ws"
    #: The server this one is a variant of (TLS, SSE): the variant ÷ baseline table.
    baseline: str | None = None


def _meshsub(factory: str) -> tuple[str, ...]:
    return (
        PYTHON, "-m", "meshsub_trio", "serve", f"servers.meshsub_app:{factory}",
        "--port", "{port}", "--keepalive", "0", "--log-level", "warning",
    )  # fmt: skip


_TLS_FILES = ("--certfile", "{certfile}", "--keyfile", "{keyfile}")


def all_specs(share_value: str) -> list[ServerSpec]:
    """Every server, the subject first."""
    node = ("node", str(BENCH_DIR / "node" / "server.mjs"), "--port", "{port}")
    return [
        ServerSpec("meshsub", "meshsub-trio", _meshsub("create_app"), "/ws", "/api", "meshsub"),
        ServerSpec(
            "meshsub-tls",
            "meshsub-trio TLS",
            (*_meshsub("create_app"), *_TLS_FILES),
            "/ws",
            "/api",
            "meshsub",
            tls=True,
            baseline="meshsub",
        ),
        ServerSpec(
            "meshsub-sse",
            "meshsub-trio SSE",
            _meshsub("create_app"),
            "/ws",
            "/api",
            "meshsub",
            transport="sse",
            baseline="meshsub",
        ),
        ServerSpec(
            "meshsub-share",
            f"meshsub-trio share={share_value}",
            _meshsub("create_shared_app"),
            "/ws",
            "/api",
            "meshsub",
            {"MESHSUB_BENCH_SHARE": share_value},
        ),
        ServerSpec(
            "strawberry",
            "Strawberry + uvicorn",
            (PYTHON, "-m", "servers.strawberry_server", "--port", "{port}"),
            "/graphql",
            "/graphql",
            "peer",
        ),
        ServerSpec("graphql-ws", "graphql-ws (Node)", node, "/graphql", "/graphql", "peer"),
        ServerSpec(
            "graphql-ws-tls",
            "graphql-ws (Node) TLS",
            (*node, "--cert", "{certfile}", "--key", "{keyfile}"),
            "/graphql",
            "/graphql",
            "peer",
            tls=True,
            baseline="graphql-ws",
        ),
        ServerSpec(
            "raw-trio",
            "raw: meshsub transport, no GraphQL",
            (PYTHON, "-m", "servers.raw_trio_server", "--port", "{port}"),
            "/ws",
            "/publish",
            "raw",
        ),
        ServerSpec(
            "raw-uvicorn",
            "raw: uvicorn + websockets, no GraphQL",
            (PYTHON, "-m", "servers.raw_uvicorn_server", "--port", "{port}"),
            "/ws",
            "/publish",
            "raw",
        ),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RunningServer:
    """A server process pinned to one core, stopped by its pid on exit."""

    def __init__(
        self, spec: ServerSpec, core: int, log: IO[bytes], cert: BenchCert | None = None
    ) -> None:
        self.spec = spec
        self.port = free_port()
        files = {"{certfile}": str(cert.cert), "{keyfile}": str(cert.key)} if cert else {}
        if spec.tls and not files:
            raise RuntimeError(f"{spec.key} needs the bench certificate")
        argv = [files.get(part, part).replace("{port}", str(self.port)) for part in spec.argv]
        env = {
            **os.environ,
            **spec.env,
            # The bench's modules first; an outer PYTHONPATH (another src/) after them.
            "PYTHONPATH": os.pathsep.join(
                [str(BENCH_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "PYTHONUNBUFFERED": "1",
            "BENCH_GC_STATS": "1",
        }
        self.process = subprocess.Popen(
            ["taskset", "-c", str(core), *argv],
            cwd=BENCH_DIR,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid  # taskset execs the server: same pid

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until the port accepts connections (or fail if the process died)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"server not listening after {timeout:.0f}s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)  # graceful: 10,000 sockets take a while
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
