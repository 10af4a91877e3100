"""The bench workload on Strawberry (graphql-transport-ws) served by uvicorn.

Each subscriber gets its own ``asyncio.Queue``; the publisher puts one shared
``Event`` object into every queue, so Strawberry executes and encodes per
subscriber, which is how it works.

Run: ``python -m servers.strawberry_server --port N``
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncGenerator

import strawberry
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from workload import BUFFER_CAPACITY, PAYLOAD, hello

from servers import gcstats
from servers.asgi_common import serve


@strawberry.type
class Event:
    id: int
    ts: float
    payload: str


class Broadcaster:
    """Topics of subscriber queues, fed by background publish tasks."""

    def __init__(self) -> None:
        self.topics: dict[str, set[asyncio.Queue[Event]]] = {}
        self.next_id = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def start(self, count: int, rate: float | None, topic: str | None) -> int:
        first = self.next_id
        self.next_id += count
        task = asyncio.get_running_loop().create_task(self._publish(first, count, rate, topic))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return first

    async def _publish(self, first: int, count: int, rate: float | None, topic: str | None) -> None:
        loop = asyncio.get_running_loop()
        start = loop.time()
        for index in range(count):
            if rate:
                await asyncio.sleep(max(0.0, start + index / rate - loop.time()))
            else:
                await asyncio.sleep(0)
            message = Event(id=first + index, ts=time.time(), payload=PAYLOAD)
            groups = [self.topics.get(topic, set())] if topic is not None else self.topics.values()
            for queues in list(groups):
                for queue in tuple(queues):
                    queue.put_nowait(message)


BROADCASTER = Broadcaster()


@strawberry.type
class Query:
    ok: bool = True


@strawberry.type
class Mutation:
    @strawberry.mutation
    def publish(self, count: int, rate: float | None = None, topic: str | None = None) -> int:
        return BROADCASTER.start(count, rate, topic)


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def events(self, topic: str) -> AsyncGenerator[Event, None]:
        queue: asyncio.Queue[Event] = asyncio.Queue(BUFFER_CAPACITY)
        BROADCASTER.topics.setdefault(topic, set()).add(queue)
        try:
            greeting = hello(topic)
            if greeting is not None:
                yield Event(**greeting)  # type: ignore[arg-type]
            while True:
                yield await queue.get()
        finally:
            queues = BROADCASTER.topics.get(topic)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del BROADCASTER.topics[topic]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    gcstats.install()
    schema = strawberry.Schema(query=Query, mutation=Mutation, subscription=Subscription)
    app = GraphQL(schema, subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL], graphql_ide=None)
    serve(app, args.port)


if __name__ == "__main__":
    main()
