"""Counters for Prometheus and for tests: what is alive, what moved, how it closed.

Each server gets its own registry, so several servers in one process (tests,
embedding) never share numbers. The plain integer fields are the invariants
tests assert on: after every client is gone they must all return to zero.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import trio
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Count", "Metrics"]


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
    """Counts by one label's value, each made on first use."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        self._counts: dict[str, Count] = {}

    def __call__(self, value: str) -> Count:
        count = self._counts.get(value)
        if count is None:
            count = self._counts[value] = Count()
        return count

    def items(self) -> list[tuple[str, int]]:
        return [(value, count.value) for value, count in self._counts.items()]


#: Close codes counted under their own label: the ones RFC 6455 registers and
#: the ones either GraphQL protocol uses. Anything else a client picks is
#: bucketed, so a client cannot make thousands of label values.
_KNOWN_CLOSE_CODES = frozenset(range(1000, 1016)) | frozenset(
    {4400, 4401, 4403, 4406, 4408, 4409, 4429, 4499, 4500}
)


def close_code_label(code: int) -> str:
    """The ``code`` label for a close: the code itself if known, else its range."""
    if code in _KNOWN_CLOSE_CODES:
        return str(code)
    if 3000 <= code <= 3999:
        return "3xxx"
    if 4000 <= code <= 4999:
        return "4xxx"
    return "other"


class Metrics:
    """One server's counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active_by_protocol = Labelled()
        self.messages_in_by_protocol = Labelled()
        self.messages_out_by_protocol = Labelled()
        self.closes_by_code = Labelled()
        self.dropped_by_policy = Labelled()
        #: Invariants, readable without parsing Prometheus text.
        self.live_connections = 0
        self.live_operations = 0
        self.cleanups_run = 0
        self.operations_started = 0
        self._changed = trio.lowlevel.ParkingLot()
        self.registry.register(_Collector(self))

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
            (CounterMetricFamily, "meshsub_closes", "Connections closed, by close code",
             "code", m.closes_by_code),
            (CounterMetricFamily, "meshsub_dropped_events",
             "Events discarded by a subscriber's overflow policy", "policy", m.dropped_by_policy),
        )  # fmt: skip
        for kind, name, documentation, label, counts in labelled:
            family = kind(name, documentation, labels=[label])
            for value, count in counts.items():
                family.add_metric([value], count)
            yield family
        yield CounterMetricFamily(
            "meshsub_operation_cleanups", "Operation cleanups run", value=m.cleanups_run
        )
