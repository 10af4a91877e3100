"""An ``ASGIApp`` under a real hypercorn (its Trio worker) on a free loopback
port, for every test of the ASGI host: one way to start it, one handle."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import hypercorn.trio
import trio
from hypercorn.config import Config as HypercornConfig

from meshsub_trio import App, ASGIApp, Config, Metrics

#: How long hypercorn takes to start, at most.
STARTUP = 5.0


class Gauge:
    """A count tests can wait on (requests inside the app), instead of sleeping."""

    def __init__(self) -> None:
        self.value = 0
        self._changed = trio.Event()

    def add(self, delta: int) -> None:
        self.value += delta
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, value: int) -> None:
        while self.value != value:
            await self._changed.wait()


@dataclass
class Hosted:
    """hypercorn serving one ``ASGIApp``: ``stop`` is its ``shutdown_trigger``."""

    asgi: ASGIApp
    url: str
    stop: trio.Event
    #: HTTP requests the app is still serving (streams included).
    requests: Gauge = field(default_factory=Gauge)
    #: Set when ``hypercorn.trio.serve`` has returned.
    returned: trio.Event = field(default_factory=trio.Event)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def metrics(self) -> Metrics:
        return self.asgi.state.metrics


async def start_hypercorn(
    nursery: trio.Nursery, app: App, *, graceful_timeout: float = 0.5, **overrides: Any
) -> Hosted:
    """Serve *app* (``Config(**overrides)``, keep-alives off, ``close_timeout`` 1 s
    unless given) until ``stop`` is set, counting the HTTP requests inside it."""
    settings: dict[str, Any] = {"port": 0, "keepalive": 0, "close_timeout": 1.0}
    settings.update(overrides)
    asgi = ASGIApp(app, Config(**settings))
    requests = Gauge()

    async def counted(scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await asgi(scope, receive, send)
            return
        requests.add(1)
        try:
            await asgi(scope, receive, send)
        finally:
            requests.add(-1)

    hyper = HypercornConfig()
    hyper.bind = ["127.0.0.1:0"]
    hyper.accesslog = None
    hyper.graceful_timeout = graceful_timeout
    stop = trio.Event()
    returned = trio.Event()

    async def run(task_status: trio.TaskStatus[list[str]]) -> None:
        try:
            await hypercorn.trio.serve(
                counted,  # type: ignore[arg-type]
                hyper,
                shutdown_trigger=stop.wait,
                task_status=task_status,
            )
        finally:
            returned.set()

    with trio.fail_after(STARTUP):
        binds = await nursery.start(run)
    assert binds and binds[0].startswith("http://127.0.0.1:"), binds
    return Hosted(asgi, binds[0], stop, requests, returned)


@asynccontextmanager
async def stream_subscription(
    url: str, query: str, accept: str, *, timeout: float | None = None
) -> AsyncIterator[httpx.Response]:
    """POST *query* to *url*``/api`` asking for *accept* (SSE or multipart), and
    the response, streamed. No client timeout by default: each test bounds its waits."""
    async with (
        httpx.AsyncClient(timeout=timeout) as client,
        client.stream(
            "POST", f"{url}/api", json={"query": query}, headers={"accept": accept}
        ) as response,
    ):
        yield response
