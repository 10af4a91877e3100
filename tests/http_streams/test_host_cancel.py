"""A host cancel that lands while the body's last chunk is being written
(hypercorn cancels apps at ``graceful_timeout``, and its send is shielded):
the body ends once, and the stream counts as complete.

Driven in-process with a send that behaves as hypercorn's does: shielded, and
refusing a body chunk after the body has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import pytest
import trio
import trio.testing

from meshsub_trio import Config, EventStream, ServerSentEvent
from meshsub_trio._transports._asgi import ASGIApp
from meshsub_trio._transports._event_stream import EventStreamDriver

from .conftest import Tracker, make_app


class HypercornLikeSend:
    """Records what is sent; the last chunk's write takes *slow* seconds, shielded."""

    def __init__(self, slow: float) -> None:
        self.slow = slow
        self.sent: list[dict[str, Any]] = []
        self.refused = 0

    async def __call__(self, message: dict[str, Any]) -> None:
        ended = any(m.get("more_body") is False for m in self.sent)
        if message["type"] == "http.response.body" and ended:
            self.refused += 1
            raise RuntimeError("body after the body's end")  # hypercorn's UnexpectedMessage
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("more_body") is False:
            with trio.CancelScope(shield=True):
                await trio.sleep(self.slow)

    def body_ends(self) -> int:
        """Body ends sent, and those tried after the first."""
        return sum(1 for m in self.sent if m.get("more_body") is False) + self.refused


async def never_disconnects() -> dict[str, Any]:
    await trio.sleep_forever()
    raise AssertionError("unreachable")


@pytest.fixture
def clock() -> trio.testing.MockClock:
    return trio.testing.MockClock(autojump_threshold=0)


async def test_an_app_event_stream_ends_its_body_once(clock: trio.testing.MockClock) -> None:
    @asynccontextmanager
    async def one_event() -> AsyncIterator[AsyncIterator[ServerSentEvent]]:
        async def events() -> AsyncIterator[ServerSentEvent]:
            yield ServerSentEvent(b"one")

        yield events()

    asgi = ASGIApp(make_app(Tracker()), Config(port=0, close_timeout=1.0))
    send = HypercornLikeSend(slow=1.0)
    driver = EventStreamDriver(
        asgi.state, EventStream(one_event, keepalive=0), never_disconnects, send
    )
    with trio.move_on_after(0.5):  # the host's cancel, mid-way through the last write
        await driver.run()
    assert send.body_ends() == 1
    assert driver.end == "complete"


async def test_a_graphql_sse_stream_ends_its_body_once(clock: trio.testing.MockClock) -> None:
    tracker = Tracker()
    asgi = ASGIApp(make_app(tracker), Config(port=0, keepalive=0, close_timeout=1.0))
    body = orjson.dumps({"query": "subscription { countdown(to: 2) }"})
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await never_disconnects()

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api",
        "query_string": b"",
        "headers": [(b"accept", b"text/event-stream"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
    }
    send = HypercornLikeSend(slow=1.0)
    async with asgi.state.running():
        with trio.move_on_after(0.5):  # the host's cancel, mid-way through the last write
            await asgi(scope, receive, send)
    assert send.body_ends() == 1
    chunks = b"".join(m.get("body", b"") for m in send.sent)
    assert chunks.count(b"event: next") == 3 and b"event: complete" in chunks
    assert tracker.cleanups == ["countdown"]
