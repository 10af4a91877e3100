"""The many-connections benchmark (``scripts/bench/connections.py``), run small, as documented.

Why: the 100k figures in the README come from this script, and a user with a
machine that allows 100,000 descriptors runs it as ``docs/connections.md``
says. Here it runs end to end at 300 connections with both keep-alive modes:
real client processes, real upgrades and subscriptions, a publish reaching
everyone, and the report it writes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "bench" / "connections.py"


def test_the_connections_bench_runs_small_and_reports_every_subscriber(tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        pytest.fail("the benchmark pins its server and clients to two different cores")
    out = tmp_path / "connections.json"
    flags = "--connections 300 --clients 2 --sources 2 --keepalive-modes default,0"
    flags += " --idle 1 --publishes 2"
    done = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            *flags.split(),
            *("--server-cpu", str(cpus[0]), "--client-cpus", str(cpus[1])),
            *("--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    report = json.loads(out.read_text())
    assert [mode["keepalive"] for mode in report["modes"]] == ["default", "0"]
    for mode in report["modes"]:
        assert mode["ramp"]["subscribed"] == 300 and mode["ramp"]["failed"] == 0
        assert mode["ramp"]["accepts_per_s"] > 0
        assert 0 < mode["kb_per_connection"] < 64
        assert len(mode["publishes"]) == 2
        for publish in mode["publishes"]:
            assert publish["delivered"] == publish["expected"] == 300
            assert publish["kernel"]["n"] == 300
    assert done.stdout.count("publish->last median") == 2
