"""What a new user meets first: optional arguments that work, errors instead of silence."""

from __future__ import annotations

from typing import Any

import trio

from meshsub_trio.meshery import create_app

from ..wsclient import TRANSPORT, open_raw_client

GRAPHQL = "/api/system/graphql/query"
PAGE = {"page": "0", "pageSize": "10"}


async def _subscribe(port: int, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    async with open_raw_client(port, path=GRAPHQL, subprotocols=[TRANSPORT]) as client:
        await client.init()
        await client.send(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
        return await client.receive(timeout=5)


async def test_cluster_resources_without_context_ids_cover_the_callers_clusters(
    start_server: Any,
) -> None:
    server = await start_server(app=create_app(seed=1, rate=20.0))
    query = (
        "subscription($ns: String!) { subscribeClusterResources(namespace: $ns) "
        "{ resources { kind count } } }"
    )
    async with open_raw_client(server.port, path=GRAPHQL, subprotocols=[TRANSPORT]) as client:
        await client.init()
        await client.send(
            {"id": "1", "type": "subscribe",
             "payload": {"query": query, "variables": {"ns": "default"}}}
        )  # fmt: skip
        kinds: set[str] = set()
        with trio.fail_after(10):
            while "Pod" not in kinds:  # the simulated cluster's workloads arrive
                message = await client.receive(timeout=10)
                assert message["type"] == "next", message
                resources = message["payload"]["data"]["subscribeClusterResources"]["resources"]
                kinds = {r["kind"] for r in resources}


async def test_perf_results_of_an_unknown_profile_is_an_error(start_server: Any) -> None:
    server = await start_server(app=create_app(simulator=False))
    query = (
        "subscription($s: PageFilter!, $p: String!) { subscribePerfResults(selector: $s, "
        "profileID: $p) { total_count } }"
    )
    for profile in ("", "no-such-profile"):
        with trio.fail_after(5):
            answer = await _subscribe(server.port, query, {"s": PAGE, "p": profile})
        assert answer["type"] == "error", answer
        assert "no performance profile" in answer["payload"][0]["message"]


async def test_the_first_profile_exists_as_soon_as_the_server_serves(start_server: Any) -> None:
    app = create_app(seed=2)
    await start_server(app=app)
    assert [p["name"] for p in app.model.profiles()] == ["bookinfo productpage soak"]
