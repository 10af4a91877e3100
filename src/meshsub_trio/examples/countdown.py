"""The README's example: a finite stream, an infinite one, and a query.

Serve it with ``meshsub-trio serve meshsub_trio.examples.countdown:app``.
"""

from __future__ import annotations

from typing import Any

import trio

from meshsub_trio import App, Context

SCHEMA = """
type Query { hello: String! }
type Subscription {
  countdown(to: Int!): Int!
  ticks(everyMs: Int = 50): Int!
}
"""


async def countdown(ctx: Context, args: dict[str, Any], emit: Any) -> None:
    """Emit to, to-1, ..., 0, then return: the client gets ``complete``."""
    for n in range(args["to"], -1, -1):
        emit(n)
        await trio.sleep(0.01)


async def ticks(ctx: Context, args: dict[str, Any], emit: Any) -> None:
    """Emit 0, 1, 2, ... forever, until the client or the server stops it."""
    n = 0
    while True:
        emit(n)
        n += 1
        await trio.sleep(max(args["everyMs"], 1) / 1000)


app = App(
    SCHEMA,
    resolvers={"Query": {"hello": lambda _root, _info: "Hello from meshsub-trio"}},
    streamers={"countdown": countdown, "ticks": ticks},
)
