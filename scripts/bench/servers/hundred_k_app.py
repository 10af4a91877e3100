"""A minimal meshsub-trio app for the 100k-connection bench (``connections.py``).

One subscription, ``tick { seq ts }``, fed by ``POST /publish`` (body: a JSON
object ``{"seq": int}``; the server stamps ``ts`` with ``time.time()`` when it
publishes). ``create_app`` shares the streamer (``share="events"``: one cohort,
one execution and one encoding per event for everyone);
``create_unshared_app`` runs one streamer and one execution per subscriber.

Run: ``meshsub-trio serve scripts.bench.servers.hundred_k_app:create_app`` (with
``scripts/bench`` on ``PYTHONPATH``: ``servers.hundred_k_app:create_app``).
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import orjson
import trio

from meshsub_trio import App, Context, HttpRequest, HttpResponse, Overflow, Streamer

SDL = """
type Query { ok: Boolean! }
type Tick { seq: Int! ts: Float! }
type Subscription { tick: Tick! }
"""

Emit = Callable[[Any], None]


class Hub:
    """Every running streamer's emit; ``publish`` calls each once and never waits."""

    def __init__(self) -> None:
        self.emits: set[Emit] = set()

    def publish(self, seq: int) -> int:
        value = {"seq": seq, "ts": time.time()}
        for emit in tuple(self.emits):
            try:
                emit(value)
            except Exception:
                self.emits.discard(emit)
        return len(self.emits)


class GcPauses:
    """Collector pauses by generation, from ``gc.callbacks`` (evidence for the bench):
    wall time (what the event loop lost) and the thread's CPU time (what the
    collector itself cost, whatever else ran on the core)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.started_cpu = 0.0
        self.count = [0, 0, 0]
        self.total = [0.0, 0.0, 0.0]
        self.total_cpu = [0.0, 0.0, 0.0]
        self.longest = [0.0, 0.0, 0.0]
        self.collected = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            self.started_cpu = time.thread_time()
            return
        generation = info["generation"]
        pause = time.perf_counter() - self.started
        self.total_cpu[generation] += time.thread_time() - self.started_cpu
        self.count[generation] += 1
        self.total[generation] += pause
        self.longest[generation] = max(self.longest[generation], pause)
        self.collected[generation] += info.get("collected", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total_s": [round(t, 4) for t in self.total],
            "total_cpu_s": [round(t, 4) for t in self.total_cpu],
            "longest_ms": [round(t * 1000, 2) for t in self.longest],
            "collected": self.collected,
        }


PAUSES = GcPauses()


def _freeze_after_older(phase: str, info: dict[str, int]) -> None:
    """Move what survived a gen1/gen2 collection to the permanent generation,
    so later full passes do not walk every live connection again."""
    if phase == "stop" and info["generation"] >= 1:
        gc.freeze()


@asynccontextmanager
async def _gc_experiment() -> AsyncIterator[None]:
    """``HUNDRED_K_GC="t0,t1,t2"`` sets the collector's thresholds after the
    server's own tuning; ``HUNDRED_K_FREEZE=1`` freezes survivors of older
    collections. Both are experiments for the bench, off by default."""
    thresholds = os.environ.get("HUNDRED_K_GC")
    if thresholds:
        t0, t1, t2 = (int(part) for part in thresholds.split(","))
        gc.set_threshold(t0, t1, t2)
    if os.environ.get("HUNDRED_K_FREEZE") == "1" and _freeze_after_older not in gc.callbacks:
        gc.callbacks.append(_freeze_after_older)
    yield


async def stats(request: HttpRequest) -> HttpResponse:
    """What the server holds: tasks, collector state and pauses, and (when the
    server runs with ``PYTHONTRACEMALLOC``) the top allocation sites."""
    body: dict[str, Any] = {
        "tasks": trio.lowlevel.current_statistics().tasks_living,
        "gc_counts": gc.get_count(),
        "gc_threshold": gc.get_threshold(),
        "gc_frozen": gc.get_freeze_count(),
        "gc_tracked": len(gc.get_objects()) if "objects" in request.query else None,
        "gc_pauses": PAUSES.as_dict(),
    }
    if tracemalloc.is_tracing():
        top = int(request.query.get("top", "25"))
        snapshot = tracemalloc.take_snapshot()
        body["traced_bytes"] = tracemalloc.get_traced_memory()[0]
        body["top"] = [
            {"where": str(stat.traceback[0]), "kb": round(stat.size / 1024, 1), "n": stat.count}
            for stat in snapshot.statistics("lineno")[:top]
        ]
    return HttpResponse(200, orjson.dumps(body))


def _build(share: str | None) -> App:
    if PAUSES not in gc.callbacks:
        gc.callbacks.append(PAUSES)
    hub = Hub()

    async def tick(_ctx: Context, _args: dict[str, Any], emit: Emit) -> None:
        hub.emits.add(emit)
        try:
            await trio.sleep_forever()
        finally:
            hub.emits.discard(emit)

    async def publish(request: HttpRequest) -> HttpResponse:
        try:
            seq = int(orjson.loads(request.body or b"{}").get("seq", 0))
        except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
            return HttpResponse(400, b'{"error":"body must be {\\"seq\\": int}"}')
        streams = hub.publish(seq)
        return HttpResponse(200, orjson.dumps({"seq": seq, "streams": streams}))

    options: dict[str, Any] = {"share": share} if share is not None else {}
    return App(
        SDL,
        resolvers={"Query": {"ok": lambda *_: True}},
        streamers={"tick": Streamer(tick, capacity=16, policy=Overflow.DROP_OLDEST, **options)},
        http_routes={"/publish": publish, "/debug/stats": stats},
        lifespan=_gc_experiment,
    )


def create_app() -> App:
    """The shared (cohort) variant: one execution and one encoding per event."""
    return _build("events")


def create_unshared_app() -> App:
    """One streamer run, one execution and one encoding per subscriber per event."""
    return _build(None)
