"""Fan-out through ``serve --workers N`` against one process: throughput and CPU per delivery.

Runs the built-in Meshery app the way a user does (``meshsub-trio serve``,
``--workers N`` with the embedded nats-server, or one process on the memory
broker), opens S ``subscribeEvents`` subscribers, POSTs E events over a few
keep-alive connections, and waits until every subscriber has all of them.
Reports deliveries per second and the server side's CPU microseconds per
delivered message (supervisor, workers and nats-server, from ``/proc``). The
load generator runs on the same cores: its CPU is reported beside.

    python scripts/bench/workers.py --workers 1 2 --subscribers 200 --events 1000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from typing import Any

import httpx
import trio

from meshsub_trio.testing import open_graphql_ws

GRAPHQL = "/api/system/graphql/query"
EVENTS = "subscription { subscribeEvents { id description } }"
TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds of *root* and its descendants (live ones; read before they exit)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
    total, stack = 0.0, [root]
    while stack:
        pid = stack.pop()
        total += cpu.get(pid, 0.0)
        stack.extend(child for child, parent in parents.items() if parent == pid)
    return total


async def start(workers: int) -> tuple[trio.Process, int]:
    command = [sys.executable, "-m", "meshsub_trio", "serve", "--port", "0", "--keepalive", "0"]
    command += ["--no-simulator", "--data-dir", ":memory:", "--log-level", "warning"]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    line = b""
    with trio.fail_after(60):
        while not line.startswith(b"meshsub-trio serving on"):
            chunk = await process.stdout.receive_some(4096)
            assert chunk, "the server exited"
            line += chunk
            if b"\n" in line and not line.startswith(b"meshsub-trio serving on"):
                line = line.split(b"\n", 1)[1]
    return process, int(line.split(b"\n")[0].rsplit(b":", 1)[1])


async def subscriber(port: int, expected: int, done: list[int], ready: trio.Event) -> None:
    async with open_graphql_ws("127.0.0.1", port, GRAPHQL) as client:
        await client.init()
        op = await client.start(EVENTS)
        ready.set()
        seen = 0
        while seen < expected:
            message = await client.receive()
            if message.get("id") == op and message["type"] == "next":
                seen += 1
        done.append(seen)


async def measure(workers: int, subscribers: int, events: int) -> dict[str, Any]:
    process, port = await start(workers)
    try:
        done: list[int] = []
        async with trio.open_nursery() as nursery:
            for _ in range(subscribers):
                ready = trio.Event()
                nursery.start_soon(subscriber, port, events, done, ready)
                await ready.wait()
            # A subscription is live once a probe reaches it: publish one, count it.
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                await _post(http, "probe")
                cpu0, own0, t0 = tree_cpu(process.pid), _own_cpu(), time.perf_counter()
                async with trio.open_nursery() as posting:
                    for lane in range(4):
                        posting.start_soon(_post_many, http, lane, events // 4)
            while len(done) < subscribers:
                await trio.sleep(0.01)
            elapsed = time.perf_counter() - t0
            cpu = tree_cpu(process.pid) - cpu0
            own = _own_cpu() - own0
        deliveries = subscribers * (events - 1)
        return {
            "workers": workers,
            "subscribers": subscribers,
            "events": events,
            "deliveries_per_s": round(deliveries / elapsed),
            "server_cpu_us_per_delivery": round(cpu / deliveries * 1e6, 2),
            "server_cores_busy": round(cpu / elapsed, 2),
            "loadgen_cores_busy": round(own / elapsed, 2),
        }
    finally:
        process.terminate()
        with trio.move_on_after(30):
            await process.wait()
        if process.returncode is None:
            process.kill()


async def _post(http: httpx.AsyncClient, description: str) -> None:
    body = {"severity": "informational", "description": description}
    response = await http.post("/api/system/events", json=body)
    response.raise_for_status()


async def _post_many(http: httpx.AsyncClient, lane: int, count: int) -> None:
    for n in range(count):
        await _post(http, f"{lane}-{n}")


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--events", type=int, default=1000, help="a multiple of 4, plus the probe")
    args = parser.parse_args()
    events = args.events // 4 * 4 + 1
    for workers in args.workers:
        print(json.dumps(trio.run(measure, workers, args.subscribers, events)), flush=True)


if __name__ == "__main__":
    main()
