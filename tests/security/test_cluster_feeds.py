"""Shared cluster state is written by the cluster's feed, not by any user.

Found in review: in token mode any user could set controller statuses, add or
delete cluster resources and register MeshModel entries that every other user
sees (through GraphQL and through ``/api/meshsub/publish``).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from meshsub_trio.meshery import create_app

GRAPHQL = "/api/system/graphql/query"
PUBLISH = "/api/meshsub/publish"
TOKENS = {"token-user": "user1", "token-feed": "feeder"}
OBJECT = {"kubernetes_server_id": "c1", "kind": "Pod", "namespace": "default", "name": "web"}

MUTATIONS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "setControllerStatus",
        "mutation($i: ControllerStatusInput!) { setControllerStatus(input: $i) { status } }",
        {"connectionID": "conn-1", "controller": "BROKER", "status": "CONNECTED"},
    ),
    ("addClusterResource",
     "mutation($i: ClusterResourceInput!) { addClusterResource(input: $i) }", OBJECT),
    ("deleteClusterResource",
     "mutation($i: ClusterResourceInput!) { deleteClusterResource(input: $i) }", OBJECT),
    ("addMeshModelComponent",
     "mutation($i: MeshModelEntityInput!) { addMeshModelComponent(input: $i) }",
     {"model": "istio", "version": "1.0", "name": "VirtualService"}),
    ("addMeshModelRelationship",
     "mutation($i: MeshModelEntityInput!) { addMeshModelRelationship(input: $i) }",
     {"model": "istio", "version": "1.0", "name": "edge"}),
]  # fmt: skip

MESSAGES: list[dict[str, Any]] = [
    {"type": "controller", "op": "upsert",
     "item": {"connectionID": "conn-1", "controller": "BROKER", "status": "CONNECTED"}},
    {"type": "cluster_object", "op": "upsert", "object": OBJECT},
    {"type": "cluster_object", "op": "delete", "object": OBJECT},
    {"type": "meshmodel", "op": "register",
     "entry": {"entity": "components", "model": "istio", "version": "1.0", "name": "x"}},
]  # fmt: skip


@pytest.fixture
async def feed_server(start_server: Any) -> Any:
    app = create_app(simulator=False, tokens=TOKENS)
    app.event_publishers.add("feeder")
    return app, await start_server(app=app)


def _auth(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("name", "query", "variables"), MUTATIONS, ids=[m[0] for m in MUTATIONS])
async def test_a_user_cannot_feed_the_cluster(feed_server: Any, name: str, query: str,
                                              variables: dict[str, Any]) -> None:
    app, server = feed_server
    before = app.model.state_messages() if hasattr(app.model, "state_messages") else None
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        refused = await http.post(GRAPHQL, json={"query": query, "variables": {"i": variables}},
                                  headers=_auth("token-user"))
        body = refused.json()
        assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN", body
        assert "shared cluster state" in body["errors"][0]["message"]
        if before is not None:
            assert app.model.state_messages() == before  # nothing changed
        allowed = await http.post(GRAPHQL, json={"query": query, "variables": {"i": variables}},
                                  headers=_auth("token-feed"))
        assert "errors" not in allowed.json(), allowed.json()


@pytest.mark.parametrize("message", MESSAGES, ids=[f"{m['type']}/{m['op']}" for m in MESSAGES])
async def test_a_user_cannot_feed_the_cluster_over_rest(feed_server: Any,
                                                        message: dict[str, Any]) -> None:
    _app, server = feed_server
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        refused = await http.post(PUBLISH, json=message, headers=_auth("token-user"))
        assert refused.status_code == 403, refused.text
        assert "shared cluster state" in refused.text
        allowed = await http.post(PUBLISH, json=message, headers=_auth("token-feed"))
        assert allowed.status_code == 200, allowed.text


async def test_the_local_user_feeds_the_cluster(start_server: Any) -> None:
    server = await start_server(app=create_app(simulator=False))
    name, query, variables = MUTATIONS[1]
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        answer = await http.post(GRAPHQL, json={"query": query, "variables": {"i": variables}})
    assert answer.json() == {"data": {name: True}}
