"""GraphQL over HTTP: queries per second, meshsub-trio's own host vs Strawberry on uvicorn.

Usage (the bench venv has Strawberry and uvicorn; ``bash scripts/bench/run
--help`` builds it)::

    scripts/bench/.venv/bin/python scripts/bench/http_queries.py [--seconds 5] [--connections 16]

Both servers serve the same schema, data and document (a list of 20 items,
five fields each and one nested object) and are started one after the other
in the same run, each in its own process pinned to CPU0 with taskset; the
load generator, pinned to CPU1, keeps ``--connections`` keep-alive
connections busy with POSTs (raw sockets, one request in flight per
connection), checks that both servers answer the same JSON, and prints
queries per second for each and their ratio. ``--serve`` and ``--load`` are
the two halves, run by the script itself.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_CORE, CLIENT_CORE = 0, 1

SDL = """
type Owner { id: ID! name: String! }
type Item { id: ID! name: String! price: Float! count: Int! active: Boolean! owner: Owner! }
type Query { items(limit: Int = 20): [Item!]! }
"""
DOCUMENT = (
    "query Items($limit: Int) { items(limit: $limit) "
    "{ id name price count active owner { id name } } }"
)
BODY = json.dumps({"query": DOCUMENT, "variables": {"limit": 20}}).encode()
ITEMS = [
    {"id": str(i), "name": f"item {i}", "price": i * 1.25, "count": i * 7, "active": i % 2 == 0,
     "owner": {"id": f"o{i % 3}", "name": f"owner {i % 3}"}}
    for i in range(20)
]  # fmt: skip
#: Servers by name: their GraphQL path. "meshsub-core" is meshsub-trio with
#: ``--no-compiled-execution`` (graphql-core executes), to show the plans' share.
PATHS = {"meshsub": "/api", "meshsub-core": "/api", "strawberry": "/graphql"}


def serve_meshsub(port: int, compiled: bool = True) -> None:
    sys.path.insert(0, str(HERE.parent.parent / "src"))
    from meshsub_trio import App

    def items(_root: Any, _info: Any, limit: int) -> list[dict[str, Any]]:
        return ITEMS[:limit]

    module = type(sys)("http_queries_app")
    module.app = App(SDL, resolvers={"Query": {"items": items}})  # type: ignore[attr-defined]
    sys.modules["http_queries_app"] = module
    from meshsub_trio._cli import main

    argv = ["serve", "http_queries_app:app", "--port", str(port), "--log-level", "warning"]
    raise SystemExit(main(argv + ([] if compiled else ["--no-compiled-execution"])))


def serve_strawberry(port: int) -> None:
    import strawberry
    import uvicorn
    from strawberry.asgi import GraphQL

    @strawberry.type
    class Owner:
        id: strawberry.ID
        name: str

    @strawberry.type
    class Item:
        id: strawberry.ID
        name: str
        price: float
        count: int
        active: bool
        owner: Owner

    objects = [Item(**{**item, "owner": Owner(**item["owner"])}) for item in ITEMS]

    @strawberry.type
    class Query:
        @strawberry.field
        def items(self, limit: int | None = 20) -> list[Item]:
            return objects[: limit if limit is not None else 20]

    app = GraphQL(strawberry.Schema(query=Query), graphql_ide=None)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", loop="uvloop")


def request(port: int, path: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"accept: application/json\r\ncontent-length: {len(BODY)}\r\n\r\n"
    ).encode() + BODY


async def read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(head.decode(errors="replace"))
    return await reader.readexactly(length)


async def load(port: int, path: str, connections: int, seconds: float, warmup: float) -> None:
    """Keep *connections* keep-alive connections busy; print JSON: qps, first body."""
    payload = request(port, path)
    counts = [0] * connections
    first: list[bytes] = []
    measuring = False

    async def client(index: int, stop: float) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < stop:
            writer.write(payload)
            body = await read_response(reader)
            if not first:
                first.append(body)
            if measuring:
                counts[index] += 1
        writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i, started + warmup) for i in range(connections)))
    measuring = True
    started = time.perf_counter()
    await asyncio.gather(*(client(i, started + seconds) for i in range(connections)))
    elapsed = time.perf_counter() - started
    print(json.dumps({"qps": sum(counts) / elapsed, "body": json.loads(first[0])}))


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a process we do not control: no event to wait on
    raise SystemExit("the server did not start listening")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def measure(name: str, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    me = [sys.executable, str(Path(__file__).resolve())]
    server = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CORE), *me, "--serve", name, "--port", str(port)]
    )
    try:
        wait_for_port(port, server)
        out = subprocess.run(
            ["taskset", "-c", str(CLIENT_CORE), *me, "--load", name, "--port", str(port),
             "--seconds", str(args.seconds), "--connections", str(args.connections),
             "--warmup", str(args.warmup)],
            check=True, capture_output=True, text=True,
        ).stdout  # fmt: skip
        return dict(json.loads(out))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--serve", choices=sorted(PATHS))
    parser.add_argument("--load", choices=sorted(PATHS))
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.serve:
        if args.serve == "strawberry":
            serve_strawberry(args.port)
        serve_meshsub(args.port, compiled=args.serve == "meshsub")
        return
    if args.load:
        asyncio.run(load(args.port, PATHS[args.load], args.connections, args.seconds, args.warmup))
        return
    if len(os.sched_getaffinity(0)) < 2:
        raise SystemExit("needs two CPUs: the server on CPU0, the load generator on CPU1")
    results = {name: measure(name, args) for name in PATHS}
    if any(result["body"] != results["strawberry"]["body"] for result in results.values()):
        raise SystemExit(f"the servers answered differently: {results}")
    print(f"document: {DOCUMENT}")
    print(f"{args.connections} keep-alive connections, {args.seconds:g} s", end="")
    print(f" after {args.warmup:g} s warm-up")
    for name, result in results.items():
        print(f"  {name:<12} {result['qps']:9.0f} queries/s")
    qps = {name: result["qps"] for name, result in results.items()}
    print(f"  meshsub-trio / Strawberry: {qps['meshsub'] / qps['strawberry']:.2f}x")
    print(f"  compiled / graphql-core (meshsub-trio): {qps['meshsub'] / qps['meshsub-core']:.2f}x")


if __name__ == "__main__":
    main()
