"""Counters for Prometheus and for tests: what is alive, what moved, how it closed.

Each server gets its own registry, so several servers in one process (tests,
embedding) never share numbers. The plain integer fields are the invariants
tests assert on: after every client is gone they must all return to zero.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]


class _Children:
    """A labelled metric's children by label value, looked up once each.

    ``labels()`` validates and locks on every call; a connection's life calls
    it several times, so the children are kept here (they never change).
    """

    __slots__ = ("_children", "_label", "_metric")

    def __init__(self, metric: Any, label: str) -> None:
        self._metric = metric
        self._label = label
        self._children: dict[str, Any] = {}

    def __call__(self, value: str) -> Any:
        child = self._children.get(value)
        if child is None:
            child = self._children[value] = self._metric.labels(**{self._label: value})
        return child


class Metrics:
    """One server's counters."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.connections = Gauge(
            "meshsub_connections", "Open WebSocket connections", registry=self.registry
        )
        self.active_operations = Gauge(
            "meshsub_active_operations",
            "Running operations by protocol",
            ["protocol"],
            registry=self.registry,
        )
        self.messages_in = Counter(
            "meshsub_messages_in", "Messages received", ["protocol"], registry=self.registry
        )
        self.messages_out = Counter(
            "meshsub_messages_out", "Messages sent", ["protocol"], registry=self.registry
        )
        self.closes = Counter(
            "meshsub_closes", "Connections closed, by close code", ["code"], registry=self.registry
        )
        self.dropped_events = Counter(
            "meshsub_dropped_events",
            "Events discarded by a subscriber's overflow policy",
            ["policy"],
            registry=self.registry,
        )
        self.cleanups = Counter(
            "meshsub_operation_cleanups", "Operation cleanups run", registry=self.registry
        )
        self.active_by_protocol = _Children(self.active_operations, "protocol")
        self.messages_in_by_protocol = _Children(self.messages_in, "protocol")
        self.messages_out_by_protocol = _Children(self.messages_out, "protocol")
        self.closes_by_code = _Children(self.closes, "code")
        #: Invariants, readable without parsing Prometheus text.
        self.live_connections = 0
        self.live_operations = 0
        self.cleanups_run = 0
        self.operations_started = 0
        self._changed = trio.lowlevel.ParkingLot()

    def connection_opened(self) -> None:
        self.live_connections += 1
        self.connections.inc()
        self._changed.unpark_all()

    def connection_closed(self, code: int) -> None:
        self.live_connections -= 1
        self.connections.dec()
        self.closes_by_code(str(code)).inc()
        self._changed.unpark_all()

    def operation_started(self, protocol: str) -> None:
        self.live_operations += 1
        self.operations_started += 1
        self.active_by_protocol(protocol).inc()
        self._changed.unpark_all()

    def operation_finished(self, protocol: str) -> None:
        self.live_operations -= 1
        self.cleanups_run += 1
        self.active_by_protocol(protocol).dec()
        self.cleanups.inc()
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
