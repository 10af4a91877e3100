"""Counters for Prometheus and for tests: what is alive, what moved, how it closed.

Each server gets its own registry, so several servers in one process (tests,
embedding) never share numbers. The plain integer fields are the invariants
tests assert on: after every client is gone they must all return to zero.

Every labelled series whose label values are known in advance (protocols,
every kind of sink, overflow policies, where auth failed, fast-path
fallbacks, operation types, the close codes the server itself sends) exists
from the start at zero, so a dashboard sees 0 rather than "no data".
Histograms are fixed buckets of plain ints, like the counters: no lock, read
when scraped. An app adds its own families with :meth:`Metrics.add_source`
(a callable read when scraped, e.g. ``MesheryApp.metric_families``).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ._wire import SUPPORTED, CloseCode
from .brokers._buffer import Overflow

__all__ = ["CONTENT_TYPE_LATEST", "Count", "Histogram", "Metrics"]


class Count:
    """One number, bumped without a lock: every bump happens on the Trio thread.

    prometheus-client's own metrics take a lock on every ``inc``; a
    connection's life bumps about ten of them, so the server keeps plain
    numbers and the registry reads them when scraped.
    """

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def dec(self, amount: int = 1) -> None:
        self.value -= amount


class Labelled:
    """Counts by one label's value: *known* ones from the start (at zero), others on first use.

    *shown* values are only rendered at zero until first used: they are not
    counts yet, so :meth:`items` (what tests read) lists what happened.
    """

    __slots__ = ("_counts", "_shown")

    def __init__(self, known: Iterable[str] = (), *, shown: Iterable[str] = ()) -> None:
        self._counts: dict[str, Count] = {value: Count() for value in known}
        self._shown = tuple(shown)

    def __call__(self, value: str) -> Count:
        count = self._counts.get(value)
        if count is None:
            count = self._counts[value] = Count()
        return count

    def items(self) -> list[tuple[str, int]]:
        return [(value, count.value) for value, count in self._counts.items()]

    def series(self) -> list[tuple[str, int]]:
        """What /metrics shows: every count, and a zero for each *shown* value not used yet."""
        counts = self._counts
        zeros = [(value, 0) for value in self._shown if value not in counts]
        return [*self.items(), *zeros]


class Histogram:
    """Observations in fixed buckets: one list of ints, bumped without a lock.

    ``observe`` is a bisection and two additions; *n* observes the same value
    several times at once (a fan-out writing one burst to many members).
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        #: One count per bucket (``value <= bound``), then the +Inf overflow.
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.bounds, value)] += n
        self.sum += value * n

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, as Prometheus wants them."""
        total = 0
        out: list[tuple[str, float]] = []
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(bound), total))
        return out


#: Seconds, from a streamer's ``emit`` to the socket write: sub-millisecond on
#: an idle server, tens of milliseconds when a socket or the loop is busy.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Seconds executing one document or one event (graphql-core: ~40 us an event).
EXECUTION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
#: Seconds an operation lived: a query's milliseconds to a subscription's hours.
DURATION_BUCKETS = (0.001, 0.01, 0.1, 1.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0)

#: Overflow policies, the default (drop_oldest) first.
POLICIES = (Overflow.DROP_OLDEST.value, Overflow.COALESCE.value, Overflow.CLOSE.value)
#: Where an authentication failed: a WebSocket's init, an HTTP request, /metrics.
AUTH_PLACES = ("ws", "http", "metrics")
#: Where a value left the fast path (written at once by its producer) to wait:
#: a private stream's pump, a cohort member's buffer, a connection's outbox.
FALLBACKS = ("pump", "member_buffer", "outbox")
#: Where operations are delivered, as the ``protocol`` label names them: the
#: WebSocket subprotocols, then every HTTP sink (SSE, multipart, long-poll).
TRANSPORTS = (*SUPPORTED, "sse", "multipart", "poll")
#: Operation types, as GraphQL names them (a subscription's events each count).
OPERATION_TYPES = ("query", "mutation", "subscription")


#: Close codes counted under their own label: the ones RFC 6455 registers and
#: the ones either GraphQL protocol uses. Anything else a client picks is
#: bucketed, so a client cannot make thousands of label values.
_KNOWN_CLOSE_CODES = frozenset(range(1000, 1016)) | frozenset(
    {4400, 4401, 4403, 4406, 4408, 4409, 4429, 4499, 4500}
)
#: Close codes shown at zero from the start: every one the server itself
#: closes with (and 1006, a peer that vanished), a fixed set no client can grow.
SERVER_CLOSE_CODES = tuple(sorted(str(int(code)) for code in CloseCode))


def close_code_label(code: int) -> str:
    """The ``code`` label for a close: the code itself if known, else its range."""
    if code in _KNOWN_CLOSE_CODES:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


class CompiledCounts(Protocol):
    """What compiled execution counts (``_execution._plans.Plans``), read when scraped."""

    compiled_events: int
    fallback_events: int
    refused: int
    bailed: int


#: Compiled-execution counters on /metrics: (name, help, attribute).
_COMPILED = (
    ("meshsub_compiled_events",
     "Executions (queries, mutations, events) run by a compiled plan", "compiled_events"),
    ("meshsub_compiled_fallbacks",
     "Events graphql-core ran while compiled execution was on", "fallback_events"),
    ("meshsub_compiled_plans_refused",
     "Documents the compiler left to graphql-core (unsupported constructs)", "refused"),
    ("meshsub_compiled_bailouts",
     "Plans that moved to graphql-core mid-run (none: async runs in plans)", "bailed"),
)  # fmt: skip


class Metrics:
    """One server's counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active_by_protocol = Labelled(TRANSPORTS)
        self.messages_in_by_protocol = Labelled(SUPPORTED)
        self.messages_out_by_protocol = Labelled(TRANSPORTS)
        #: Operations started, by protocol (counted once each, not per event).
        self.operations_by_protocol = Labelled(TRANSPORTS)
        # The codes the server sends are shown at zero; any other is made on
        # first use, and a client's own codes are bucketed (close_code_label).
        self.closes_by_code = Labelled(shown=SERVER_CLOSE_CODES)
        #: Overflow actions as they happen (a discarded or coalesced event, a
        #: stream closed for falling behind), by the subscriber's policy.
        self.dropped_by_policy = Labelled(POLICIES)
        self.auth_failures = Labelled(AUTH_PLACES)
        self.fallbacks = Labelled(FALLBACKS)
        #: From a streamer's ``emit`` to the write of the frame (per subscriber).
        self.delivery_latency = Histogram(LATENCY_BUCKETS)
        #: Executing one query, mutation, or one subscription event.
        self.execution_time = {kind: Histogram(EXECUTION_BUCKETS) for kind in OPERATION_TYPES}
        #: The per-event one, without a dict lookup on the hot path.
        self.event_execution = self.execution_time["subscription"]
        #: An operation's whole life, from its request to its cleanup.
        self.operation_duration = Histogram(DURATION_BUCKETS)
        #: Invariants, readable without parsing Prometheus text.
        #: The engine's compiled-execution counters (set by the server state).
        self.compiled: CompiledCounts | None = None
        self.live_connections = 0
        self.live_operations = 0
        self.cleanups_run = 0
        self.operations_started = 0
        self._changed = trio.lowlevel.ParkingLot()
        #: The app's own families, read when scraped (see :meth:`add_source`).
        self.sources: list[Callable[[], Iterable[Metric]]] = []
        self.registry.register(_Collector(self))

    def add_source(self, families: Callable[[], Iterable[Metric]]) -> None:
        """Export what *families()* returns on every scrape, after the server's own."""
        self.sources.append(families)

    def connection_opened(self) -> None:
        self.live_connections += 1
        self._notify()

    def connection_closed(self, code: int) -> None:
        self.live_connections -= 1
        self.closes_by_code(close_code_label(code)).inc()
        self._notify()

    def operation_started(self, protocol: str) -> None:
        self.live_operations += 1
        self.operations_started += 1
        self.active_by_protocol(protocol).inc()
        self.operations_by_protocol(protocol).inc()
        self._notify()

    def operation_finished(self, protocol: str) -> None:
        self.live_operations -= 1
        self.cleanups_run += 1
        self.active_by_protocol(protocol).dec()
        self._notify()

    def _notify(self) -> None:
        if self._changed:  # someone is waiting (tests, mostly)
            self._changed.unpark_all()

    async def wait_for(self, predicate: Callable[[Metrics], bool]) -> None:
        """Wait until *predicate(self)* holds: tests synchronise on this, never on sleeps."""
        while not predicate(self):
            await self._changed.park()

    async def wait_idle(self) -> None:
        """Wait until no connection and no operation is alive."""
        await self.wait_for(lambda m: m.live_connections == 0 and m.live_operations == 0)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _Collector:
    """Reads a :class:`Metrics` into Prometheus families when scraped."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield GaugeMetricFamily(
            "meshsub_connections", "Open WebSocket connections", value=m.live_connections
        )
        labelled = (
            (GaugeMetricFamily, "meshsub_active_operations", "Running operations by protocol",
             "protocol", m.active_by_protocol),
            (CounterMetricFamily, "meshsub_messages_in", "Messages received",
             "protocol", m.messages_in_by_protocol),
            (CounterMetricFamily, "meshsub_messages_out", "Messages sent",
             "protocol", m.messages_out_by_protocol),
            (CounterMetricFamily, "meshsub_operations", "Operations started, by protocol",
             "protocol", m.operations_by_protocol),
            (CounterMetricFamily, "meshsub_closes", "Connections closed, by close code",
             "code", m.closes_by_code),
            (CounterMetricFamily, "meshsub_dropped_events",
             "Events discarded by a subscriber's overflow policy", "policy", m.dropped_by_policy),
            (CounterMetricFamily, "meshsub_auth_failures",
             "Refused authentications, by where", "where", m.auth_failures),
            (CounterMetricFamily, "meshsub_fallbacks",
             "Values that left the direct write path to wait (backpressure), by where",
             "path", m.fallbacks),
        )  # fmt: skip
        for kind, name, documentation, label, counts in labelled:
            family = kind(name, documentation, labels=[label])
            for value, count in counts.series():
                family.add_metric([value], count)
            yield family
        yield CounterMetricFamily(
            "meshsub_operation_cleanups", "Operation cleanups run", value=m.cleanups_run
        )
        latency = HistogramMetricFamily(
            "meshsub_delivery_latency_seconds",
            "From a streamer's emit to the socket write of the frame, per subscriber",
        )
        latency.add_metric([], m.delivery_latency.buckets(), m.delivery_latency.sum)
        yield latency
        execution = HistogramMetricFamily(
            "meshsub_execution_seconds",
            "Executing a query or mutation, or one subscription event",
            labels=["operation_type"],
        )
        for operation_type, histogram in m.execution_time.items():
            execution.add_metric([operation_type], histogram.buckets(), histogram.sum)
        yield execution
        duration = HistogramMetricFamily(
            "meshsub_operation_duration_seconds", "Operations' lives, from request to cleanup"
        )
        duration.add_metric([], m.operation_duration.buckets(), m.operation_duration.sum)
        yield duration
        for name, documentation, attribute in _COMPILED:
            total: int = getattr(m.compiled, attribute) if m.compiled is not None else 0
            yield CounterMetricFamily(name, documentation, value=total)
        for source in m.sources:
            yield from source()
