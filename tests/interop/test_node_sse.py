"""enisdenjo's graphql-sse client (distinct connections mode) against a real server.

Installed from tests/interop/js/package-lock.json; each test runs a scenario of
js/graphql_sse_client.mjs and asserts on what the client saw and on the
server's metrics (every operation's cleanup ran, once).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from meshsub_trio import Server

from ..http_streams.conftest import Tracker, all_cleaned_up, make_app
from .conftest import node_session, run_node

pytestmark = pytest.mark.node

SCRIPT = "graphql_sse_client.mjs"


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
async def sse_server(start_server: Callable[..., Awaitable[Server]], tracker: Tracker) -> Server:
    return await start_server(app=make_app(tracker))


def http_url(server: Server, path: str = "/graphql") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_subscription(node: str, sse_server: Server, tracker: Tracker) -> None:
    run = await run_node(node, SCRIPT, http_url(sse_server), "subscribe")
    run.assert_ok()
    assert [e["payload"] for e in run.named("next")] == [
        {"data": {"countdown": n}} for n in (3, 2, 1, 0)
    ], str(run)
    assert run.kinds()[-2:] == ["complete", "done"], str(run)
    assert not run.named("error"), str(run)
    await all_cleaned_up(sse_server)
    assert tracker.cleanups == ["countdown"]


async def test_query(node: str, sse_server: Server) -> None:
    run = await run_node(node, SCRIPT, http_url(sse_server, "/api"), "query")
    run.assert_ok()
    assert [e["payload"] for e in run.named("next")] == [{"data": {"hello": "world"}}], str(run)
    assert run.named("complete"), str(run)


async def test_validation_error_is_a_result(node: str, sse_server: Server) -> None:
    run = await run_node(node, SCRIPT, http_url(sse_server), "invalid")
    run.assert_ok()
    [result] = [e["payload"] for e in run.named("next")]
    assert "notExists" in result["errors"][0]["message"], str(run)
    assert run.named("complete") and not run.named("error"), str(run)


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
