"""enisdenjo's graphql-sse client in single connection mode against a real server.

One reservation (PUT), one event stream, several operations multiplexed on it
by id, DELETE to stop one; the server's metrics show every cleanup ran once and
the reservation is gone after the client disposes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from meshsub_trio import Server

from ..http_streams.conftest import Tracker, all_cleaned_up
from ..http_streams.streams_app import make_stream_app
from .conftest import node_session, run_node

pytestmark = pytest.mark.node

SCRIPT = "graphql_sse_single_client.mjs"


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
async def sse_server(start_server: Callable[..., Awaitable[Server]], tracker: Tracker) -> Server:
    return await start_server(app=make_stream_app(tracker))


def http_url(server: Server, path: str = "/graphql") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_many_operations_on_one_stream(
    node: str, sse_server: Server, tracker: Tracker
) -> None:
    run = await run_node(node, SCRIPT, http_url(sse_server), "many")
    run.assert_ok()
    assert len(run.named("connected")) == 1, str(run)

    def payloads(tag: str) -> list[object]:
        return [e["payload"] for e in run.named("next") if e["tag"] == tag]

    assert payloads("a") == [{"data": {"countdown": n}} for n in (3, 2, 1, 0)], str(run)
    assert payloads("b") == [{"data": {"countdown": n}} for n in (2, 1, 0)], str(run)
    assert payloads("q") == [{"data": {"hello": "world"}}], str(run)
    assert sorted(e["tag"] for e in run.named("complete")) == ["a", "b", "q"], str(run)
    assert not run.named("error"), str(run)
    await all_cleaned_up(sse_server)
    assert sse_server.metrics.operations_started == 3
    assert sorted(tracker.cleanups) == ["countdown", "countdown"]


async def test_validation_error_is_the_posts_answer(node: str, sse_server: Server) -> None:
    run = await run_node(node, SCRIPT, http_url(sse_server, "/api"), "invalid")
    # SSE-26: a 400 on the operation's POST, which graphql-sse reports as an error.
    assert run.named("error"), str(run)
    assert sse_server.metrics.operations_started == 0


async def test_client_stop_runs_cleanup_once(
    node: str, sse_server: Server, tracker: Tracker
) -> None:
    async with node_session(node, SCRIPT, http_url(sse_server), "stop") as session:
        await session.expect("stopped")
        await session.expect("check_cleanup")
        await all_cleaned_up(sse_server)
        assert sse_server.metrics.operations_started == 1
        assert tracker.cleanups == ["ticks"]
        await session.answer("continue")
    session.run.assert_ok()
    ticks = [e["payload"]["data"]["ticks"] for e in session.run.named("next")]
    assert ticks[:3] == [0, 1, 2], str(session.run)
