"""The load generator: runs one scenario against one server and prints one JSON line.

Scenarios:

* ``fanout``: N subscribers on one topic; delivered messages/s at saturation
  (median of ``--reps`` rounds), then publish-to-client latency at half that rate.
* ``distinct``: the same with N different topics (different variables:
  nothing a server could share between subscriptions).
* ``capacity``: K idle connections with one subscription each; the server's
  VmRSS before and after, per connection.
* ``churn``: connect + init + subscribe + complete + close cycles per second.
* ``churn-live``: the same, waiting for the subscription's greeting event
  before completing, so every cycle sets a subscription up.

Every delivered message is verified (see ``wsclient``). Subscriptions have no
acknowledgement in graphql-transport-ws, so before measuring, single probe
events are published until every subscriber has received the latest one: that
proves each subscription live and leaves nothing in flight. Every wait is
bounded; any error or missing message makes the result ``ok: false``.

Run it pinned to its own core: ``taskset -c 1 python loadgen.py fanout --port N ...``
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import ssl
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from procinfo import CpuWindow, memory_kb
from workload import HELLO_PREFIX

from wsclient import Conn, Phase, Tally, connect, connect_sse, trigger


class Run:
    """One scenario's connection to the server under test, and its bookkeeping."""

    def __init__(self, args: argparse.Namespace, tally: Tally) -> None:
        self.args = args
        self.tally = tally
        self.next_id = 0
        self.conns: list[Conn] = []
        self.tls = client_tls(args)

    async def open(self, count: int, topic_of: Callable[[int], str]) -> float:
        """Open *count* subscribed connections; return connections per second."""
        args = self.args
        limit = asyncio.Semaphore(args.concurrency)

        async def one(index: int) -> Conn:
            async with limit:
                if args.transport == "sse":
                    topic = topic_of(index)
                    path = args.http_path
                    return await connect_sse(args.port, path, self.tally, topic, tls=self.tls)
                conn = await connect(args.port, args.ws_path, self.tally, tls=self.tls)
                conn.subscribe(topic_of(index))
                return conn

        started = time.perf_counter()
        self.conns = list(await asyncio.gather(*(one(i) for i in range(count))))
        return count / (time.perf_counter() - started)

    async def sync(self, timeout: float = 90.0) -> int:
        """Publish probes until every subscriber got the latest; return how many it took.

        A new probe goes out only after a second in which nothing at all was
        delivered, so a slow server is not buried in probes.
        """
        deadline = time.monotonic() + timeout
        probes = 0
        while time.monotonic() < deadline:
            phase = Phase(self.next_id, 1, len(self.conns), latencies=False, strict=False)
            for conn in self.conns:
                conn.expect(phase)
            first = await self._trigger(1)
            probes += 1
            seen, progress_at = (phase.remaining, phase.touched_at), time.monotonic()
            while not phase.done.done() and time.monotonic() < deadline:
                await asyncio.wait([phase.done], timeout=0.25)
                if (phase.remaining, phase.touched_at) != seen:
                    seen, progress_at = (phase.remaining, phase.touched_at), time.monotonic()
                elif time.monotonic() - progress_at > 1.0:
                    break  # nothing delivered for a second: some subscriptions not live yet
            if all(conn.expected == first + 1 for conn in self.conns):
                return probes
        missing = sum(conn.expected != self.next_id for conn in self.conns)
        raise TimeoutError(
            f"{missing} of {len(self.conns)} subscriptions not live after {timeout:.0f}s "
            f"({probes} probes)"
        )

    async def _trigger(self, count: int, rate: float | None = None) -> int:
        first = await trigger(self.args.port, self.args.http_path, count, rate=rate, tls=self.tls)
        if first != self.next_id:
            self.tally.error(f"publish returned first id {first}, expected {self.next_id}")
        self.next_id = first + count
        return first

    async def phase(self, count: int, *, rate: float | None = None) -> dict[str, Any]:
        """Publish *count* events to everyone; wait until all are delivered and checked."""
        args = self.args
        phase = Phase(self.next_id, count, len(self.conns), latencies=rate is not None)
        for conn in self.conns:
            conn.expect(phase)
        server = CpuWindow(args.server_pid)
        server.start()
        client_cpu = time.process_time()
        started = time.time()
        await self._trigger(count, rate)
        deliveries = count * len(self.conns)
        budget = args.phase_timeout
        try:
            await asyncio.wait_for(asyncio.shield(phase.done), budget)
        except TimeoutError:
            got = sum(conn.received for conn in self.conns)
            self.tally.error(f"phase timed out after {budget:.0f}s: {got}/{deliveries} delivered")
            raise
        elapsed = phase.last_at - started
        server.stop()
        result: dict[str, Any] = {
            "events": count,
            "deliveries": deliveries,
            "seconds": round(elapsed, 4),
            "msgs_per_s": deliveries / elapsed,
            "msgs_per_cpu_s": deliveries / server.cpu if server.cpu > 0 else None,
            "server_cpu": round(server.load, 3),
            "core0_other": round(server.other, 3),
            "client_cpu": round((time.process_time() - client_cpu) / elapsed, 3),
        }
        if phase.latencies is not None:
            result.update(_latency_summary(phase.latencies))
            result["rate_events_per_s"] = rate
        return result

    def describe_tls(self) -> dict[str, Any] | None:
        """What the first connection negotiated (version, cipher), for the record."""
        if self.tls is None or not self.conns or self.conns[0].transport is None:
            return None
        cipher = self.conns[0].transport.get_extra_info("cipher")
        return {"cipher": cipher[0], "version": cipher[1]} if cipher else None

    def close(self) -> None:
        for conn in self.conns:
            conn.abort()
        self.conns = []


def client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """With ``--tls-ca``: verify the server against exactly the bench certificate."""
    if args.tls_ca is None:
        return None
    return ssl.create_default_context(cafile=args.tls_ca)


def _latency_summary(latencies: list[float]) -> dict[str, float]:
    ordered = sorted(latencies)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000  # noqa: E731
    return {
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


async def throughput(args: argparse.Namespace, tally: Tally, *, distinct: bool) -> dict[str, Any]:
    """Scenarios P1 (fan-out) and P2 (distinct)."""
    run = Run(args, tally)
    n = args.subscribers
    result: dict[str, Any] = {"subscribers": n}
    try:
        topic_of = (lambda i: f"topic-{i}") if distinct else (lambda _i: "fanout")
        result["connects_per_s"] = round(await run.open(n, topic_of), 1)
        result["tls"] = run.describe_tls()
        result["probes"] = await run.sync()
        calibration = await run.phase(max(3, args.calibrate // n))
        count = int(calibration["msgs_per_s"] * args.duration / n)
        count = max(3, min(count, args.max_events))
        rounds = [await run.phase(count) for _ in range(args.reps)]
        rates = [r["msgs_per_s"] for r in rounds]
        result["msgs_per_s"] = statistics.median(rates)
        result["msgs_per_s_range"] = [min(rates), max(rates)]
        result["rounds"] = rounds
        rate = 0.5 * result["msgs_per_s"] / n
        events = max(10, int(rate * args.latency_duration))
        result["latency"] = await run.phase(events, rate=rate)
        if args.common_rate:
            # The same offered load for every server, however fast it is.
            rate = args.common_rate / n
            events = max(3, int(rate * args.latency_duration))
            result["latency_common"] = await run.phase(events, rate=rate)
        efficiency = [r["msgs_per_cpu_s"] for r in rounds if r["msgs_per_cpu_s"]]
        result["msgs_per_cpu_s"] = statistics.median(efficiency) if efficiency else None
        result["server_cpu"] = statistics.median(r["server_cpu"] for r in rounds)
        result["core0_other"] = max(r["core0_other"] for r in rounds)
        phases = [*rounds, result["latency"], result.get("latency_common", result["latency"])]
        result["client_cpu"] = max(r["client_cpu"] for r in phases)
    finally:
        run.close()
    return result


async def capacity(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    """Scenario P3: server memory per idle connection with one subscription."""
    run = Run(args, tally)
    await run.open(1, lambda _i: "idle")
    await run.sync()
    run.close()
    await asyncio.sleep(0.5)
    before = memory_kb(args.server_pid)
    k = args.connections
    try:
        rate = await run.open(k, lambda _i: "idle")
        probes = await run.sync()
        await asyncio.sleep(1.0)
        after = memory_kb(args.server_pid)
        peak = memory_kb(args.server_pid, "VmHWM")
    finally:
        run.close()
    return {
        "connections": k,
        "connects_per_s": round(rate, 1),
        "probes": probes,
        "rss_before_kb": before,
        "rss_after_kb": after,
        "rss_peak_kb": peak,
        "kb_per_conn": round((after - before) / k, 2),
    }


async def churn(args: argparse.Namespace, tally: Tally, *, live: bool = False) -> dict[str, Any]:
    """Scenario P4: full connection lifecycles per second.

    *live*: subscribe to a greeting topic and wait for the greeting before
    completing, so every cycle really sets a subscription up (without it,
    subscribe and complete arrive together and a server may skip the setup).
    """
    cycle_times: list[float] = []
    tls = client_tls(args)

    async def cycle() -> None:
        started = time.perf_counter()
        conn = await connect(args.port, args.ws_path, tally, tls=tls)
        try:
            conn.linger_off()
            if live:
                conn.subscribe(HELLO_PREFIX + "churn")
                await asyncio.wait_for(conn.greeted, 10.0)
            else:
                conn.subscribe("churn")
            conn.send_json({"id": conn.op_id, "type": "complete"})
            conn.send_close(1000)
            code = await asyncio.wait_for(conn.closed, 10.0)
            if code not in (1000, 1005):
                tally.error(f"server closed with {code}")
        finally:
            conn.abort()
        cycle_times.append(time.perf_counter() - started)

    async def worker(deadline: float) -> None:
        while time.monotonic() < deadline:
            await cycle()

    async def burst(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        await asyncio.gather(*(worker(deadline) for _ in range(args.concurrency)))

    await burst(min(1.0, args.duration / 4))  # warm-up
    cycle_times.clear()
    server = CpuWindow(args.server_pid)
    server.start()
    client_cpu = time.process_time()
    started = time.monotonic()
    await burst(args.duration)
    elapsed = time.monotonic() - started
    server.stop()
    ordered = sorted(cycle_times)
    return {
        "concurrency": args.concurrency,
        "cycles": len(ordered),
        "cycles_per_s": len(ordered) / elapsed,
        "cycles_per_cpu_s": len(ordered) / server.cpu if server.cpu > 0 else None,
        "cycle_p50_ms": round(ordered[len(ordered) // 2] * 1000, 3) if ordered else None,
        "cycle_p99_ms": round(ordered[int(0.99 * len(ordered))] * 1000, 3) if ordered else None,
        "server_cpu": round(server.load, 3),
        "core0_other": round(server.other, 3),
        "client_cpu": round((time.process_time() - client_cpu) / elapsed, 3),
    }


async def _main(args: argparse.Namespace, tally: Tally) -> dict[str, Any]:
    scenario = args.scenario
    if scenario.startswith("churn") and args.transport == "sse":
        raise ValueError("churn is a WebSocket scenario (connect, init, subscribe, complete)")
    if scenario == "fanout":
        body = throughput(args, tally, distinct=False)
    elif scenario == "distinct":
        body = throughput(args, tally, distinct=True)
    elif scenario == "capacity":
        body = capacity(args, tally)
    elif scenario == "churn-live":
        body = churn(args, tally, live=True)
    else:
        body = churn(args, tally)
    try:
        return await asyncio.wait_for(body, args.timeout)
    except TimeoutError as error:
        raise TimeoutError(f"{str(error) or 'scenario'} (bound {args.timeout:.0f}s)") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "scenario", choices=["fanout", "distinct", "capacity", "churn", "churn-live"]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ws-path", default="/graphql")
    parser.add_argument("--http-path", default="/graphql")
    parser.add_argument("--server-pid", type=int, required=True)
    parser.add_argument(
        "--transport", choices=["ws", "sse"], default="ws", help="WebSocket or graphql-sse"
    )
    parser.add_argument("--tls-ca", help="speak TLS, trusting this PEM certificate")
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per round")
    parser.add_argument("--latency-duration", type=float, default=3.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--common-rate", type=float, default=0.0, help="also latency at this many msg/s (0: off)"
    )
    parser.add_argument("--calibrate", type=int, default=10000, help="deliveries to calibrate")
    parser.add_argument("--max-events", type=int, default=200_000)
    parser.add_argument("--phase-timeout", type=float, default=120.0)
    parser.add_argument("--timeout", type=float, default=300.0, help="whole scenario")
    return parser


def main() -> None:
    args = _parser().parse_args()
    gc.disable()  # the client allocates no cycles; collections would only steal its CPU
    started = time.process_time()
    wall = time.monotonic()
    output: dict[str, Any] = {"scenario": args.scenario}
    tally = Tally()
    try:
        import uvloop

        run: Callable[..., Any] = uvloop.run
        output["client_loop"] = "uvloop"
    except ImportError:
        run = asyncio.run
        output["client_loop"] = "asyncio"
    try:
        output["metrics"] = run(_main(args, tally))
        output["ok"] = True
    except Exception as error:
        output["ok"] = False
        output["failure"] = f"{type(error).__name__}: {error}"
    output["client_cpu_total"] = round(time.process_time() - started, 2)
    output["wall_s"] = round(time.monotonic() - wall, 2)
    output["errors"] = tally.count
    output["error_samples"] = tally.samples
    if tally.count:
        output["ok"] = False
    sys.stdout.write(orjson.dumps(output).decode() + "\n")


if __name__ == "__main__":
    main()
