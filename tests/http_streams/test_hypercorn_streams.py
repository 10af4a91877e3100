"""SSE and multipart streams on the ASGI app under hypercorn: a client that
leaves ends its operation, and its cleanup runs once.

A reader that stops reading, keep-alives and hypercorn's graceful shutdown
are in ``test_hypercorn_failures``.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from ..hypercorn_host import start_hypercorn, stream_subscription
from .conftest import Tracker
from .streams_app import make_stream_app

FORMATS = {
    "sse": "text/event-stream",
    "multipart": 'multipart/mixed;subscriptionSpec="1.0"',
}


async def cleaned_up(metrics: Any) -> None:
    with trio.fail_after(10):
        await metrics.wait_for(
            lambda m: m.live_operations == 0 and m.cleanups_run == m.operations_started
        )


@pytest.mark.parametrize("protocol", list(FORMATS))
async def test_disconnect_runs_cleanup_once(
    nursery: trio.Nursery, tracker: Tracker, protocol: str
) -> None:
    hosted = await start_hypercorn(nursery, make_stream_app(tracker))
    ticks = "subscription { ticks }"
    async with stream_subscription(
        hosted.url, ticks, FORMATS[protocol], timeout=5.0  # httpx's default
    ) as response:
        assert response.status_code == 200
        received = b""
        async for chunk in response.aiter_raw():
            received += chunk
            if received.count(b'"ticks"') >= 3:
                break
        assert hosted.metrics.active_by_protocol(protocol).value == 1
    await cleaned_up(hosted.metrics)
    assert hosted.metrics.operations_started == 1
    assert tracker.cleanups == ["ticks"]
    hosted.stop.set()
