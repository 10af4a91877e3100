"""Reading a topic back from an in-process Meshery app's memory-broker log."""

from __future__ import annotations

from typing import Any

import trio

from meshsub_trio.brokers import Delivery, MemoryBroker
from meshsub_trio.meshery import MesheryApp


def broker_of(app: MesheryApp) -> MemoryBroker:
    assert isinstance(app.broker, MemoryBroker)
    return app.broker


async def replayed(app: MesheryApp, topic: str, after: int, count: int) -> list[Delivery[Any]]:
    """The first *count* deliveries of *topic* after *after*, from the broker's log."""
    got: list[Delivery[Any]] = []
    with trio.fail_after(5):
        async with broker_of(app).subscribe_log(topic, after=after) as log:
            while len(got) < count:
                got.append(await log.get())
    return got
