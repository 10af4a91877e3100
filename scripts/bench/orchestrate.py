"""Run every scenario against every server in one go, and report.

Order is scenario-major (P1 on every server, then P2, ...) so the servers
compared in one table were measured minutes apart, not a quarter hour. Every
(server, scenario) pair gets a fresh server process pinned to CPU0 and a
fresh load generator process pinned to CPU1.

Usually started by ``bash scripts/bench/run [--quick]``, which prepares the venv.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import report
from procinfo import machine
from servers.meshsub_app import share_supported
from serverspec import BENCH_DIR, PYTHON, RunningServer, ServerSpec, all_specs
from tlscerts import BenchCert, make_cert

ROOT = BENCH_DIR.parent.parent
SERVER_CORE, CLIENT_CORE = 0, 1
#: Load generator CPU (cores) above which a result is flagged as client-bound.
CLIENT_LIMIT = 0.8

SCENARIOS = {
    "p1": "fanout", "p2": "distinct", "p3": "capacity", "p4": "churn", "p4live": "churn-live",
}  # fmt: skip

#: Per mode: loadgen options per scenario, and the bound on one scenario run.
MODES: dict[str, dict[str, Any]] = {
    "quick": {
        "fanout": ["--subscribers", "200", "--duration", "2", "--latency-duration", "2",
                   "--reps", "1", "--common-rate", "1000"],
        "distinct": ["--subscribers", "200", "--duration", "2", "--latency-duration", "2",
                     "--reps", "1"],
        "capacity": ["--connections", "2000"],
        "churn": ["--duration", "3", "--concurrency", "32"],
        "churn-live": ["--duration", "3", "--concurrency", "32"],
        "rounds": 3,
        "timeout": 90,
    },
    "full": {
        "fanout": ["--subscribers", "1000", "--duration", "4", "--latency-duration", "3",
                   "--reps", "3", "--common-rate", "1000"],
        "distinct": ["--subscribers", "1000", "--duration", "4", "--latency-duration", "3",
                     "--reps", "3"],
        "capacity": ["--connections", "10000"],
        "churn": ["--duration", "5", "--concurrency", "32"],
        "churn-live": ["--duration", "5", "--concurrency", "32"],
        "rounds": 5,
        "timeout": 240,
    },
}  # fmt: skip


#: Pairs that cannot run, and why (shown under the table).
_WS_CYCLE = "churn is the WebSocket cycle (init, subscribe, complete, close)"
SCENARIO_SKIPS = {
    ("churn-live", "meshsub-share"): "a shared stream greets only the subscriber that starts "
    "it (later ones join its events), so the live churn is the own-streamer row's",
    ("churn", "meshsub-sse"): _WS_CYCLE,
    ("churn-live", "meshsub-sse"): _WS_CYCLE,
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def loadgen_argv(
    spec: ServerSpec, server: RunningServer, scenario: str, cert: BenchCert | None
) -> list[str]:
    """The load generator's command line for *spec* (its transport, TLS or not)."""
    argv = [
        "taskset", "-c", str(CLIENT_CORE), PYTHON, str(BENCH_DIR / "loadgen.py"),
        scenario, "--port", str(server.port), "--ws-path", spec.ws_path,
        "--http-path", spec.http_path, "--server-pid", str(server.pid),
        "--transport", spec.transport,
    ]  # fmt: skip
    if spec.tls:
        assert cert is not None
        argv += ["--tls-ca", str(cert.cert)]
    return argv


def run_scenario(
    spec: ServerSpec,
    scenario: str,
    options: list[str],
    timeout: float,
    logs: Path,
    cert: BenchCert | None = None,
) -> dict[str, Any]:
    """One fresh server, one load generator run; the load generator's JSON, annotated."""
    result: dict[str, Any] = {"server": spec.key, "scenario": scenario}
    server_log_path = logs / f"{scenario}-{spec.key}.log"
    with (
        server_log_path.open("wb") as server_log,
        RunningServer(spec, SERVER_CORE, server_log, cert) as server,
    ):
        try:
            server.wait_ready()
        except RuntimeError as error:
            return {**result, "ok": False, "failure": str(error)}
        argv = [*loadgen_argv(spec, server, scenario, cert), "--timeout", str(timeout), *options]
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=timeout + 30, cwd=BENCH_DIR, check=False
            )
        except subprocess.TimeoutExpired:
            return {**result, "ok": False, "failure": f"load generator over {timeout}s"}
        result["server_alive"] = server.process.poll() is None
    (logs / f"{scenario}-{spec.key}.loadgen.log").write_bytes(done.stderr)
    lines = done.stdout.decode().strip().splitlines()
    try:
        result.update(json.loads(lines[-1]))
    except (IndexError, ValueError):
        tail = done.stderr.decode(errors="replace")[-500:]
        return {**result, "ok": False, "failure": f"no result from load generator: {tail}"}
    for line in server_log_path.read_text(errors="replace").splitlines():
        if line.startswith("bench-gc: "):
            result["server_gc"] = gc = json.loads(line.removeprefix("bench-gc: "))
            if isinstance(result.get("metrics"), dict):
                result["metrics"]["gc_max_pause_ms"] = max(gc["max_ms"])
    if not result["server_alive"]:
        result["ok"] = False
        result.setdefault("failure", "server died during the run")
    return result


def _median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The round with the median efficiency (any failed round fails the result)."""
    if len(rounds) == 1:
        return rounds[0]
    failed = [r for r in rounds if not r.get("ok")]
    if failed:
        return failed[0]
    ordered = sorted(rounds, key=lambda r: r["metrics"]["cycles_per_cpu_s"] or 0)
    median = dict(ordered[len(ordered) // 2])
    median["rounds"] = [
        {k: r["metrics"][k] for k in ("cycles_per_s", "cycles_per_cpu_s", "client_cpu")}
        for r in rounds
    ]
    return median


def summary_line(result: dict[str, Any]) -> str:
    if not result.get("ok"):
        reason = result.get("failure") or "; ".join(result.get("error_samples", [])[:3])
        return f"FAILED ({result.get('errors', 0)} errors): {reason}"
    gc = result.get("server_gc")
    pauses = f"; gen2 GC max {gc['max_ms'][2]} ms" if gc else ""
    return _summary(result) + pauses


def _summary(result: dict[str, Any]) -> str:
    m = result["metrics"]
    if result["scenario"] in ("fanout", "distinct"):
        lat = m["latency"]
        return (
            f"{m['msgs_per_s']:.0f} msg/s, {m['msgs_per_cpu_s'] or 0:.0f} msg/CPU-s, "
            f"p50 {lat['p50_ms']} ms p99 {lat['p99_ms']} ms; server CPU {m['server_cpu']}, "
            f"other load on core {m['core0_other']}, load gen CPU {m['client_cpu']}"
        )
    if result["scenario"] == "capacity":
        return (
            f"{m['kb_per_conn']} KB/conn ({m['rss_before_kb']} -> {m['rss_after_kb']} KB "
            f"for {m['connections']}), {m['connects_per_s']} connects/s"
        )
    return (
        f"{m['cycles_per_s']:.0f} cycles/s, {m['cycles_per_cpu_s'] or 0:.0f} cycles/CPU-s, "
        f"p50 {m['cycle_p50_ms']} ms; server CPU {m['server_cpu']}, "
        f"other load on core {m['core0_other']}, load gen CPU {m['client_cpu']}"
    )


def profile(
    spec: ServerSpec,
    scenario: str,
    options: list[str],
    timeout: float,
    out: Path,
    cert: BenchCert | None = None,
) -> Path | None:
    """Run *scenario* again with py-spy attached to the server; return the summary's path."""
    import profile_summary

    name = f"profile-{scenario}-{spec.key}"
    raw = out / f"{name}.txt"
    with (
        (out / "logs" / f"{name}.log").open("wb") as server_log,
        RunningServer(spec, SERVER_CORE, server_log, cert) as server,
    ):
        server.wait_ready()
        spy = subprocess.Popen(
            ["taskset", "-c", str(CLIENT_CORE), str(Path(PYTHON).parent / "py-spy"),
             "record", "--pid", str(server.pid), "--rate", "250", "--function",
             "--format", "raw", "--output", str(raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        argv = [*loadgen_argv(spec, server, scenario, cert), *options]
        subprocess.run(argv, capture_output=True, timeout=timeout + 30, check=False)
        spy.send_signal(signal.SIGINT)
        try:
            _, err = spy.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            spy.kill()
            err = b"py-spy did not stop"
    if not raw.exists():
        log(f"  py-spy produced nothing: {err.decode(errors='replace')[-300:]}")
        return None
    summary = out / f"{name}-summary.txt"
    summary.write_text(profile_summary.summarise(raw.read_text()))
    return summary


def ratio_sections(specs: list[ServerSpec]) -> list[tuple[str, report.Pairs]]:
    """meshsub-trio against each peer (TLS against TLS, plaintext against plaintext),
    and each variant against the server it varies, measured in the same run."""
    subjects = [s for s in specs if s.role == "meshsub"]
    peers = [s for s in specs if s.role != "meshsub"]
    versus = [
        ((a.key, a.label), (b.key, b.label)) for a in subjects for b in peers if a.tls == b.tls
    ]
    by_key = {s.key: s for s in specs}
    variants = [
        ((s.key, s.label), (by_key[s.baseline].key, by_key[s.baseline].label))
        for s in specs
        if s.baseline in by_key
    ]
    return [("meshsub-trio ÷ peer", versus), ("variant ÷ baseline", variants)]


def versions() -> dict[str, str]:
    """Versions of everything measured."""
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str] = {}
    for name in ("trio", "graphql-core", "wsproto", "h11", "orjson", "strawberry-graphql",
                 "uvicorn", "websockets", "uvloop"):  # fmt: skip
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "missing"
    lock = json.loads((BENCH_DIR / "node" / "package-lock.json").read_text())
    for name in ("graphql", "graphql-ws", "ws"):
        found[f"npm:{name}"] = lock["packages"].get(f"node_modules/{name}", {}).get("version", "?")
    git = ["git", "-C", str(ROOT)]
    rev = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run([*git, "status", "--porcelain", "src"], capture_output=True, text=True)
    found["meshsub-trio"] = rev.stdout.strip() + (" (+ uncommitted src)" if dirty.stdout else "")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller, ~5 minutes")
    parser.add_argument("--only", help="comma-separated server keys (default: all)")
    parser.add_argument(
        "--scenarios", default="p1,p2,p3,p4,p4live", help="subset of p1,p2,p3,p4,p4live"
    )
    parser.add_argument("--share-value", default=os.environ.get("MESHSUB_BENCH_SHARE", "events"))
    parser.add_argument(
        "--profile", action="store_true", help="py-spy meshsub-trio under P1 and P4"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench-results")
    args = parser.parse_args()

    mode_name = "quick" if args.quick else "full"
    mode = MODES[mode_name]
    specs = all_specs(args.share_value)
    skipped: dict[str, str] = {}
    if not share_supported():
        skipped["meshsub-share"] = "this meshsub-trio has no Streamer(share=...) yet"
    if args.only:
        wanted = set(args.only.split(","))
        specs = [s for s in specs if s.key in wanted]
    specs = [s for s in specs if s.key not in skipped]
    scenarios = [SCENARIOS[name.strip()] for name in args.scenarios.split(",")]
    logs = args.out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    cert = make_cert(args.out / "tls") if any(s.tls for s in specs) else None

    started = time.monotonic()
    log(f"bench ({mode_name}): {', '.join(s.key for s in specs)}; {', '.join(scenarios)}")
    for key, why in skipped.items():
        log(f"  skipping {key}: {why}")
    results: list[dict[str, Any]] = []
    for scenario in scenarios:
        # Churn is measured in rounds that take turns across the servers, and
        # each server's median round is its result: a short run is at the
        # mercy of the machine's drift, and taking turns spreads it evenly.
        rounds = mode["rounds"] if scenario.startswith("churn") else 1
        runs: dict[str, list[dict[str, Any]]] = {spec.key: [] for spec in specs}
        for number in range(rounds):
            for spec in specs:
                if (scenario, spec.key) in SCENARIO_SKIPS:
                    continue
                t0 = time.monotonic()
                result = run_scenario(spec, scenario, mode[scenario], mode["timeout"], logs, cert)
                result["seconds"] = round(time.monotonic() - t0, 1)
                runs[spec.key].append(result)
                label = f"{scenario} {number + 1}/{rounds}" if rounds > 1 else scenario
                log(f"  {label:8} {spec.key:14} {summary_line(result)}  [{result['seconds']}s]")
        results.extend(_median_round(runs[spec.key]) for spec in specs if runs[spec.key])

    profiles: dict[str, str] = {}
    if args.profile:
        # P1 for both meshsub-trio variants; P2-P4 do not depend on sharing.
        targets = [(s, "fanout") for s in specs if s.role == "meshsub"]
        targets += [(s, "churn") for s in specs if s.key == "meshsub"]
        for spec, scenario in targets:
            log(f"  profiling {spec.key} under {scenario} with py-spy")
            path = profile(spec, scenario, mode[scenario], mode["timeout"], args.out, cert)
            if path is not None:
                # Relative to the repository when --out is inside it, else as given.
                shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                profiles[f"{scenario}/{spec.key}"] = str(shown)

    servers = [(s.key, s.label) for s in specs]
    sections = ratio_sections(specs)
    info = machine()
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine_line = (
        f"{info['nproc']} vCPU {info['cpu_model']}, {info['memory_gib']} GiB, "
        f"Linux {info['kernel']}, CPython {info['python']}, Node {info['node']}; "
        f"server pinned to CPU{SERVER_CORE}, load generator to CPU{CLIENT_CORE}; {when}"
    )
    document = {
        "mode": mode_name,
        "machine": info,
        "machine_line": machine_line,
        "versions": versions(),
        "options": {k: v for k, v in mode.items()},
        "skipped": skipped,
        "results": results,
        "profiles": profiles,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    encoded = orjson.dumps(document, option=orjson.OPT_INDENT_2)
    for name in ("latest", mode_name):  # latest.json, and quick.json or full.json
        (args.out / f"{name}.json").write_bytes(encoded)

    text = report.render(results, servers, sections, markdown=False)
    md = report.render(results, servers, sections, markdown=True)
    failed = [f"{r['scenario']}/{r['server']}" for r in results if not r.get("ok")]
    notes = [
        "",
        report.DIRECTIONS,
        "msg per CPU-s = deliveries ÷ the server's CPU seconds: it holds when other "
        "processes share the server's core; msg/s does not.",
        f"Machine: {machine_line}.",
    ]
    notes.append(
        "Versions: " + ", ".join(f"{k} {v}" for k, v in document["versions"].items()) + "."
    )
    if skipped:
        notes.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in skipped.items()) + ".")
    for (scenario, key), why in SCENARIO_SKIPS.items():
        if scenario in scenarios and any(spec.key == key for spec in specs):
            notes.append(f"Not run: {scenario} on {key}: {why}.")
    if failed:
        notes.append("FAILED runs (no numbers shown): " + ", ".join(failed) + ".")
    busy_client = [
        f"{r['scenario']}/{r['server']} ({r['metrics']['client_cpu']:.2f})"
        for r in results
        if r.get("ok") and r["metrics"].get("client_cpu", 0) >= CLIENT_LIMIT
    ]
    if busy_client:
        notes.append(
            "Load generator near its core's limit (numbers are lower bounds): "
            + ", ".join(busy_client)
            + "."
        )
    contended = [
        f"{r['scenario']}/{r['server']} ({r['metrics']['core0_other']:.2f})"
        for r in results
        if r.get("ok") and r["metrics"].get("core0_other", 0) >= 0.2
    ]
    if contended:
        notes.append(
            "Other processes used ≥ 0.2 of the server's core during: "
            + ", ".join(contended)
            + " (msg/s understated there; msg/CPU-s less so)."
        )
    markdown = [
        f"### Subscription benchmark ({mode_name} mode, `bash scripts/bench/run"
        f"{' --quick' if args.quick else ''}`)",
        "",
        *md,
        *notes,
    ]
    for name in ("latest", mode_name):
        (args.out / f"{name}.md").write_text("\n".join(markdown) + "\n")
    print("\n".join([*text, *notes]))
    print(f"\nJSON: {args.out / 'latest.json'}   markdown: {args.out / 'latest.md'}")
    print(f"took {document['wall_seconds']}s")


if __name__ == "__main__":
    main()
