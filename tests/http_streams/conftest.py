"""An app for HTTP-stream tests: a query, a mutation, finite, endless and silent
subscriptions, each recording its own cleanup so tests can count them."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Context, Server
from meshsub_trio._wire._sse import SseEvent, SseParser

SCHEMA = """
type Query { hello: String! }
type Mutation { bump: Int! }
type Subscription {
  countdown(to: Int!): Int!
  ticks(everyMs: Int = 10): Int!
  silent: Int
  blobs(size: Int!): String!
}
"""

EVENT_STREAM = {"accept": "text/event-stream"}


class Tracker:
    """What the streamers saw: every ``finally`` appends here, once per run."""

    def __init__(self) -> None:
        self.cleanups: list[str] = []
        self.bumps = 0


def make_app(tracker: Tracker) -> App:
    async def countdown(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        try:
            for n in range(args["to"], -1, -1):
                emit(n)
                await trio.lowlevel.checkpoint()
        finally:
            tracker.cleanups.append("countdown")

    async def ticks(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        try:
            n = 0
            while True:
                emit(n)
                n += 1
                await trio.sleep(args["everyMs"] / 1000)
        finally:
            tracker.cleanups.append("ticks")

    async def silent(_ctx: Context, _args: dict[str, Any], _emit: Any) -> None:
        try:
            await trio.sleep_forever()
        finally:
            tracker.cleanups.append("silent")

    async def blobs(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        blob = "x" * args["size"]
        try:
            while True:
                emit(blob)
                await trio.lowlevel.checkpoint()
        finally:
            tracker.cleanups.append("blobs")

    def bump(_root: Any, _info: Any) -> int:
        tracker.bumps += 1
        return tracker.bumps

    return App(
        SCHEMA,
        resolvers={
            "Query": {"hello": lambda _root, _info: "world"},
            "Mutation": {"bump": bump},
        },
        streamers={"countdown": countdown, "ticks": ticks, "silent": silent, "blobs": blobs},
    )


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
async def sse_server(start_server: Callable[..., Awaitable[Server]], tracker: Tracker) -> Server:
    return await start_server(app=make_app(tracker))


async def all_cleaned_up(server: Server, timeout: float = 5.0) -> None:
    """Every started operation has run its cleanup (and nothing is live)."""
    with trio.fail_after(timeout):
        await server.metrics.wait_for(
            lambda m: m.live_operations == 0 and m.cleanups_run == m.operations_started
        )


class Events:
    """An open event stream's events, read as they come (each within 5 s)."""

    def __init__(self, response: httpx.Response) -> None:
        self._chunks = response.aiter_raw()
        self._parser = SseParser()
        self._ready: list[SseEvent] = []

    async def next(self) -> tuple[str, Any]:
        with trio.fail_after(5):
            while not self._ready:
                self._ready += self._parser.receive_data(await self._chunks.__anext__())
        event = self._ready.pop(0)
        return event.event, json.loads(event.data)
