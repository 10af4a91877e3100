"""The bench workload over a broker: what ``scripts/bench/workers.py`` serves.

The schema and the checks are ``workload.py``'s (the load generator is the
same), but events travel through the app's broker instead of an in-process
list of callbacks: a ``MemoryBroker`` for one process, the ``NatsBroker`` that
``meshsub-trio serve --broker nats://...`` (or ``--workers N``) passes the
factory. The subscription code is the same in both: one ``broker.subscribe``
per subscriber (the NATS broker keeps ONE NATS subscription per topic per
process, or one for all of ``PREFIX.*`` with ``MESHSUB_BENCH_SHARED=1``, and
fans out locally), so the difference between the rows is the trip through
nats-server and nothing else.

``publish(count, rate, topic)`` publishes a whole burst from ONE request, so
the publisher is never what limits a run. Two things a lone process knows and
N workers do not are shared explicitly:

* event ids increase by one across calls, whichever worker takes the
  request: the next id is a counter in a file locked with ``flock``
  (``MESHSUB_BENCH_IDS``; one machine only, which is what the bench runs);
* ``topic: null`` means every topic anyone subscribed to: a worker announces
  each new topic on a control subject and every worker collects them.

Subjects are ``MESHSUB_BENCH_SUBJECTS.<topic>`` (default ``meshery.bench``:
inside the MESHERY JetStream stream, so nats-server also appends every event
to the log, as it does for every change of the Meshery app; set another prefix
to measure core NATS alone).

Run: ``meshsub-trio serve servers.workers_app:create_app --port 0 --keepalive 0``
with ``scripts/bench`` on ``PYTHONPATH``.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from workload import BUFFER_CAPACITY, SDL, event

from meshsub_trio import App, Context, Overflow, Streamer
from meshsub_trio.brokers import MemoryBroker

PREFIX = os.environ.get("MESHSUB_BENCH_SUBJECTS", "meshery.bench")
CONTROL = "control-topics"
#: Events published between two checkpoints, each to every target topic
#: (``MESHSUB_BENCH_BURST``; 1 is what ``meshsub_app.py`` does). Subscribers
#: run between checkpoints, so this is how many events each can take in one
#: wake-up: the NATS path batches by itself (its fan-out takes up to 256
#: messages per checkpoint), the memory broker only as much as this allows.
ROUNDS_PER_CHECKPOINT = max(1, int(os.environ.get("MESHSUB_BENCH_BURST", "1")))
#: ``MESHSUB_BENCH_SHARED=1``: every ``PREFIX.*`` topic goes through ONE NATS
#: subscription per process (``NatsBroker.share_subscription``) instead of one
#: per topic; 0 measures one subscription per topic.
SHARED = os.environ.get("MESHSUB_BENCH_SHARED", "1") == "1"


class IdCounter:
    """The next event id, shared by every process given the same file."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.next_id = 0

    def take(self, count: int) -> int:
        if self.path is None:
            first, self.next_id = self.next_id, self.next_id + count
            return first
        with open(self.path, "a+") as file:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX)
            file.seek(0)
            first = int(file.read().strip() or 0)
            file.seek(0)
            file.truncate()
            file.write(str(first + count))
            file.flush()
        return first


class Publisher:
    """Bursts to the broker from a background task; the topics anyone subscribed to."""

    def __init__(self, broker: Any) -> None:
        self.broker = broker
        self.ids = IdCounter(os.environ.get("MESHSUB_BENCH_IDS"))
        self.topics: set[str] = set()
        self.announced: set[str] = set()
        self.nursery: trio.Nursery | None = None
        self.queue_waits = 0

    def announce(self, topic: str) -> None:
        if topic not in self.announced:
            self.announced.add(topic)
            self.topics.add(topic)
            self.broker.publish(f"{PREFIX}.{CONTROL}", topic)

    async def collect(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Every worker's announced topics (this one's too: they come back through the bus)."""
        async with self.broker.subscribe(
            f"{PREFIX}.{CONTROL}", capacity=BUFFER_CAPACITY, policy=Overflow.CLOSE
        ) as buffer:
            task_status.started()
            async for topic in buffer:
                self.topics.add(topic)

    def start(self, count: int, rate: float | None, topic: str | None) -> int:
        assert self.nursery is not None, "lifespan not entered"
        first = self.ids.take(count)
        targets = [topic] if topic is not None else sorted(self.topics)
        subjects = [f"{PREFIX}.{name}" for name in targets]
        self.nursery.start_soon(self._publish, first, count, rate, subjects)
        return first

    async def _publish(
        self, first: int, count: int, rate: float | None, subjects: list[str]
    ) -> None:
        start = trio.current_time()
        for index in range(count):
            if rate:
                await trio.sleep_until(start + index / rate)
            elif index % ROUNDS_PER_CHECKPOINT == 0:
                await trio.sleep(0)
            message = event(first + index, time.time())
            for subject in subjects:
                await self._put(subject, message)

    async def _put(self, subject: str, message: dict[str, object]) -> None:
        while True:
            try:
                self.broker.publish(subject, message)
                return
            except Exception as error:  # PublishQueueFull: let the outbox drain
                if type(error).__name__ != "PublishQueueFull":
                    raise
                self.queue_waits += 1
                await self.broker.flush()


def create_app(broker: Any = None) -> App:
    """The workload on *broker* (the NATS one from ``--broker``), else on memory."""
    own_broker = broker is None
    bus = MemoryBroker(log_capacity=0) if own_broker else broker
    if SHARED and hasattr(bus, "share_subscription"):
        bus.share_subscription(f"{PREFIX}.*")
    publisher = Publisher(bus)

    async def events(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        topic = args["topic"]
        async with bus.subscribe(
            f"{PREFIX}.{topic}", capacity=BUFFER_CAPACITY, policy=Overflow.CLOSE
        ) as buffer:
            publisher.announce(topic)
            while True:
                emit(await buffer.get())
                while True:  # what is already buffered goes out without a checkpoint each
                    try:
                        emit(buffer.get_nowait())
                    except trio.WouldBlock:
                        break

    def publish(
        _root: Any, _info: Any, count: int, rate: float | None = None, topic: str | None = None
    ) -> int:
        return publisher.start(count, rate, topic)

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        async with trio.open_nursery() as nursery:
            await nursery.start(publisher.collect)
            publisher.nursery = nursery
            yield
            nursery.cancel_scope.cancel()
        if own_broker:
            bus.close()
        else:  # in the server log: did the inbound hop ever wait, did anything drop?
            logging.getLogger(__name__).warning("bench broker stats %s", broker.stats())

    streamer = Streamer(events, capacity=BUFFER_CAPACITY, policy=Overflow.CLOSE)
    return App(
        SDL,
        resolvers={"Query": {"ok": lambda *_: True}, "Mutation": {"publish": publish}},
        streamers={"events": streamer},
        lifespan=lifespan,
    )
