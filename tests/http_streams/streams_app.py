"""An app for the multipart and single-connection tests: finite, endless,
silent and failing subscriptions that record their cleanup, and optional
users (``Authorization: Bearer <name>``)."""

from __future__ import annotations

from typing import Any

import trio

from meshsub_trio import App, AuthError, Context

from .conftest import Tracker

SCHEMA = """
type Query { hello: String! }
type Subscription {
  countdown(to: Int!): Int!
  ticks(everyMs: Int = 10): Int!
  silent: Int
  failing: Int!
  blobs(size: Int!): String!
}
"""


def make_stream_app(tracker: Tracker, *, users: bool = False) -> App:
    def recorded(name: str, body: Any) -> Any:
        async def streamer(ctx: Context, args: dict[str, Any], emit: Any) -> None:
            try:
                await body(args, emit)
            finally:
                tracker.cleanups.append(name)

        return streamer

    async def countdown(args: dict[str, Any], emit: Any) -> None:
        for n in range(args["to"], -1, -1):
            emit(n)
            await trio.lowlevel.checkpoint()

    async def ticks(args: dict[str, Any], emit: Any) -> None:
        n = 0
        while True:
            emit(n)
            n += 1
            await trio.sleep(args["everyMs"] / 1000)

    async def silent(_args: dict[str, Any], _emit: Any) -> None:
        await trio.sleep_forever()

    async def failing(_args: dict[str, Any], emit: Any) -> None:
        emit(1)
        await trio.lowlevel.checkpoint()
        raise RuntimeError("the upstream went away")

    async def blobs(args: dict[str, Any], emit: Any) -> None:
        blob = "x" * args["size"]
        while True:
            emit(blob)
            await trio.lowlevel.checkpoint()

    async def authenticate(ctx: Context) -> str:
        header = ctx.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise AuthError("Unauthorized")
        return header.removeprefix("Bearer ")

    streamers = {"countdown": countdown, "ticks": ticks, "silent": silent, "failing": failing}
    streamers["blobs"] = blobs
    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _root, _info: "world"}},
        streamers={name: recorded(name, body) for name, body in streamers.items()},
        authenticate=authenticate if users else None,
    )
