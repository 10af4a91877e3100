"""Turning results into tables: absolute numbers, and meshsub-trio / peer ratios."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]


@dataclass(frozen=True)
class Metric:
    """One table column: one number, or two shown as ``a / b`` (p50 / p99)."""

    key: str
    label: str
    scenario: str
    paths: tuple[tuple[str, ...], ...]
    higher_is_better: bool
    fmt: Callable[[float], str]
    #: Whether the column appears in the ratio table too.
    ratio: bool = True


def _count(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:.0f}"


def _ms(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _kb(value: float) -> str:
    return f"{value:.1f}"


def _p50_p99(*phase: str) -> tuple[tuple[str, ...], ...]:
    return ((*phase, "p50_ms"), (*phase, "p99_ms"))


METRICS = [
    Metric("p1_rate", "P1 fan-out msg/s", "fanout", (("msgs_per_s",),), True, _count),
    Metric("p1_eff", "P1 msg/CPU-s", "fanout", (("msgs_per_cpu_s",),), True, _count),
    Metric("p1_lat", "P1 p50/p99 ms at ½ rate", "fanout", _p50_p99("latency"), False, _ms),
    Metric(
        "p1_lat_common",
        "P1 p50/p99 ms at 1k msg/s",
        "fanout",
        _p50_p99("latency_common"),
        False,
        _ms,
    ),
    Metric(
        "p1_gc",
        "P1 longest GC pause ms",
        "fanout",
        (("gc_max_pause_ms",),),
        False,
        _ms,
        ratio=False,
    ),
    Metric("p2_rate", "P2 distinct msg/s", "distinct", (("msgs_per_s",),), True, _count),
    Metric("p2_eff", "P2 msg/CPU-s", "distinct", (("msgs_per_cpu_s",),), True, _count),
    Metric("p2_lat", "P2 p50/p99 ms at ½ rate", "distinct", _p50_p99("latency"), False, _ms),
    Metric("p3_kb", "P3 KB/conn", "capacity", (("kb_per_conn",),), False, _kb),
    Metric("p4_rate", "P4 cycles/s", "churn", (("cycles_per_s",),), True, _count),
    Metric("p4_eff", "P4 cycles/CPU-s", "churn", (("cycles_per_cpu_s",),), True, _count),
    Metric("p4l_rate", "P4 live cycles/s", "churn-live", (("cycles_per_s",),), True, _count),
    Metric("p4l_eff", "P4 live cycles/CPU-s", "churn-live", (("cycles_per_cpu_s",),), True, _count),
]


def value(results: list[Result], server: str, metric: Metric) -> list[float] | None:
    """A metric's numbers for one server, or None when its run failed or was skipped."""
    for result in results:
        if result["server"] == server and result["scenario"] == metric.scenario:
            if not result.get("ok"):
                return None
            numbers = []
            for path in metric.paths:
                node: Any = result.get("metrics", {})
                for part in path:
                    node = node.get(part) if isinstance(node, dict) else None
                if not isinstance(node, int | float):
                    return None
                numbers.append(float(node))
            return numbers
    return None


def status(results: list[Result], server: str, metric: Metric) -> str:
    for result in results:
        if result["server"] == server and result["scenario"] == metric.scenario:
            return "FAILED" if not result.get("ok") else "-"
    return "-"


def _cell(results: list[Result], server: str, metric: Metric) -> str:
    numbers = value(results, server, metric)
    if numbers is None:
        return status(results, server, metric)
    return " / ".join(metric.fmt(n) for n in numbers)


def _ratio(mine: list[float] | None, theirs: list[float] | None) -> str:
    if not mine or not theirs or not all(theirs):
        return "-"
    return " / ".join(f"{a / b:.2f}" for a, b in zip(mine, theirs, strict=True))


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _text_table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    fmt = lambda row: "  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True))  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]


def _metrics_present(results: list[Result]) -> list[Metric]:
    scenarios = {result["scenario"] for result in results}
    return [metric for metric in METRICS if metric.scenario in scenarios]


def absolute_rows(
    results: list[Result], servers: list[tuple[str, str]]
) -> tuple[list[str], list[list[str]]]:
    metrics = _metrics_present(results)
    header = ["server", *(m.label for m in metrics), "load gen CPU"]
    rows = []
    for key, label in servers:
        loads = [
            r.get("metrics", {}).get("client_cpu")
            for r in results
            if r["server"] == key and r.get("ok")
        ]
        loads = [x for x in loads if isinstance(x, int | float)]
        client = f"{max(loads):.2f}" if loads else "-"
        rows.append([label, *(_cell(results, key, m) for m in metrics), client])
    return header, rows


Server = tuple[str, str]  # (key, label)
#: Which servers a ratio table divides: (numerator, denominator) rows.
Pairs = list[tuple[Server, Server]]


def ratio_rows(
    results: list[Result], title: str, pairs: Pairs
) -> tuple[list[str], list[list[str]]]:
    metrics = [m for m in _metrics_present(results) if m.ratio]
    header = [title, *(m.label for m in metrics)]
    rows = []
    for (mine, mine_label), (theirs, theirs_label) in pairs:
        row = [f"{mine_label} ÷ {theirs_label}"]
        for metric in metrics:
            row.append(_ratio(value(results, mine, metric), value(results, theirs, metric)))
        rows.append(row)
    return header, rows


def render(
    results: list[Result],
    servers: list[Server],
    sections: list[tuple[str, Pairs]],
    *,
    markdown: bool,
) -> list[str]:
    """The absolute table, then one ratio table per non-empty section."""
    table = _markdown_table if markdown else _text_table
    header, rows = absolute_rows(results, servers)
    lines = table(header, rows)
    for title, pairs in sections:
        if pairs:
            header, rows = ratio_rows(results, title, pairs)
            lines += ["", *table(header, rows)]
    return lines


DIRECTIONS = (
    "Ratios are meshsub-trio ÷ peer (TLS rows against TLS peers), then each variant ÷ the "
    "server it varies (TLS ÷ plaintext, SSE ÷ WebSocket): above 1 is better for msg/s, "
    "msg per CPU-s and cycles/s; below 1 is better for latency (ms) and KB/conn."
)
