"""What the embedded database costs: the same workload with ``:memory:`` and with
the database (``durability=normal`` and ``full``), in one run.

* Mutations per second: ``savePattern`` (updating 500 designs in turn) over
  HTTP GraphQL, each answered only once durable (a group commit serves every
  mutation waiting on it), with 1 and with 32 in flight.
* The same without HTTP: ``Model.save_pattern`` in this process, awaiting
  the flush after every 1 and every 32 changes: what the database itself
  sustains, since the HTTP load generator saturates before the server does.
* Publish -> subscriber latency: events POSTed to ``/api/system/events`` at a
  steady rate while a ``subscribeEvents`` subscriber (graphql-transport-ws)
  measures when each arrives; the POST's own round trip (the acknowledgement,
  which waits for the commit) is reported beside it.

Each configuration runs in its own server process (this script with ``serve``),
pinned to CPU 0 when ``taskset`` exists; the load runs here, on CPU 1.
Configurations run interleaved, round after round, and each figure is the
median over the rounds, so a noisy neighbour affects them all alike.

    .venv/bin/python scripts/bench/persistence.py            # ~4 minutes (3 rounds)
    .venv/bin/python scripts/bench/persistence.py --quick    # ~15 seconds
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio

GRAPHQL = "/api/system/graphql/query"
SAVE = "mutation($i: PatternInput!) { savePattern(input: $i) { id } }"
EVENTS = "subscription { subscribeEvents { description } }"
#: Designs written over and over (a user may keep at most 1,000).
DESIGNS = 500
CONFIGS = (("memory", ":memory:", "full"), ("normal", "DIR", "normal"), ("full", "DIR", "full"))


# --------------------------------------------------------------- the server


def serve(data_dir: str, durability: str) -> None:
    """Child mode: one Meshery app (no simulator) on a free port, printing its URL."""
    from meshsub_trio import Config
    from meshsub_trio._cli import run
    from meshsub_trio.meshery import create_app

    app = create_app(simulator=False, data_dir=data_dir, durability=durability)
    trio.run(run, app, Config(port=0, keepalive=0))


async def start_server(data_dir: str, durability: str) -> tuple[trio.Process, int]:
    command = [sys.executable, __file__, "serve", data_dir, durability]
    if shutil.which("taskset"):
        command = ["taskset", "-c", "0", *command]
    process = await trio.lowlevel.open_process(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    line = b""
    with trio.fail_after(30):
        while b"\n" not in line:
            chunk = await process.stdout.receive_some(256)
            if not chunk:
                raise RuntimeError("the server exited before listening")
            line += chunk
    return process, int(line.split(b":")[-1].split(b"\n")[0])


# ----------------------------------------------------------------- the load


async def mutations(http: httpx.AsyncClient, count: int, in_flight: int) -> dict[str, float]:
    """*count* acknowledged savePattern mutations, *in_flight* at a time."""
    latencies: list[float] = []
    todo = iter(range(count))

    async def worker() -> None:
        for n in todo:
            design = {"id": f"d{n % DESIGNS}", "name": "d", "pattern_file": f"x: {n}"}
            body = {"query": SAVE, "variables": {"i": design}}
            sent = time.perf_counter()
            answer = (await http.post(GRAPHQL, json=body)).json()
            latencies.append(time.perf_counter() - sent)
            if "errors" in answer:
                raise RuntimeError(answer["errors"])

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(in_flight):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - started
    return {"per_s": count / elapsed, **percentiles(latencies)}


async def model_only(data_dir: str, durability: str, count: int, batch: int) -> float:
    """Changes per second through the model alone, flushing every *batch* changes."""
    from meshsub_trio.meshery import create_app

    app = create_app(simulator=False, data_dir=data_dir, durability=durability)
    try:
        started = time.perf_counter()
        for n in range(count):
            design = {"id": f"d{n % DESIGNS}", "name": "d", "pattern_file": f"x: {n}"}
            app.model.save_pattern("bench", design)
            if n % batch == batch - 1:
                await app.model.flush()
        await app.model.flush()
        return count / (time.perf_counter() - started)
    finally:
        app.close()


async def latency(port: int, http: httpx.AsyncClient, count: int, rate: float) -> dict[str, Any]:
    """Events at *rate*/s: publish -> subscriber, and the publisher's acknowledgement."""
    from meshsub_trio.testing import open_graphql_ws

    delivered: list[float] = []
    acks: list[float] = []
    done = trio.Event()
    async with open_graphql_ws("127.0.0.1", port, GRAPHQL) as client:
        await client.init()
        op = await client.start(EVENTS)

        async def receive() -> None:
            while len(delivered) < count:
                message = await client.receive()
                if message.get("id") != op or message["type"] != "next":
                    continue
                text = message["payload"]["data"]["subscribeEvents"]["description"]
                if text.startswith("probe"):
                    probed.set()
                    continue
                delivered.append(time.perf_counter() - float(text))
            done.set()

        probed = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            with trio.fail_after(10):  # the subscription is live once a probe arrives
                while not probed.is_set():
                    await post(http, "probe")
                    with trio.move_on_after(0.05):
                        await probed.wait()
            start = trio.current_time()
            for n in range(count):
                await trio.sleep_until(start + n / rate)
                sent = time.perf_counter()
                await post(http, repr(sent))
                acks.append(time.perf_counter() - sent)
            with trio.fail_after(30):
                await done.wait()
    return {"deliver": percentiles(delivered), "ack": percentiles(acks)}


async def post(http: httpx.AsyncClient, description: str) -> None:
    body = {"severity": "informational", "description": description}
    response = await http.post("/api/system/events", json=body)
    if response.status_code != 201:
        raise RuntimeError(response.text)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))],
    }


async def measure(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every configuration once per round, interleaved; the median of each figure."""
    rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in CONFIGS}
    for _ in range(args.rounds):
        for row in await one_round(args):
            rounds[row["config"]].append(row)
    return [median_row(rows) for rows in rounds.values()]


def median_row(rows: list[dict[str, Any]]) -> dict[str, Any]:
    first = rows[0]
    out: dict[str, Any] = {"config": first["config"], "rounds": len(rows)}
    for key, value in first.items():
        if isinstance(value, dict):
            out[key] = {k: statistics.median(r[key][k] for r in rows) for k in value}
        elif isinstance(value, float):
            out[key] = statistics.median(r[key] for r in rows)
    return out


async def one_round(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, where, durability in CONFIGS:
        with tempfile.TemporaryDirectory(prefix="meshsub-bench-") as tmp:
            data_dir = where if where != "DIR" else str(Path(tmp) / "data")
            process, port = await start_server(data_dir, durability)
            try:
                base = f"http://127.0.0.1:{port}"
                limits = httpx.Limits(max_connections=64)
                async with httpx.AsyncClient(base_url=base, timeout=30, limits=limits) as http:
                    row: dict[str, Any] = {"config": name}
                    row["serial"] = await mutations(http, args.mutations // 4, 1)
                    row["concurrent"] = await mutations(http, args.mutations, 32)
                    row.update(await latency(port, http, args.events, args.rate))
            finally:
                process.kill()
                await process.wait()
            if where == "DIR":
                shutil.rmtree(data_dir)
            for batch in (1, 32):
                rate = await model_only(data_dir, durability, args.mutations, batch)
                row[f"model_{batch}"] = rate
            rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| data | HTTP mutations/s, 1 in flight | p50 ms | HTTP mutations/s, 32 | p99 ms "
        "| model changes/s, flush each / per 32 "
        "| publish->subscriber p50 / p99 ms | POST ack p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        serial, many, deliver, ack = row["serial"], row["concurrent"], row["deliver"], row["ack"]
        lines.append(
            f"| {row['config']} | {serial['per_s']:.0f} | {serial['p50_ms']:.2f} "
            f"| {many['per_s']:.0f} | {many['p99_ms']:.2f} "
            f"| {row['model_1']:.0f} / {row['model_32']:.0f} "
            f"| {deliver['p50_ms']:.2f} / {deliver['p99_ms']:.2f} "
            f"| {ack['p50_ms']:.2f} / {ack['p99_ms']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mutations", type=int, default=4000)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="events per second")
    parser.add_argument("--rounds", type=int, default=3, help="medians over this many rounds")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        args.mutations, args.events, args.rounds = 800, 400, 1
    if shutil.which("taskset"):
        pin = ["taskset", "-p", "-c", "1", str(os.getpid())]
        subprocess.run(pin, check=False, stdout=subprocess.DEVNULL)
    rows = trio.run(measure, args)
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
