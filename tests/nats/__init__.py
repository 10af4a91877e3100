"""NatsBroker against a real nats-server (no mocks), plus the shared log contract.

Helpers live here because this package has no conftest of its own: test
modules import what they use, including the ``nats_server`` fixture.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from meshsub_trio.brokers import ConnectionState, LogStream, NatsBroker
from meshsub_trio.testing import NatsServer

#: Generous bound for "arrives"; every wait in these tests is bounded.
SOON = 10.0


@asynccontextmanager
async def connect(server: NatsServer, **options: Any) -> AsyncIterator[NatsBroker]:
    """A broker with test-friendly timings: fast reconnects and heartbeats."""
    options.setdefault("reconnect_wait", 0.1)
    options.setdefault("log", LogStream(name="MESHERY", subjects=("meshery.>",), heartbeat=0.5))
    async with NatsBroker.connect(server.url, **options) as broker:
        yield broker


async def take(buffer: Any, count: int, timeout: float = SOON) -> list[Any]:
    """The next *count* items of *buffer*, or fail after *timeout*."""
    items: list[Any] = []
    with trio.fail_after(timeout):
        while len(items) < count:
            items.append(await buffer.get())
    return items


async def wait_for_state(broker: Any, state: ConnectionState, timeout: float = SOON) -> None:
    with trio.fail_after(timeout):
        seen = broker.state
        while seen is not state:
            seen = await broker.wait_state_change(seen)

