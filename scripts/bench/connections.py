"""100,000 concurrent subscribed WebSocket connections on one meshsub-trio process.

Issue #16 part 2. The script starts a server (pinned to ``--server-cpu``),
then ``--clients`` client processes (``connections_client.py``, pinned to
``--client-cpus``) that together open ``--connections`` WebSockets over
loopback from ``--sources`` local addresses (127.0.0.2, 127.0.0.3, ...), so
that no (source, destination) pair needs more ephemeral ports than
``ip_local_port_range`` holds. Each connection does the RFC 6455 upgrade,
``connection_init``/``ack`` and one ``subscribe``. Then it reports:

* the accept rate on the way up (connections acknowledged per second: overall,
  and the best and worst one-second windows), and connection failures;
* server memory per subscribed connection (VmRSS after minus before, over N);
* publish-to-subscriber delay of one event to all N (p50/p99/max over the N
  subscribers, per publish; ``max`` is "until the last one has it"), measured
  against the kernel's receive timestamp (``SO_TIMESTAMPNS``) so the clients'
  own CPU does not count, and against the clients' parse time too;
* the server's CPU while N connections sit idle for ``--idle`` seconds (with
  the server's default keep-alive interval unless ``--keepalive`` is given;
  ``--keepalive-modes default,0`` runs both, one fresh server each);
* other load on the server's core while measuring (others share this machine).

On loopback the kernel runs the receiver's TCP work inside the sender's
write, so by default the server also pays its clients' receive path.
``--steer-receive`` (root) sets Receive Packet Steering on ``lo`` to the
clients' cores for the run, as a network would do that work on the receiving
machines; the server's inbound work (ACKs, pongs) then moves there too, so
read it as the server's figures without any receive work
(``loopback_write.py`` measures the split for one write).

The app is ``servers/hundred_k_app.py`` (``--app``): a shared streamer (one
cohort: one execution and one encoding per event) and ``POST /publish``.
``create_unshared_app`` runs one execution per subscriber instead.

Run (as root, for the fd limits; a quiet 2-core machine takes ~3 minutes a mode)::

    .venv/bin/python scripts/bench/connections.py --connections 100000 --clients 4 --sources 8
    .venv/bin/python scripts/bench/connections.py --connections 10000 --keepalive-modes default,0
    .venv/bin/python scripts/bench/connections.py --connections 50000 --py-spy bench-results/100k

``--out FILE`` writes everything as JSON (default ``bench-results/connections.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import os
import resource
import selectors
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
_TICK = os.sysconf("SC_CLK_TCK")


# ---- /proc -------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def status_kb(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def core_busy(cores: list[int]) -> float:
    """Busy CPU seconds of *cores* since boot, every process."""
    total = 0.0
    for line in Path("/proc/stat").read_text().splitlines():
        name = line.split(" ", 1)[0]
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cores:
            ticks = [int(v) for v in line.split()[1:]]
            total += (sum(ticks[:8]) - ticks[3] - ticks[4]) / _TICK
    return total


def parse_cpus(text: str) -> list[int]:
    cpus: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.extend(range(int(low), int(high or low) + 1))
    return cpus


class Window:
    """CPU of one process, and everything else on its cores, between start and stop."""

    def __init__(self, pid: int, cores: list[int]) -> None:
        self.pid = pid
        self.cores = cores
        self.wall0 = time.monotonic()
        self.cpu0 = cpu_seconds(pid)
        self.core0 = core_busy(cores)

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.wall0
        cpu = cpu_seconds(self.pid) - self.cpu0
        other = core_busy(self.cores) - self.core0 - cpu
        return {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "cores_busy": round(cpu / wall, 4),
            "other_on_core": round(max(0.0, other) / wall, 4),
        }


# ---- the server --------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_nofile(want: int) -> int:
    """Raise RLIMIT_NOFILE toward *want* (children inherit it); the limit reached.

    Raising the hard limit needs CAP_SYS_RESOURCE; without it the soft limit
    goes up to the hard one and no further.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
        return want
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return int(hard)


@contextlib.contextmanager
def steered_receive(cpus: list[int] | None) -> Iterator[str]:
    """Receive Packet Steering on ``lo`` to *cpus* for the block (None: as it is).

    Yields the mask in force; the original one is put back on the way out.
    """
    path = Path("/sys/class/net/lo/queues/rx-0/rps_cpus")
    original = path.read_text().strip() if path.exists() else "0"
    if cpus is None:
        yield original
        return
    mask = format(sum(1 << cpu for cpu in cpus), "x")
    try:
        path.write_text(mask)
    except OSError as error:
        raise SystemExit(f"--steer-receive needs root (writing {path}: {error})") from None
    try:
        yield mask
    finally:
        path.write_text(original)


def system_limits(connections: int, handshakes: int) -> list[str]:
    """Machine-wide settings that would fail the run part way up, as warnings.

    Why: at 100k a run meets limits no single process shows (both ends of every
    connection live on this machine): the descriptor table, conntrack when it
    is loaded, and the listen queue the clients' handshakes land in.
    """
    checks = (
        ("/proc/sys/fs/file-max", 2 * connections + 10_000, "fs.file-max"),
        ("/proc/sys/net/netfilter/nf_conntrack_max", connections + 10_000, "nf_conntrack_max"),
        ("/proc/sys/net/core/somaxconn", handshakes, "net.core.somaxconn"),
    )
    warnings = []
    for path, needed, name in checks:
        try:
            value = int(Path(path).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue  # not on this kernel (conntrack not loaded): nothing to hit
        if value < needed:
            warnings.append(f"{name} is {value}, under the {needed} this run needs: raise it")
    return warnings


def http_call(port: int, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"content-type": "application/json"} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    def __init__(self, args: argparse.Namespace, keepalive: str, log: Path) -> None:
        self.port = args.port or free_port()
        self.cpus = args.server_cpu
        command = [
            "taskset", "-c", args.server_cpu,
            sys.executable, "-m", "meshsub_trio", "serve", args.app,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--log-level", "warning",
        ]  # fmt: skip
        if keepalive != "default":
            command += ["--keepalive", keepalive]
        command += args.server_arg
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(HERE), str(Path(args.src).resolve()), env.get("PYTHONPATH", "")]
        )
        if args.tracemalloc:
            env["PYTHONTRACEMALLOC"] = "1"
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            command, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        self.pid = self.proc.pid
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited with {self.proc.returncode}; see {log}")
            with contextlib.suppress(OSError):
                if http_call(self.port, "GET", "/healthz")[0] == 200:
                    return
            time.sleep(0.2)
        raise SystemExit("server did not answer /healthz within 60 s")

    def stats(self, query: str = "") -> dict[str, Any]:
        status, body = http_call(self.port, "GET", "/debug/stats" + query)
        return orjson.loads(body) if status == 200 else {"status": status}

    def publish(self, seq: int) -> dict[str, Any]:
        sent = time.time()
        status, body = http_call(self.port, "POST", "/publish", orjson.dumps({"seq": seq}))
        if status != 200:
            raise RuntimeError(f"publish answered {status}: {body[:200]!r}")
        answer: dict[str, Any] = orjson.loads(body)
        answer["http_round_trip_ms"] = round((time.time() - sent) * 1000, 2)
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# ---- the clients ---------------------------------------------------------
class Clients:
    """The client processes and their line-delimited JSON control channels."""

    def __init__(self, args: argparse.Namespace, port: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.buffers: dict[int, bytes] = {}
        self.inbox: dict[int, list[dict[str, Any]]] = {}
        sources = [f"127.0.0.{2 + i}" for i in range(args.sources)]
        base, extra = divmod(args.connections, args.clients)
        offset = 0
        for index in range(args.clients):
            count = base + (1 if index < extra else 0)
            command = [
                "taskset", "-c", args.client_cpus,
                sys.executable, str(HERE / "connections_client.py"),
                "--port", str(port), "--path", args.path,
                "--connections", str(count), "--sources", ",".join(sources),
                "--offset", str(offset), "--in-flight", str(args.in_flight),
            ]  # fmt: skip
            offset += count
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            self.selector.register(proc.stdout, selectors.EVENT_READ, index)
            self.buffers[index] = b""
            self.inbox[index] = []
            self.procs.append(proc)

    def pump(self, timeout: float) -> list[tuple[int, dict[str, Any]]]:
        """Lines that arrived within *timeout*, as (client, message)."""
        lines: list[tuple[int, dict[str, Any]]] = []
        for key, _ in self.selector.select(timeout):
            index: int = key.data
            stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
            chunk = os.read(stream.fileno(), 1 << 22)
            if not chunk:
                self.selector.unregister(stream)
                continue
            data = self.buffers[index] + chunk
            *complete, self.buffers[index] = data.split(b"\n")
            lines.extend((index, orjson.loads(line)) for line in complete if line)
        return lines

    def ask(self, command: dict[str, Any], timeout: float = 60.0) -> list[dict[str, Any]]:
        """Send *command* to every client; one answer from each, in client order."""
        line = orjson.dumps(command) + b"\n"
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line)
            proc.stdin.flush()
        answers: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(answers) < len(self.procs) and time.monotonic() < deadline:
            for index, message in self.pump(0.5):
                if message.get("ev") != "progress":
                    answers[index] = message
        if len(answers) < len(self.procs):
            raise TimeoutError(f"{len(self.procs) - len(answers)} clients did not answer")
        return [answers[i] for i in range(len(self.procs))]

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(OSError, ValueError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"cmd":"quit"}\n')
                proc.stdin.flush()
        for proc in self.procs:
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# ---- measuring -----------------------------------------------------------
def pick(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50_ms": round(pick(ordered, 0.50) * 1000, 2),
        "p99_ms": round(pick(ordered, 0.99) * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
        "min_ms": round(ordered[0] * 1000, 2),
    }


def ramp(
    clients: Clients, server: Server, args: argparse.Namespace, cores: list[int]
) -> dict[str, Any]:
    """Wait until every client has opened (or given up on) its share."""
    started = time.time()
    window = Window(server.pid, cores)
    latest: dict[int, dict[str, Any]] = {}
    timeline: list[tuple[float, int]] = []
    deadline = time.monotonic() + args.ramp_timeout
    rss_peak = 0
    while time.monotonic() < deadline:
        for index, message in clients.pump(0.25):
            if message.get("ev") == "progress":
                latest[index] = message
        if len(latest) == len(clients.procs):
            acked = sum(m["acked"] for m in latest.values())
            failed = sum(m["failed"] for m in latest.values())
            timeline.append((time.time() - started, acked))
            rss_peak = max(rss_peak, status_kb(server.pid))
            if len(timeline) > 1 and int(timeline[-1][0]) != int(timeline[-2][0]):
                print(f"  {timeline[-1][0]:6.1f}s  {acked:7d} subscribed  {failed} failed")
            if all(m["ready"] for m in latest.values()):
                break
    else:
        raise TimeoutError(f"ramp not done after {args.ramp_timeout}s: {latest}")
    cpu = window.stop()
    acked = timeline[-1][1]
    elapsed = timeline[-1][0]
    # One-second windows of the acknowledged count, from the timeline.
    rates: list[float] = []
    second = 1.0
    j = 0
    previous = 0
    while second <= elapsed:
        while j + 1 < len(timeline) and timeline[j + 1][0] <= second:
            j += 1
        rates.append(timeline[j][1] - previous)
        previous = timeline[j][1]
        second += 1.0
    steady = rates[1:-1] or rates
    return {
        "subscribed": acked,
        "failed": sum(m["failed"] for m in latest.values()),
        "seconds": round(elapsed, 2),
        "accepts_per_s": round(acked / elapsed, 1),
        "accepts_per_s_best_1s": max(steady) if steady else None,
        "accepts_per_s_worst_1s": min(steady) if steady else None,
        "accepts_per_s_by_second": rates,
        "server_cpu_during_ramp": cpu,
        "server_rss_peak_kb": rss_peak,
    }


def until_everyone_has(
    clients: Clients, seq: int, expect: int, timeout: float
) -> tuple[int, float]:
    deadline = time.monotonic() + timeout
    have = 0
    while time.monotonic() < deadline:
        have = sum(a["have"] for a in clients.ask({"cmd": "state", "seq": seq}))
        if have >= expect:
            return have, time.monotonic()
        time.sleep(0.1)
    return have, time.monotonic()


class Publisher:
    def __init__(self) -> None:
        self.seq = 0

    def next(self) -> int:
        self.seq += 1
        return self.seq


def sync(clients: Clients, server: Server, publisher: Publisher, expect: int) -> int:
    """Probes until every subscription is live (subscriptions have no acknowledgement)."""
    for probe in range(1, 31):
        seq = publisher.next()
        server.publish(seq)
        have, _ = until_everyone_has(clients, seq, expect, 5.0)
        if have >= expect:
            return probe
        print(f"  probe {probe}: {have}/{expect} live")
    raise TimeoutError(f"subscriptions not all live after 30 probes ({have}/{expect})")


def measure_publishes(
    clients: Clients, server: Server, publisher: Publisher, expect: int, count: int
) -> list[dict[str, Any]]:
    results = []
    for _ in range(count):
        time.sleep(1.0)
        seq = publisher.next()
        window = Window(server.pid, parse_cpus(server.cpus))
        answer = server.publish(seq)
        have, _ = until_everyone_has(clients, seq, expect, 30.0)
        cpu = window.stop()
        kernel: list[float] = []
        user: list[float] = []
        for report in clients.ask({"cmd": "report", "seq": seq}):
            kernel.extend(report["kernel"])
            user.extend(report["user"])
        result = {
            "seq": seq,
            "delivered": have,
            "expected": expect,
            "streams": answer.get("streams"),
            "http_round_trip_ms": answer["http_round_trip_ms"],
            "server_cpu_ms": round(cpu["cpu_s"] * 1000, 1),
            "other_on_core": cpu["other_on_core"],
            "kernel": summary_ms(kernel),
            "client": summary_ms(user),
        }
        print(
            f"  publish {seq}: {have}/{expect} got it; to the kernel p50 "
            f"{result['kernel'].get('p50_ms')} p99 {result['kernel'].get('p99_ms')} "
            f"max {result['kernel'].get('max_ms')} ms (client parse max "
            f"{result['client'].get('max_ms')} ms); server CPU {result['server_cpu_ms']} ms, "
            f"others on its core {cpu['other_on_core']}"
        )
        results.append(result)
    return results


def py_spy(
    args: argparse.Namespace, pid: int, name: str, seconds: float
) -> subprocess.Popen[bytes]:
    out = Path(args.py_spy) / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    spy = HERE / ".venv" / "bin" / "py-spy"
    command = [
        "taskset", "-c", args.client_cpus, str(spy), "record", "--pid", str(pid),
        "--rate", "100", "--format", "raw", "--output", str(out),
        "--duration", str(int(seconds)), "--nonblocking",
    ]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_mode(args: argparse.Namespace, keepalive: str) -> dict[str, Any]:
    cores = parse_cpus(args.server_cpu)
    logs = Path(args.out).parent / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = Server(args, keepalive, logs / f"connections-server-ka{keepalive}.log")
    result: dict[str, Any] = {"keepalive": keepalive, "server_pid": server.pid}
    clients: Clients | None = None
    try:
        publisher = Publisher()
        server.publish(publisher.next())  # warm the route (no subscribers yet)
        time.sleep(0.5)
        rss_before = status_kb(server.pid)
        result["rss_before_kb"] = rss_before
        result["stats_before"] = server.stats()
        print(f"[keepalive={keepalive}] server pid {server.pid} RSS {rss_before} KiB; opening")
        spy = py_spy(args, server.pid, f"ramp-ka{keepalive}", 600) if args.py_spy else None
        clients = Clients(args, server.port)
        result["ramp"] = ramp(clients, server, args, cores)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        ramp_info = result["ramp"]
        print(
            f"  {ramp_info['subscribed']} subscribed in {ramp_info['seconds']} s: "
            f"{ramp_info['accepts_per_s']}/s (best 1 s {ramp_info['accepts_per_s_best_1s']}, "
            f"worst {ramp_info['accepts_per_s_worst_1s']}); {ramp_info['failed']} failed"
        )
        expect = ramp_info["subscribed"]
        result["probes"] = sync(clients, server, publisher, expect)
        time.sleep(2.0)
        rss_after = status_kb(server.pid)
        result["rss_after_kb"] = rss_after
        result["kb_per_connection"] = round((rss_after - rss_before) / max(1, expect), 2)
        result["stats_after"] = server.stats("?objects=1")
        print(
            f"  RSS {rss_after} KiB: {result['kb_per_connection']} KiB per connection; "
            f"tasks {result['stats_after'].get('tasks')}, gc tracked "
            f"{result['stats_after'].get('gc_tracked')}"
        )
        window = Window(server.pid, cores)
        spy = py_spy(args, server.pid, f"publish-ka{keepalive}", 600) if args.py_spy else None
        result["publishes"] = measure_publishes(clients, server, publisher, expect, args.publishes)
        result["publish_cpu"] = window.stop()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait()
        result["idle"] = idle(args, clients, server, cores, keepalive)
        states = clients.ask({"cmd": "state"})
        result["client_states"] = states
        result["client_cpu_s"] = round(sum(s["cpu_s"] for s in states), 2)
        result["dropped"] = sum(s["dropped"] for s in states)
        result["stats_end"] = server.stats()
        if args.tracemalloc:
            result["tracemalloc"] = server.stats("?top=30")
    finally:
        if clients is not None:
            clients.stop()
        server.stop()
    return result


def idle(
    args: argparse.Namespace, clients: Clients, server: Server, cores: list[int], keepalive: str
) -> dict[str, Any]:
    before = clients.ask({"cmd": "state"})
    spy = py_spy(args, server.pid, f"idle-ka{keepalive}", args.idle) if args.py_spy else None
    window = Window(server.pid, cores)
    time.sleep(args.idle)
    cpu = window.stop()
    after = clients.ask({"cmd": "state"})
    if spy is not None:
        spy.wait()
    pings = sum(a["pings"] for a in after) - sum(b["pings"] for b in before)
    cpu["pings_per_s"] = round(pings / cpu["wall_s"], 1)
    cpu["percent_of_a_core"] = round(100 * cpu["cores_busy"], 2)
    cpu["dropped_so_far"] = sum(a["dropped"] for a in after)
    print(
        f"  idle {cpu['wall_s']:.0f} s: server {cpu['percent_of_a_core']}% of a core, "
        f"{cpu['pings_per_s']} pings/s; other load on its core {cpu['other_on_core']}"
    )
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=4, help="client processes")
    parser.add_argument("--sources", type=int, default=8, help="source addresses 127.0.0.2..")
    parser.add_argument("--app", default="servers.hundred_k_app:create_app")
    parser.add_argument("--path", default="/ws", help="WebSocket path")
    parser.add_argument("--port", type=int, default=0, help="0: a free one")
    parser.add_argument(
        "--keepalive-modes",
        default="default",
        help="comma-separated: 'default' (the server's interval) or seconds (0: off)",
    )
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds measured")
    parser.add_argument("--publishes", type=int, default=5)
    parser.add_argument("--in-flight", type=int, default=256, help="handshakes per client")
    parser.add_argument("--ramp-timeout", type=float, default=900.0)
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpus", default="1")
    parser.add_argument("--server-arg", action="append", default=[], help="extra serve flag")
    parser.add_argument(
        "--src",
        default=str(ROOT / "src"),
        help="the meshsub_trio source tree to serve (e.g. a `git archive HEAD` copy)",
    )
    parser.add_argument(
        "--steer-receive",
        action="store_true",
        help="root: steer loopback receive work to --client-cpus (rps_cpus on lo) for the run",
    )
    parser.add_argument("--force", action="store_true", help="run past the fd limit")
    parser.add_argument("--tracemalloc", action="store_true", help="PYTHONTRACEMALLOC=1")
    parser.add_argument("--py-spy", metavar="DIR", help="py-spy raw profiles of ramp and idle")
    parser.add_argument("--out", default=str(ROOT / "bench-results" / "connections.json"))
    args = parser.parse_args()
    per_source = args.connections / args.sources
    if per_source > 28000:
        raise SystemExit(f"{per_source:.0f} connections per source address: use more --sources")
    limit = raise_nofile(args.connections + 20_000)
    if args.connections + 100 > limit:
        message = (
            f"RLIMIT_NOFILE is {limit} and cannot be raised (no CAP_SYS_RESOURCE): one "
            f"server process cannot hold {args.connections} sockets"
        )
        if not args.force:
            raise SystemExit(message + " (--force tries anyway)")
        print("WARNING: " + message)
    per_client = args.connections / args.clients
    if per_client + 100 > limit:
        raise SystemExit(f"{per_client:.0f} sockets per client process: use more --clients")
    for warning in system_limits(args.connections, args.in_flight * args.clients):
        print("WARNING: " + warning)
    output: dict[str, Any] = {
        "connections": args.connections,
        "clients": args.clients,
        "sources": args.sources,
        "app": args.app,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg_before": os.getloadavg(),
            "nofile": limit,
        },
        "modes": [],
    }
    with steered_receive(parse_cpus(args.client_cpus) if args.steer_receive else None) as mask:
        output["machine"]["lo_rps_cpus"] = mask
        for mode in args.keepalive_modes.split(","):
            output["modes"].append(run_mode(args, mode.strip()))
            time.sleep(3.0)  # let TIME_WAIT sockets and the kernel settle
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_bytes(orjson.dumps(output, option=orjson.OPT_INDENT_2))
    print(f"wrote {args.out}")
    for mode in output["modes"]:
        pubs = mode.get("publishes", [])
        worst = max((p["kernel"].get("max_ms", 0.0) for p in pubs), default=None)
        median_max = (
            round(statistics.median(p["kernel"].get("max_ms", 0.0) for p in pubs), 2)
            if pubs
            else None
        )
        print(
            f"keepalive={mode['keepalive']}: {mode['kb_per_connection']} KiB/conn, "
            f"accept {mode['ramp']['accepts_per_s']}/s, publish->last median {median_max} ms "
            f"worst {worst} ms, idle {mode['idle']['percent_of_a_core']}% of a core"
        )


if __name__ == "__main__":
    main()
