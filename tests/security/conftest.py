"""Attacks over real sockets, each with a bystander who must keep streaming.

``bystander(port)`` opens an ordinary client on the same server that
subscribes to ``ticks`` (every 10 ms; or *query*, which must stream often) before the attack starts. When the
``async with`` ends it checks that ticks kept arriving throughout: no gap
longer than ``max_gap`` seconds, so an attack that blocks the event loop or
starves other clients fails the test even if it is refused in the end.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import pytest
import trio

from ..wsclient import TRANSPORT, open_raw_client

T = TypeVar("T")


@pytest.fixture(autouse=True, scope="package")
def frozen_heap() -> Iterator[None]:
    """Freeze what earlier tests left on the heap, as ``meshsub-trio serve``
    freezes what start-up built.

    The server under attack shares this process with every test before it. In
    a full run the cyclic collector's passes over that heap took up to ~1 s,
    landing in the bystander's gaps and in refusal deadlines, which no real
    server would see. Once for the package: a collection of a large heap takes
    about half a second.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


TICKS = "subscription { ticks(everyMs: 10) }"


class Bystander:
    """Counts the ticks a well-behaved client receives, and the longest gap."""

    def __init__(self) -> None:
        self.received = 0
        self.longest_gap = 0.0
        self.ticked = trio.Event()


@asynccontextmanager
async def bystander(
    port: int,
    *,
    path: str = "/ws",
    query: str = TICKS,
    max_gap: float = 0.5,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> AsyncIterator[Bystander]:
    """A subscriber streaming ticks while the body of the ``with`` attacks."""
    watch = Bystander()
    async with open_raw_client(
        port, path=path, subprotocols=[TRANSPORT], extra_headers=headers or []
    ) as client:
        await client.init()
        await client.send({"id": "b", "type": "subscribe", "payload": {"query": query}})
        first = await client.receive(timeout=5)
        assert first["type"] == "next", first
        last = trio.current_time()

        async def watch_ticks() -> None:
            nonlocal last
            while True:
                message = await client.receive(timeout=30)
                assert message["type"] == "next", message
                now = trio.current_time()
                watch.longest_gap = max(watch.longest_gap, now - last)
                last = now
                watch.received += 1
                watch.ticked.set()
                watch.ticked = trio.Event()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_ticks)
            yield watch
            # One more tick after the attack: a gap still open counts too.
            with trio.fail_after(max(2.0, max_gap * 4)):
                await watch.ticked.wait()
            nursery.cancel_scope.cancel()
    assert watch.received > 0
    assert watch.longest_gap <= max_gap, (
        f"bystander starved for {watch.longest_gap:.2f} s (bound {max_gap} s)"
    )


@asynccontextmanager
async def meshery_starter(
    start_server: Any, tokens: dict[str, str], wrap: Callable[[Any, Any, httpx.AsyncClient], T]
) -> AsyncIterator[Callable[..., Awaitable[T]]]:
    """``await make(**limits)``: a token-mode Meshery server (*tokens*) with those
    storage limits, handed to *wrap* with its app, server and an HTTP client."""
    from meshsub_trio.meshery import StorageLimits, create_app

    clients: list[httpx.AsyncClient] = []

    async def make(**limits: Any) -> T:
        app = create_app(simulator=False, tokens=tokens, limits=StorageLimits(**limits))
        server = await start_server(app=app)
        http = httpx.AsyncClient(base_url=server.url, timeout=10, verify=False)
        clients.append(http)
        return wrap(app, server, http)

    try:
        yield make
    finally:
        for http in clients:
            await http.aclose()
