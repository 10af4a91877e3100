"""Per-event execution cost: graphql-core vs the compiled plan, per document.

Usage: ``.venv/bin/python scripts/bench_execution.py [--events N] [--repeat R]``

For the bench document (scripts/bench/workload.py) and each of the eight
Meshery UI subscription documents, one event value is executed over and over
the way the engine does it (graphql-core: ``build_per_event_executor`` +
``execute_operation``; compiled: ``Plan.run``), and the best of R runs of N
executions is reported in microseconds per event, with the ratio. The two
sides' runs alternate, so that load from other processes falls on both. The Meshery
values are the well-typed samples the differential tests draw (fixed seed),
and every value is first checked to give the same encoded response both ways.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "scripts" / "bench")]

from graphql import build_schema, parse  # noqa: E402
from graphql.execution.executor_throwing_on_incremental import (  # noqa: E402
    ExecutorThrowingOnIncremental,
)
from tests.execution.test_compiled_differential import outcome, typed  # noqa: E402
from tests.execution.test_compiled_documents import field_type  # noqa: E402
from tests.meshery.test_documents import UI_SUBSCRIPTIONS  # noqa: E402
from workload import SDL, SUBSCRIPTION, event  # noqa: E402

from meshsub_trio._encoding import dumps  # noqa: E402
from meshsub_trio._execution._compiler import compile_plan  # noqa: E402
from meshsub_trio.meshery import create_app  # noqa: E402


def best(runs: list[Callable[[], Any]], events: int, repeat: int) -> list[float]:
    """Best microseconds per call of each of *runs* over *repeat* rounds, each
    round timing *events* calls of every one in turn (GC off)."""
    timings: list[list[float]] = [[] for _ in runs]
    gc.disable()
    try:
        for _ in range(repeat):
            for run, times in zip(runs, timings, strict=True):
                started = time.perf_counter()
                for _ in range(events):
                    run()
                times.append((time.perf_counter() - started) / events * 1e6)
                gc.collect()
    finally:
        gc.enable()
    return [min(times) for times in timings]


def sample(strategy: Any, seed: int) -> Any:
    """One deterministic draw of *strategy*."""
    random.seed(seed)
    found: list[Any] = []

    from hypothesis import given, settings

    @settings(max_examples=1, database=None, derandomize=True)
    @given(strategy)
    def draw(value: Any) -> None:
        found.append(value)

    draw()
    return found[0]


def cases() -> list[tuple[str, Any, str, dict[str, Any], Any]]:
    bench = build_schema(SDL)
    rows = [("bench", bench, SUBSCRIPTION, {"topic": "t"}, {"events": event(1, time.time())})]
    meshery = create_app(simulator=False).schema
    for name in sorted(UI_SUBSCRIPTIONS):
        text, variables = UI_SUBSCRIPTIONS[name]
        value = sample(typed(field_type(name), clean=True), seed=1)
        rows.append((f"meshery:{name}", meshery, text, variables, value))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    options = parser.parse_args()
    print(f"{'document':<28} {'bytes':>6} {'graphql-core us':>16} {'compiled us':>12} {'ratio':>7}")
    for name, schema, text, variables, value in cases():
        executor = ExecutorThrowingOnIncremental.build(schema, parse(text), None, None, variables)
        assert not isinstance(executor, list), executor
        plan = compile_plan(executor)
        helpers = executor.async_helpers

        def core(executor: Any = executor, value: Any = value) -> Any:
            return executor.build_per_event_executor(value).execute_operation(False)

        def compiled(plan: Any = plan, value: Any = value, helpers: Any = helpers) -> Any:
            return plan.run(value, None, helpers)

        expected = outcome(core())
        assert outcome(compiled()) == expected, name
        assert b'"errors":[]' in expected, (name, expected[:200])
        slow, fast = best([core, compiled], options.events, options.repeat)
        size = len(dumps({"data": core().data}))
        print(f"{name:<28} {size:>6} {slow:>16.2f} {fast:>12.2f} {slow / fast:>6.1f}x")


if __name__ == "__main__":
    main()
