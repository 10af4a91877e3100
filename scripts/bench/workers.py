"""Fan-out through ``serve --workers N`` against one process: throughput and CPU per delivery.

Serves ``servers/workers_app.py`` (the bench workload over the app's broker)
in these modes, each a fresh server per run:

* ``memory``: one process, ``MemoryBroker`` (no NATS at all): the baseline;
* ``nats1``: one process on ``--broker nats://`` against a nats-server this
  script starts exactly as the supervisor would (``-a 127.0.0.1 -p -1 -js``);
* ``workersN``: ``serve --workers N`` with its embedded nats-server;
* a ``:core`` suffix (``nats1:core``) uses subjects outside the JetStream
  stream: core NATS only, no log append per event;
* a ``:topics`` suffix (``nats1:topics``) subscribes through NATS once per
  topic; without it each process shares one subscription for all bench
  topics (``NatsBroker.share_subscription``).

For P1 (``fanout``: S subscribers, one topic) and P2 (``distinct``: S topics)
it opens S verified WebSocket subscribers with the bench load generator
(``loadgen.Run``, ``wsclient``: every message checked, ids consecutive, exact
counts), publishes each round with ONE request (``publish(count)``: the server
publishes the whole burst), and waits until every subscriber has every event.
Per round it reads from ``/proc``: the server's CPU (the process tree:
supervisor, workers, nats-server), this process's CPU (the load generator) and
the whole machine's, so other load is visible. A configuration's value is the
median of its rounds; the report is the median over ``--runs`` fresh servers,
run in interleaved order so every mode sees the same background.

    scripts/bench/.venv/bin/python scripts/bench/workers.py            # ~6 minutes
    scripts/bench/.venv/bin/python scripts/bench/workers.py --modes memory nats1 workers2 \\
        nats1:core workers2:core --runs 3 --out bench-results/workers.json
    scripts/bench/.venv/bin/python scripts/bench/workers.py --modes nats1 --scenarios p2 \\
        --runs 1 --rate 0 --profile /tmp/profiles          # one server, py-spy'd

The load generator runs on the same cores as the server (``--loadgen-cpus``
pins it; ``--server-cpus`` pins the server tree). Run it with the bench venv
(uvloop); the server runs with ``--server-python`` (the project venv: nats-py,
trio-asyncio and the nats-server binary).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadgen import Run
from procinfo import machine

from wsclient import Tally

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent.parent
APP = "servers.workers_app:create_app"
TICK = os.sysconf("SC_CLK_TCK")
SERVING = re.compile(rb"meshsub-trio serving on \S+:(\d+)")
NATS_LISTENING = re.compile(rb"Listening for client connections on \S+:(\d+)")
SCENARIOS = {"p1": "fanout", "p2": "distinct"}


# ------------------------------------------------------------------ /proc


def tree_cpu(roots: list[int]) -> tuple[float, float, float]:
    """CPU seconds of *roots* and their live descendants, its nats-server part, its kernel part.

    The kernel part (system time) is mostly socket writes: on loopback, a
    write also pays for waking the reader, so it moves with delivery timing.
    """
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    kernel: dict[int, float] = {}
    nats: set[int] = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as file:
                head, _, tail = file.read().rpartition(")")
        except OSError:
            continue
        fields = tail.split()
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / TICK
        kernel[int(entry)] = int(fields[12]) / TICK
        if head.endswith("(nats-server"):
            nats.add(int(entry))
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    total, in_nats, in_kernel, stack, seen = 0.0, 0.0, 0.0, list(roots), set()
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        total += cpu.get(pid, 0.0)
        in_nats += cpu.get(pid, 0.0) if pid in nats else 0.0
        in_kernel += kernel.get(pid, 0.0)
        stack.extend(children.get(pid, ()))
    return total, in_nats, in_kernel


def machine_busy() -> float:
    """Busy CPU seconds of every core since boot (all processes; idle and iowait excluded)."""
    with open("/proc/stat") as file:
        ticks = [int(value) for value in file.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / TICK


# ---------------------------------------------------------------- servers


@dataclass
class Mode:
    name: str
    workers: int  # 0: one process on the memory broker
    jetstream: bool = True
    per_topic: bool = False  # one NATS subscription per topic, not one shared

    @classmethod
    def parse(cls, text: str) -> Mode:
        base, *suffixes = text.split(":")
        if not set(suffixes) <= {"core", "topics"}:
            raise argparse.ArgumentTypeError(f"unknown mode suffix in {text!r}")
        jetstream, per_topic = "core" not in suffixes, "topics" in suffixes
        if base == "memory":
            if suffixes:
                raise argparse.ArgumentTypeError("memory has no NATS subjects")
            return cls(text, 0)
        if base == "nats1":
            return cls(text, 1, jetstream, per_topic)
        match = re.fullmatch(r"workers(\d+)", base)
        if match is None or int(match.group(1)) < 2:
            raise argparse.ArgumentTypeError(f"mode {text!r}: memory, nats1 or workersN (N>=2)")
        return cls(text, int(match.group(1)), jetstream, per_topic)


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    roots: list[int]
    nats: subprocess.Popen[bytes] | None = None
    temp: list[str] = field(default_factory=list)
    log: Path | None = None
    log_start: int = 0

    def errors(self) -> list[str]:
        """The server's ERROR lines since it started (a compile fallback, say)."""
        if self.log is None:
            return []
        with open(self.log, "rb") as file:
            file.seek(self.log_start)
            text = file.read().decode(errors="replace")
        return [line for line in text.splitlines() if " ERROR " in line]


def _drain(stream: Any, sink: Any) -> None:
    for line in iter(stream.readline, b""):
        sink.write(line)
        sink.flush()


def _wait_for(stream: Any, pattern: re.Pattern[bytes], log: Any, ready: bytes | None) -> int:
    """Read *stream* until *pattern* (and *ready*, if given) has shown; the port."""
    port = None
    for line in iter(stream.readline, b""):
        log.write(line)
        match = pattern.search(line)
        if match is not None:
            port = int(match.group(1))
        if port is not None and (ready is None or ready in line):
            threading.Thread(target=_drain, args=(stream, log), daemon=True).start()
            return port
    raise RuntimeError(f"exited before ready: see {log.name}")


def _pinned(command: list[str], cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus, *command] if cpus else command


def start_server(mode: Mode, args: argparse.Namespace, log_dir: Path) -> Server:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH_DIR), env.get("PYTHONPATH")]))
    env["MESHSUB_BENCH_SUBJECTS"] = "meshery.bench" if mode.jetstream else "bench"
    handle, ids = tempfile.mkstemp(prefix="meshsub-bench-ids-")
    os.close(handle)
    env["MESHSUB_BENCH_IDS"] = ids
    env["MESHSUB_BENCH_BURST"] = str(args.burst)
    env["MESHSUB_BENCH_SHARED"] = "0" if mode.per_topic else "1"
    temp = [ids]
    command = [args.server_python, "-m", "meshsub_trio", "serve", APP, "--port", "0"]
    command += ["--keepalive", "0", "--log-level", "warning"]
    nats = None
    tag = mode.name.replace(":", "-")
    if mode.workers == 1:
        store = tempfile.mkdtemp(prefix="meshsub-bench-nats-")
        temp.append(store)
        nats_log = open(log_dir / f"{tag}-nats.log", "ab")  # noqa: SIM115 - held by the thread
        nats_command = [args.nats_server, "-a", "127.0.0.1", "-p", "-1", "-js", "-sd", store]
        nats = subprocess.Popen(
            _pinned(nats_command, args.server_cpus),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        nats_port = _wait_for(nats.stderr, NATS_LISTENING, nats_log, b"Server is ready")
        command += ["--broker", f"nats://127.0.0.1:{nats_port}"]
    elif mode.workers > 1:
        command += ["--workers", str(mode.workers), "--data-dir", ":memory:"]
    log_path = log_dir / f"{tag}-server.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: SIM115 - held by the thread
    process = subprocess.Popen(
        _pinned(command, args.server_cpus),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=log,
        env=env,
        cwd=BENCH_DIR,
    )
    try:
        port = _wait_for(process.stdout, SERVING, log, None)
    except BaseException:
        stop_server(Server(process, 0, [], nats, temp))
        raise
    roots = [process.pid] + ([nats.pid] if nats is not None else [])
    return Server(process, port, roots, nats, temp, log_path, log_start)


def _signal_and_wait(child: subprocess.Popen[Any], signum: int) -> None:
    """Send *signum* to a running *child* and wait for it (killed after 30 s)."""
    if child.poll() is None:
        child.send_signal(signum)
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def stop_server(server: Server) -> None:
    for child in (server.process, server.nats):
        if child is not None and child.poll() is None:
            _signal_and_wait(child, signal.SIGTERM)
    for path in server.temp:
        with contextlib.suppress(OSError):
            if os.path.isdir(path):
                subprocess.run(["rm", "-rf", path], check=False)
            else:
                os.unlink(path)


# ------------------------------------------------------------- measuring


class Window:
    """Server, load generator and machine CPU over one round."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.server, self.nats, self.kernel = tree_cpu(roots)
        self.machine = machine_busy()
        self.own = time.process_time()
        self.wall = time.monotonic()

    def close(self) -> dict[str, float]:
        server, nats, kernel = tree_cpu(self.roots)
        server, nats, kernel = server - self.server, nats - self.nats, kernel - self.kernel
        own = time.process_time() - self.own
        wall = time.monotonic() - self.wall
        other = max(0.0, machine_busy() - self.machine - server - own)
        return {
            "server_cpu_s": server,
            "nats_cpu_s": nats,
            "kernel_cpu_s": kernel,
            "loadgen_cpu_s": own,
            "other_cpu_s": other,
            "wall": wall,
        }


async def measured_round(
    run: Run, count: int, roots: list[int], settle: float, rate: float | None = None
) -> dict[str, Any]:
    window = Window(roots)
    result = await run.phase(count, rate=rate)
    await asyncio.sleep(settle)  # work left after the last delivery (flushes, log acks)
    cpu = window.close()
    deliveries = result["deliveries"]
    return {
        "events": count,
        "deliveries": deliveries,
        "seconds": result["seconds"],
        "deliveries_per_s": deliveries / result["seconds"],
        "server_us_per_delivery": cpu["server_cpu_s"] / deliveries * 1e6,
        "nats_us_per_delivery": cpu["nats_cpu_s"] / deliveries * 1e6,
        "kernel_us_per_delivery": cpu["kernel_cpu_s"] / deliveries * 1e6,
        "loadgen_us_per_delivery": cpu["loadgen_cpu_s"] / deliveries * 1e6,
        "server_cores": cpu["server_cpu_s"] / result["seconds"],
        "loadgen_cores": cpu["loadgen_cpu_s"] / result["seconds"],
        "other_cores": cpu["other_cpu_s"] / cpu["wall"],
        **{key: result[key] for key in ("p50_ms", "p99_ms") if key in result},
    }


async def scenario(args: argparse.Namespace, server: Server, distinct: bool) -> dict[str, Any]:
    options = argparse.Namespace(
        port=server.port,
        ws_path="/ws",
        http_path="/api",
        server_pid=server.process.pid,
        transport="ws",
        tls_ca=None,
        concurrency=100,
        phase_timeout=120.0,
    )
    tally = Tally()
    run = Run(options, tally)
    n = args.subscribers
    try:
        topic_of = (lambda i: f"topic-{i}") if distinct else (lambda _i: "fanout")
        await run.open(n, topic_of)
        probes = await run.sync()
        calibration = await run.phase(max(3, args.calibrate // n))
        count = int(calibration["msgs_per_s"] * args.duration / n)
        count = max(3, min(count, args.max_events))
        rounds = [await measured_round(run, count, server.roots, args.settle) for _ in range(3)]
        fixed = None
        if args.rate:
            per_topic = args.rate / n
            events = max(3, int(per_topic * args.rate_seconds))
            fixed = await measured_round(run, events, server.roots, args.settle, per_topic)
    finally:
        run.close()
    if tally.count:
        raise RuntimeError(f"{tally.count} verification errors: {tally.samples}")
    summary = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    summary["probes"] = probes
    summary["rounds"] = rounds
    if fixed is not None:
        summary.update({f"fixed_{key}": value for key, value in fixed.items()})
    return summary


def start_profiler(args: argparse.Namespace, server: Server, tag: str) -> subprocess.Popen[bytes]:
    """py-spy on the server's Python processes, so a profile comes from the measured load.

    ``--nonblocking``: the server is never paused, so its timing stays close
    to an unprofiled run (the profile's CPU is py-spy's, outside the tree).
    """
    args.profile.mkdir(parents=True, exist_ok=True)
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    command = [spy, "record", "--pid", str(server.process.pid), "--subprocesses"]
    command += ["--nonblocking", "--format", "raw", "-o", str(args.profile / f"{tag}.txt")]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profiler(profiler: subprocess.Popen[bytes]) -> None:
    """SIGINT makes py-spy write its file; it exits by itself when the server does."""
    _signal_and_wait(profiler, signal.SIGINT)


def one_run(
    args: argparse.Namespace, mode: Mode, name: str, log_dir: Path, index: int = 0
) -> dict[str, Any]:
    server = start_server(mode, args, log_dir)
    profiler = None
    try:
        if args.profile is not None:
            tag = f"{mode.name.replace(':', '-')}-{name}-{index}"
            profiler = start_profiler(args, server, tag)
        runner = _event_loop_runner()
        distinct = SCENARIOS[name] == "distinct"
        result: dict[str, Any] = runner(scenario(args, server, distinct=distinct))
    finally:
        if profiler is not None:
            stop_profiler(profiler)
        stop_server(server)
    errors = server.errors()
    result.update(mode=mode.name, scenario=name, subscribers=args.subscribers)
    # Others may edit src/ while this runs: a run whose server logged errors
    # (e.g. compiled execution failing back to graphql-core) is kept in the
    # JSON but left out of the medians.
    result["server_errors"] = len(errors)
    result["server_error_samples"] = errors[:3]
    return result


def _event_loop_runner() -> Any:
    try:
        import uvloop  # type: ignore[import-not-found,unused-ignore]

        return uvloop.run
    except ImportError:
        return asyncio.run


# ---------------------------------------------------------------- report


def medians(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, float]]:
    grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for result in results:
        if not result["server_errors"]:
            grouped.setdefault((result["scenario"], result["mode"]), []).append(result)
    keys: tuple[str, ...] = ("deliveries_per_s", "server_us_per_delivery")
    keys += ("nats_us_per_delivery", "kernel_us_per_delivery", "loadgen_us_per_delivery")
    keys += ("server_cores", "loadgen_cores", "other_cores")
    if all("fixed_server_us_per_delivery" in r for r in results):
        keys += tuple(f"fixed_{key}" for key in keys)
        keys += ("fixed_p50_ms", "fixed_p99_ms")
    table = {}
    for group, runs in grouped.items():
        row = {key: statistics.median(r[key] for r in runs) for key in keys}
        row["runs"] = len(runs)
        row["range_us"] = [min(r["server_us_per_delivery"] for r in runs)]
        row["range_us"].append(max(r["server_us_per_delivery"] for r in runs))
        if "fixed_server_us_per_delivery" in row:
            fixed = [r["fixed_server_us_per_delivery"] for r in runs]
            row["fixed_range_us"] = [min(fixed), max(fixed)]
        table[group] = row
    return table


def markdown(table: dict[tuple[str, str], dict[str, Any]], subscribers: int) -> Iterator[str]:
    yield (
        "| scenario | mode | deliveries/s | server µs/delivery (range) | x memory "
        "| of which nats-server | of which kernel | server cores | load gen cores "
        "| load gen µs/delivery | other load (cores) |"
    )
    yield "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for (name, mode), row in table.items():
        base = table.get((name, "memory"))
        ratio = row["server_us_per_delivery"] / base["server_us_per_delivery"] if base else None
        low, high = row["range_us"]
        yield (
            f"| {name.upper()} ({subscribers}) | {mode} | {row['deliveries_per_s']:,.0f} "
            f"| {row['server_us_per_delivery']:.2f} ({low:.2f}-{high:.2f}) "
            f"| {'' if ratio is None else f'{ratio:.2f}x'} | {row['nats_us_per_delivery']:.2f} "
            f"| {row['kernel_us_per_delivery']:.2f} | {row['server_cores']:.2f} "
            f"| {row['loadgen_cores']:.2f} | {row['loadgen_us_per_delivery']:.2f} "
            f"| {row['other_cores']:.2f} |"
        )


def markdown_fixed(
    table: dict[tuple[str, str], dict[str, Any]], subscribers: int, rate: float
) -> Iterator[str]:
    yield (
        f"| scenario | mode | server µs/delivery at {rate:,.0f}/s (range) | x memory "
        "| of which nats-server | of which kernel | p50 ms | p99 ms | server cores "
        "| other load (cores) |"
    )
    yield "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    for (name, mode), row in table.items():
        if "fixed_range_us" not in row:
            continue
        base = table.get((name, "memory"))
        cost = row["fixed_server_us_per_delivery"]
        ratio = cost / base["fixed_server_us_per_delivery"] if base else None
        low, high = row["fixed_range_us"]
        yield (
            f"| {name.upper()} ({subscribers}) | {mode} | {cost:.2f} ({low:.2f}-{high:.2f}) "
            f"| {'' if ratio is None else f'{ratio:.2f}x'} "
            f"| {row['fixed_nats_us_per_delivery']:.2f} "
            f"| {row['fixed_kernel_us_per_delivery']:.2f} | {row['fixed_p50_ms']:.2f} "
            f"| {row['fixed_p99_ms']:.2f} | {row['fixed_server_cores']:.2f} "
            f"| {row['fixed_other_cores']:.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--modes",
        type=Mode.parse,
        nargs="+",
        default=[Mode.parse(m) for m in ("memory", "nats1", "workers2")],
    )
    parser.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=["p1", "p2"])
    parser.add_argument("--subscribers", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3, help="fresh servers per configuration")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per round")
    parser.add_argument("--calibrate", type=int, default=20000, help="deliveries to calibrate")
    parser.add_argument("--max-events", type=int, default=30000, help="per round, per topic")
    parser.add_argument(
        "--rate", type=float, default=20000, help="then a round at this many deliveries/s (0: off)"
    )
    parser.add_argument("--rate-seconds", type=float, default=3.0)
    parser.add_argument("--settle", type=float, default=0.3, help="seconds counted after a round")
    parser.add_argument(
        "--burst", type=int, default=1, help="events the server publishes per checkpoint"
    )
    parser.add_argument("--loadgen-cpus", help="taskset list for this process (default: any)")
    parser.add_argument("--server-cpus", help="taskset list for the server tree (default: any)")
    default_python = REPO / ".venv" / "bin" / "python"
    parser.add_argument(
        "--server-python",
        default=str(default_python if default_python.exists() else sys.executable),
    )
    parser.add_argument(
        "--nats-server", help="nats-server binary for nats1 (default: beside --server-python)"
    )
    parser.add_argument("--out", type=Path, help="write every run as JSON here")
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy each server (collapsed stacks, DIR/MODE-SCENARIO-RUN.txt); "
        "profiled runs are for reading, not for comparing",
    )
    parser.add_argument("--logs", type=Path, default=REPO / "bench-results" / "logs" / "workers")
    args = parser.parse_args()
    if args.nats_server is None:
        args.nats_server = str(Path(args.server_python).parent / "nats-server")
    if args.loadgen_cpus:
        os.sched_setaffinity(0, {int(c) for c in args.loadgen_cpus.split(",")})
    args.logs.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for index in range(args.runs):
        for name in args.scenarios:
            for mode in args.modes:
                result = one_run(args, mode, name, args.logs, index)
                result["run"] = index
                results.append(result)
                brief = {k: v for k, v in result.items() if k != "rounds"}
                print(json.dumps(brief, default=lambda v: round(v, 3)), flush=True)
    table = medians(results)
    dropped = sum(1 for result in results if result["server_errors"])
    print(f"\n{dropped} of {len(results)} runs left out: the server logged errors")
    for line in markdown(table, args.subscribers):
        print(line)
    if args.rate:
        print()
        for line in markdown_fixed(table, args.subscribers, args.rate):
            print(line)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        keyed = {f"{s}/{m}": row for (s, m), row in table.items()}
        payload: dict[str, Any] = {"machine": machine(), "args": _jsonable(vars(args))}
        payload["medians"] = keyed
        payload["runs"] = results
        args.out.write_text(json.dumps(payload, indent=1, default=str))


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, list):
            return [plain(item) for item in value]
        if isinstance(value, Mode):
            return value.name
        return value if isinstance(value, (int, float, str, type(None))) else str(value)

    return {key: plain(value) for key, value in values.items()}


if __name__ == "__main__":
    main()
