"""What the client tests share: a reader of one stream, a notice log, Meshery helpers.

Every wait here is on data (a payload arriving, a notice) and bounded by
``trio.fail_after``; nothing sleeps to synchronise.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from meshsub_trio.client import (
    Client,
    ClientError,
    Connected,
    Disconnected,
    Notice,
    RetryPolicy,
    Subscription,
)

#: Generous bound for "arrives" (2 shared cores, several processes).
SOON = 15.0
#: Scheduling slack added to every stated bound.
SLACK = 0.5
GRAPHQL = "/api/system/graphql/query"
EVENTS = "subscription Events { subscribeEvents { id description } }"
#: Fast heartbeats: a dead server or a partition is noticed within 0.4 s.
PING, PONG = 0.2, 0.2
#: Fast, seeded retries for tests.
FAST_RETRY = RetryPolicy(base=0.05, cap=0.5, max_elapsed=30.0, stable_after=1.0)


def ws_url(port: int, path: str = GRAPHQL) -> str:
    return f"ws://127.0.0.1:{port}{path}"


def fast(**overrides: Any) -> dict[str, Any]:
    """``open_client`` options for tests: fast heartbeat and retries, seeded jitter."""
    options: dict[str, Any] = {
        "ping_interval": PING,
        "pong_timeout": PONG,
        "retry": FAST_RETRY,
        "connect_timeout": 3.0,
        "close_timeout": 1.0,
        "idle_timeout": 0.2,
        "rng": random.Random(7),
    }
    options.update(overrides)
    return options


@dataclass
class Notices:
    """Every notice a client gave, with the Trio time it came."""

    log: list[tuple[float, Notice]] = field(default_factory=list)
    _changed: trio.Event = field(default_factory=trio.Event)

    def __call__(self, notice: Notice) -> None:
        self.log.append((trio.current_time(), notice))
        self._changed.set()
        self._changed = trio.Event()

    def of(self, kind: type) -> list[tuple[float, Any]]:
        return [(at, n) for at, n in self.log if isinstance(n, kind)]

    def lost(self) -> list[tuple[float, Disconnected]]:
        """Disconnections the client did not ask for."""
        return [(at, n) for at, n in self.of(Disconnected) if not n.disconnect.by_client]

    async def wait(self, done: Callable[[Notices], bool], timeout: float = SOON) -> float:
        """Wait until *done*; return the time it became true."""
        with trio.fail_after(timeout):
            while not done(self):
                await self._changed.wait()
        return trio.current_time()

    async def wait_connected(self, count: int, timeout: float = SOON) -> float:
        return await self.wait(lambda n: len(n.of(Connected)) >= count, timeout)

    async def wait_lost(self, count: int, timeout: float = SOON) -> float:
        await self.wait(lambda n: len(n.lost()) >= count, timeout)
        return self.lost()[count - 1][0]


class Reader:
    """Reads one subscription in a task; tests wait on what it collected."""

    def __init__(self) -> None:
        self.payloads: list[dict[str, Any]] = []
        self.error: BaseException | None = None
        self.ended = False
        self.stream: Subscription | None = None
        self._changed = trio.Event()
        #: Set to make the consumer wait before each payload (a slow consumer).
        self.gate: trio.Event | None = None

    async def start(
        self, nursery: trio.Nursery, client: Client, query: str, **options: Any
    ) -> None:
        """Subscribe in a task of *nursery*; returns once the subscription is registered."""
        await nursery.start(partial(self.run, client, query, **options))

    async def run(
        self,
        client: Client,
        query: str,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        **options: Any,
    ) -> None:
        try:
            async with client.subscribe(query, **options) as stream:
                self.stream = stream
                task_status.started()
                async for payload in stream:
                    if self.gate is not None:
                        await self.gate.wait()
                    self.payloads.append(payload)
                    self._notify()
        except ClientError as error:
            self.error = error
        finally:
            self.ended = True
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, done: Callable[[Reader], bool], what: str, timeout: float = SOON) -> None:
        with trio.fail_after(timeout):
            while not done(self):
                if self.ended and not done(self):
                    raise AssertionError(f"the stream ended ({self.error!r}) before {what}")
                await self._changed.wait()

    async def wait_count(self, count: int, timeout: float = SOON) -> None:
        await self.wait(lambda r: len(r.payloads) >= count, f"{count} payloads", timeout)

    async def wait_ended(self, timeout: float = SOON) -> None:
        with trio.fail_after(timeout):
            while not self.ended:
                await self._changed.wait()

    def descriptions(self) -> list[str]:
        return [p["data"]["subscribeEvents"]["description"] for p in self.payloads]

    def cursors(self) -> list[int]:
        return [int(p["extensions"]["cursor"]) for p in self.payloads]


def assert_exactly(reader: Reader, expected: list[str]) -> None:
    """Every expected event once, in order, with strictly increasing cursors."""
    assert reader.descriptions() == expected, (len(reader.payloads), len(expected))
    cursors = reader.cursors()
    assert cursors == sorted(set(cursors)), cursors


def event(description: str) -> dict[str, str]:
    return {"severity": "informational", "description": description}


async def cancel_quietly(nursery: trio.Nursery) -> None:
    with suppress(trio.Cancelled):
        nursery.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()
