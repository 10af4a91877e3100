"""The two JavaScript clients people actually deploy, against a real server.

``graphql-ws`` (enisdenjo) speaks graphql-transport-ws; Apollo's
``subscriptions-transport-ws`` speaks the legacy graphql-ws protocol and
sends its ``start`` before the ack arrives. Both are installed from
tests/interop/js/package-lock.json, so a client release cannot change these
results without a lock-file diff. Each test runs a js/*.mjs scenario and
asserts on the JSON events it prints, and on the server's metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio

from meshsub_trio import Server

from .conftest import (
    NodeRun,
    cli_server,
    node_session,
    run_node,
    wait_idle,
    wait_metrics,
    ws_url,
)

pytestmark = pytest.mark.node

MESHERY_PATH = "/graphql"
HELLO = {"data": {"hello": "Hello from meshsub-trio"}}


@dataclass(frozen=True)
class JsClient:
    """One Node client: its driver script and the subprotocol it must end up speaking."""

    name: str
    script: str
    subprotocol: str

    def error_messages(self, event: dict[str, Any]) -> list[str]:
        """graphql-ws hands the sink an error array; the Apollo client one error object."""
        errors = event.get("errors", [event])
        return [error["message"] for error in errors]


GRAPHQL_WS = JsClient("graphql-ws", "graphql_ws_client.mjs", "graphql-transport-ws")
LEGACY = JsClient("subscriptions-transport-ws", "legacy_client.mjs", "graphql-ws")


@pytest.fixture(params=[GRAPHQL_WS, LEGACY], ids=lambda client: client.name)
def client(request: pytest.FixtureRequest) -> JsClient:
    return request.param


def nexts(run: NodeRun) -> list[Any]:
    return [event["payload"] for event in run.named("next")]


def assert_one_connection(run: NodeRun, client: JsClient) -> dict[str, Any]:
    """Exactly one ack on the expected subprotocol (so nothing reconnected)."""
    connected = run.named("connected")
    assert len(connected) == 1, str(run)
    assert connected[0]["protocol"] == client.subprotocol, str(run)
    return connected[0]


def assert_clean_run(run: NodeRun) -> None:
    """Finished, and the client itself never complained about the server."""
    run.assert_ok()
    assert not run.named("client_error"), str(run)
    assert not run.named("connection_failed"), str(run)


async def test_query(node: str, server: Server, client: JsClient) -> None:
    run = await run_node(node, client.script, ws_url(server), "query")

    assert_clean_run(run)
    assert_one_connection(run, client)
    assert nexts(run) == [HELLO], str(run)
    assert run.kinds().count("complete") == 1, str(run)
    await wait_idle(server)
    assert server.metrics.operations_started == 1
    assert server.metrics.cleanups_run == 1


@pytest.mark.parametrize("path", ["/ws", MESHERY_PATH])
async def test_countdown_runs_to_completion(
    node: str, server: Server, client: JsClient, path: str
) -> None:
    run = await run_node(node, client.script, ws_url(server, path), "countdown", "3")

    assert_clean_run(run)
    assert_one_connection(run, client)
    assert nexts(run) == [{"data": {"countdown": n}} for n in (3, 2, 1, 0)], str(run)
    kinds = run.kinds()
    last_next = len(kinds) - 1 - kinds[::-1].index("next")
    assert "complete" in kinds[last_next:], str(run)
    await wait_idle(server)
    assert server.metrics.cleanups_run == 1


async def test_unsubscribe_stops_the_server_side(
    node: str, server: Server, client: JsClient
) -> None:
    """Stopping ``ticks`` must end the server's operation while the socket stays open."""
    async with node_session(node, client.script, ws_url(server), "unsubscribe") as script:
        await script.expect("unsubscribed")
        await wait_metrics(server, lambda m: m.live_operations == 0)
        assert server.metrics.live_connections == 1, "the socket must outlive the operation"
        assert server.metrics.cleanups_run == 1
        await script.answer("continue")
    run = script.run

    assert_clean_run(run)
    assert_one_connection(run, client)
    kinds = run.kinds()
    ticks = [p for p in nexts(run) if "ticks" in (p.get("data") or {})]
    assert [p["data"]["ticks"] for p in ticks] == [0, 1, 2], str(run)
    after = [
        e["payload"] for e in run.events[kinds.index("unsubscribed") :] if e["event"] == "next"
    ]
    assert after == [HELLO], f"the same socket must still answer a query\n{run}"
    await wait_idle(server)
    assert server.metrics.operations_started == 2


async def test_validation_error_reaches_the_error_callback(
    node: str, server: Server, client: JsClient
) -> None:
    run = await run_node(node, client.script, ws_url(server), "validation")

    assert_clean_run(run)
    assert_one_connection(run, client)
    errors = run.named("error")
    assert len(errors) == 1, f"expected one error callback (protocols.md §6)\n{run}"
    messages = client.error_messages(errors[0])
    assert any("Cannot query field" in m and "nope" in m for m in messages), str(run)
    assert nexts(run) == [HELLO], f"only the follow-up query may produce data\n{run}"
    await wait_idle(server)


async def test_connection_params_and_ack_payload(
    node: str, params_server: Server, client: JsClient
) -> None:
    run = await run_node(node, client.script, ws_url(params_server), "params")

    assert_clean_run(run)
    connected = assert_one_connection(run, client)
    assert connected["payload"] == {
        "greeting": "welcome",
        "echo": {"token": "let-me-in", "client": client.name},
    }, str(run)
    assert nexts(run) == [{"data": {"connectionParam": client.name}}], str(run)
    await wait_idle(params_server)


async def test_refused_connection(node: str, params_server: Server, client: JsClient) -> None:
    """on_connect returning False: 4403 (transport-ws) or connection_error + 1011 (legacy)."""
    run = await run_node(node, client.script, ws_url(params_server), "forbidden")

    assert_clean_run(run)
    assert not run.named("connected"), str(run)
    assert not run.named("next"), str(run)
    closes = [event["code"] for event in run.named("closed")]
    if client is GRAPHQL_WS:
        assert closes == [4403], str(run)
        assert [e.get("code") for e in run.named("error")] == [4403], str(run)
    else:
        assert len(run.named("connection_error")) == 1, str(run)
        assert closes == [1011], str(run)
    await wait_idle(params_server)
    assert params_server.metrics.operations_started == 0, "a refused connection ran an operation"


async def test_keepalive_traffic_is_understood(
    node: str, start_server: Any, client: JsClient
) -> None:
    """Keep-alives every 50 ms: the client must answer each within a second (or the
    server drops it mid-stream) and must not mistake them for anything else. (A
    tighter deadline measures the machine's load, not the client.)"""
    server = await start_server(keepalive=0.05, pong_timeout=1.0)
    run = await run_node(node, client.script, ws_url(server), "countdown", "40")

    assert_clean_run(run)
    assert_one_connection(run, client)
    assert nexts(run) == [{"data": {"countdown": n}} for n in range(40, -1, -1)], str(run)
    keepalives = run.named("ping_frame") + run.named("ping") + run.named("ka")
    assert len(keepalives) >= 2, f"the server sent no keep-alives\n{run}"
    assert [event["code"] for event in run.named("closed")] == [1000], str(run)
    await wait_idle(server)


async def test_both_clients_share_one_server(node: str, server: Server) -> None:
    """Both protocols live side by side on one server, each client on its own socket."""
    runs: dict[str, NodeRun] = {}
    both_paused, checked = trio.Event(), trio.Event()
    paused = 0

    async def drive(client: JsClient) -> None:
        nonlocal paused
        async with node_session(node, client.script, ws_url(server), "unsubscribe") as script:
            await script.expect("unsubscribed")
            paused += 1
            if paused == 2:
                both_paused.set()
            await checked.wait()
            await script.answer("continue")
        runs[client.name] = script.run

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drive, GRAPHQL_WS)
        nursery.start_soon(drive, LEGACY)
        with trio.fail_after(20):
            await both_paused.wait()
        await wait_metrics(server, lambda m: m.live_operations == 0)
        assert server.metrics.live_connections == 2
        checked.set()

    for js_client in (GRAPHQL_WS, LEGACY):
        run = runs[js_client.name]
        assert_clean_run(run)
        assert_one_connection(run, js_client)
    await wait_idle(server)


async def test_the_shipped_cli_serves_both_clients(node: str) -> None:
    """``meshsub-trio serve`` as deployed (keep-alive on): both clients work, and
    SIGTERM ends it gracefully with exit status 0."""
    async with cli_server("meshsub_trio.examples.countdown:app", "--keepalive", "1") as cli:
        ws = cli.url.replace("http://", "ws://") + "/ws"
        for js_client in (GRAPHQL_WS, LEGACY):
            run = await run_node(node, js_client.script, ws, "countdown", "3")
            assert_clean_run(run)
            assert_one_connection(run, js_client)
            assert nexts(run) == [{"data": {"countdown": n}} for n in (3, 2, 1, 0)], str(run)
    assert cli.returncode == 0, cli.output.decode(errors="replace")
