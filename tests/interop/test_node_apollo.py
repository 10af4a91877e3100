"""Apollo Client 4's HttpLink against a real server: multipart subscriptions
(protocols §7) and plain GraphQL over HTTP for queries.

Installed from tests/interop/js/package-lock.json; each test runs a scenario
of js/apollo_client.mjs and checks what the client saw and, on the server's
metrics, that every operation's cleanup ran once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from meshsub_trio import Server

from ..http_streams.conftest import Tracker, all_cleaned_up
from ..http_streams.streams_app import make_stream_app
from .conftest import node_session, run_node

pytestmark = pytest.mark.node

SCRIPT = "apollo_client.mjs"


@pytest.fixture
def tracker() -> Tracker:
    return Tracker()


@pytest.fixture
async def mp_server(start_server: Callable[..., Awaitable[Server]], tracker: Tracker) -> Server:
    return await start_server(app=make_stream_app(tracker))


def http_url(server: Server, path: str = "/graphql") -> str:
    return f"http://127.0.0.1:{server.port}{path}"


async def test_subscription(node: str, mp_server: Server, tracker: Tracker) -> None:
    run = await run_node(node, SCRIPT, http_url(mp_server), "subscribe")
    run.assert_ok()
    assert [e["data"] for e in run.named("next")] == [{"countdown": n} for n in (3, 2, 1, 0)], str(
        run
    )
    assert run.kinds()[-2:] == ["complete", "done"], str(run)
    assert not run.named("error") and all(e["error"] is None for e in run.named("next")), str(run)
    await all_cleaned_up(mp_server)
    assert tracker.cleanups == ["countdown"]
    assert mp_server.metrics.operations_started == 1


async def test_failing_source_reaches_the_client_as_an_error(
    node: str, mp_server: Server, tracker: Tracker
) -> None:
    run = await run_node(node, SCRIPT, http_url(mp_server, "/api"), "failing")
    run.assert_ok()
    nexts = run.named("next")
    assert nexts[0]["data"] == {"failing": 1}, str(run)
    # The error part (payload null, top-level errors) is a protocol error to Apollo.
    reported = [e["error"] for e in nexts[1:] if e["error"]] + run.named("error")
    assert reported, str(run)
    await all_cleaned_up(mp_server)
    assert tracker.cleanups == ["failing"]


async def test_query_is_plain_json(node: str, mp_server: Server) -> None:
    run = await run_node(node, SCRIPT, http_url(mp_server), "query")
    run.assert_ok()
    assert run.named("result") == [{"event": "result", "data": {"hello": "world"}}], str(run)
    assert mp_server.metrics.operations_started == 0  # answered without a stream


async def test_unsubscribe_runs_cleanup_once(
    node: str, mp_server: Server, tracker: Tracker
) -> None:
    async with node_session(node, SCRIPT, http_url(mp_server), "stop") as session:
        await session.expect("stopped")
        await session.expect("check_cleanup")
        await all_cleaned_up(mp_server)
        assert mp_server.metrics.operations_started == 1
        assert tracker.cleanups == ["ticks"]
        await session.answer("continue")
    session.run.assert_ok()
    ticks = [e["data"]["ticks"] for e in session.run.named("next")]
    assert ticks[:3] == [0, 1, 2], str(session.run)
