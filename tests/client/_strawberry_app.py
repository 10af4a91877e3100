"""A small Strawberry schema under hypercorn (asyncio), for the client's interop tests.

Run as ``python tests/client/_strawberry_app.py``: it listens on a free
loopback port, prints ``{"event": "ready", "port": N}``, and prints
``{"event": "stopped"}`` each time a subscription's generator is closed (the
client's ``complete``/``stop`` reached Strawberry). It exits when stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import AsyncGenerator

import strawberry
from hypercorn.asyncio import serve
from hypercorn.config import Config
from strawberry.asgi import GraphQL
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


@strawberry.type
class Query:
    @strawberry.field
    def hello(self) -> str:
        return "world"


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def count(self, to: int) -> AsyncGenerator[int, None]:
        for number in range(to):
            yield number

    @strawberry.subscription
    async def quiet(self) -> AsyncGenerator[int, None]:
        try:
            await asyncio.Event().wait()  # never set: nothing flows
            yield 0
        finally:
            say(event="stopped")


schema = strawberry.Schema(query=Query, subscription=Subscription)
app = GraphQL(schema, subscription_protocols=[GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_WS_PROTOCOL])


async def main() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.set_inheritable(True)
    config = Config()
    config.bind = [f"fd://{listener.fileno()}"]
    config.accesslog = None
    shutdown = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The test closes our stdin to stop us.
    loop.add_reader(sys.stdin.fileno(), lambda: sys.stdin.buffer.read1(1) or shutdown.set())
    server = asyncio.ensure_future(serve(app, config, shutdown_trigger=shutdown.wait))  # type: ignore[arg-type]
    say(event="ready", port=listener.getsockname()[1])
    await server


if __name__ == "__main__":
    asyncio.run(main())
