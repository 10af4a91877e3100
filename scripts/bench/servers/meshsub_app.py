"""The bench workload as a meshsub-trio app.

``create_app`` serves it with one execution per subscriber; ``create_shared_app``
turns on cohort fan-out, ``Streamer(..., share=SHARE)``, and is the only
difference between the two variants. It refuses to start when this
meshsub-trio has no ``share`` option yet.

Run: ``python -m meshsub_trio serve servers.meshsub_app:create_app --port N --keepalive 0``
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio
from workload import BUFFER_CAPACITY, SDL, event, hello

from meshsub_trio import App, Context, Overflow, Streamer
from servers import gcstats

Emit = Any

gcstats.install()

#: The value passed as ``Streamer(share=...)`` by the shared variant.
SHARE = os.environ.get("MESHSUB_BENCH_SHARE", "events")


def share_supported() -> bool:
    """Whether this meshsub-trio's ``Streamer`` has a ``share`` option."""
    return any(f.name == "share" for f in dataclasses.fields(Streamer))


class Broadcaster:
    """Topics of emit callbacks; publishing never waits on a subscriber."""

    def __init__(self) -> None:
        self.topics: dict[str, set[Emit]] = {}
        self.next_id = 0
        self.nursery: trio.Nursery | None = None

    @contextmanager
    def subscribed(self, topic: str, emit: Emit) -> Iterator[None]:
        self.topics.setdefault(topic, set()).add(emit)
        try:
            yield
        finally:
            emits = self.topics.get(topic)
            if emits is not None:
                emits.discard(emit)
                if not emits:
                    del self.topics[topic]

    def start(self, count: int, rate: float | None, topic: str | None) -> int:
        """Begin publishing *count* events in the background; the first id."""
        assert self.nursery is not None, "lifespan not entered"
        first = self.next_id
        self.next_id += count
        self.nursery.start_soon(self._publish, first, count, rate, topic)
        return first

    async def _publish(self, first: int, count: int, rate: float | None, topic: str | None) -> None:
        start = trio.current_time()
        for index in range(count):
            if rate:
                await trio.sleep_until(start + index / rate)
            else:
                await trio.sleep(0)
            message = event(first + index, time.time())
            if topic is not None:
                groups = [self.topics.get(topic, set())]
            else:
                groups = list(self.topics.values())
            for emits in groups:
                for emit in tuple(emits):
                    try:
                        emit(message)
                    except Exception:
                        emits.discard(emit)


def _build(share: str | None) -> App:
    broadcaster = Broadcaster()

    async def events(_ctx: Context, args: dict[str, Any], emit: Emit) -> None:
        with broadcaster.subscribed(args["topic"], emit):
            greeting = hello(args["topic"])
            if greeting is not None:
                emit(greeting)
            await trio.sleep_forever()

    def publish(
        _root: Any, _info: Any, count: int, rate: float | None = None, topic: str | None = None
    ) -> int:
        return broadcaster.start(count, rate, topic)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            broadcaster.nursery = nursery
            yield
            nursery.cancel_scope.cancel()

    options: dict[str, Any] = {"share": share} if share is not None else {}
    streamer = Streamer(events, capacity=BUFFER_CAPACITY, policy=Overflow.CLOSE, **options)
    return App(
        SDL,
        resolvers={"Query": {"ok": lambda *_: True}, "Mutation": {"publish": publish}},
        streamers={"events": streamer},
        lifespan=lifespan,
    )


def create_app() -> App:
    """One GraphQL execution and one encoding per subscriber per event."""
    return _build(None)


def create_shared_app() -> App:
    """Cohort fan-out on: one execution and encoding per event per cohort."""
    if not share_supported():
        raise SystemExit("this meshsub-trio has no Streamer(share=...) option")
    return _build(SHARE)
