"""Optional: count the Python servers' garbage-collector pauses (``BENCH_GC_STATS=1``).

Prints one ``bench-gc: {...}`` JSON line to stderr at exit; the orchestrator
reads it from the server's log.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import sys
import time
from typing import Any


def install() -> None:
    """Start counting, if the environment asks for it."""
    if os.environ.get("BENCH_GC_STATS") != "1":
        return
    stats: dict[str, Any] = {"collections": [0, 0, 0], "pause_ms": [0.0, 0.0, 0.0]}
    stats["max_ms"] = [0.0, 0.0, 0.0]
    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            return
        generation = info["generation"]
        pause = (time.perf_counter() - started[0]) * 1000
        stats["collections"][generation] += 1
        stats["pause_ms"][generation] += pause
        stats["max_ms"][generation] = max(stats["max_ms"][generation], pause)

    def report() -> None:
        stats["pause_ms"] = [round(x, 1) for x in stats["pause_ms"]]
        stats["max_ms"] = [round(x, 1) for x in stats["max_ms"]]
        print("bench-gc: " + json.dumps(stats), file=sys.stderr, flush=True)

    gc.callbacks.append(on_gc)
    atexit.register(report)
