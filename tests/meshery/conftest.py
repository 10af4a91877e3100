"""Helpers for driving the Meshery model, streamers and app without a network."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing

from meshsub_trio import Context, MemoryBroker, Streamer
from meshsub_trio.meshery import LOCAL_USER, Model, User
from meshsub_trio.meshery._api._streamers import make_streamers
from meshsub_trio.meshery._model._timefmt import format_time

ALICE = User("alice-id", "alice", "Meshery")
BOB = User("bob-id", "bob", "Meshery")


def ticking_clock(start: datetime = datetime(2024, 5, 1, tzinfo=UTC)) -> Callable[[], str]:
    """A ``now`` that advances one second per call: ordered, repeatable timestamps."""
    seconds = itertools.count()
    return lambda: format_time(start + timedelta(seconds=next(seconds)))


def counting_ids(prefix: str = "id") -> Callable[[], str]:
    numbers = itertools.count(1)
    return lambda: f"{prefix}-{next(numbers):04d}"


class RecordingBroker(MemoryBroker):
    """A MemoryBroker that also keeps every (topic, message) published."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[tuple[str, Any]] = []

    def publish(self, topic: str, message: Any) -> None:
        self.log.append((topic, message))
        super().publish(topic, message)

    def topics(self) -> list[str]:
        return [topic for topic, _ in self.log]


class Collector:
    """A list-append ``emit`` that tests can wait on (Trio events, no sleeps)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        #: The cursor emitted with each item (None when it had none).
        self.cursors: list[str | int | None] = []
        self._changed = trio.Event()

    def emit(self, value: Any, cursor: str | int | None = None) -> None:
        self.items.append(value)
        self.cursors.append(cursor)
        self._changed.set()

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Any]:
        with trio.fail_after(timeout):
            while len(self.items) < count:
                self._changed = trio.Event()
                await self._changed.wait()
        return self.items


class StreamerRun:
    """One streamer running in a cancel scope, with its emissions and outcome."""

    def __init__(self, collector: Collector) -> None:
        self.collector = collector
        self.scope = trio.CancelScope()
        self.error: BaseException | None = None
        self.done = trio.Event()

    @property
    def items(self) -> list[Any]:
        return self.collector.items

    async def wait_for(self, count: int, timeout: float = 5.0) -> list[Any]:
        return await self.collector.wait_for(count, timeout)

    def cancel(self) -> None:
        self.scope.cancel()


async def settle() -> None:
    """Let every task run until all are blocked (the streamer is now waiting)."""
    await trio.testing.wait_all_tasks_blocked()


@pytest.fixture
def broker() -> RecordingBroker:
    return RecordingBroker()


@pytest.fixture
def model(broker: RecordingBroker) -> Model:
    return Model(broker, now=ticking_clock(), new_id=counting_ids(), system_id="system-1")


@pytest.fixture
def streamers(model: Model) -> dict[str, Streamer]:
    return make_streamers(model)


@pytest.fixture
def start(nursery: trio.Nursery, streamers: dict[str, Streamer]) -> Callable[..., Any]:
    """``await start(field, args, user=...)`` -> a running :class:`StreamerRun`."""

    async def _start(field: str, args: dict[str, Any], user: User = LOCAL_USER) -> StreamerRun:
        run = StreamerRun(Collector())
        ctx = Context(auth=user, protocol="graphql-transport-ws")

        async def body() -> None:
            try:
                with run.scope:
                    await streamers[field].fn(ctx, args, run.collector.emit)
            except Exception as error:
                run.error = error
            finally:
                run.done.set()

        nursery.start_soon(body)
        await settle()
        return run

    return _start


PAGE = {"page": "0", "pageSize": "10"}
