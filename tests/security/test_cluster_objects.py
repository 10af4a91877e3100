"""Token mode: an ordinary user's K8s contexts never clear a cluster's objects.

Found in review: cluster objects are shared cluster state that only the
cluster's feed (service accounts; the local user in local mode) writes, but
deleting a K8s context cleared its cluster's objects once no context referred
to the cluster. So alice could wipe any cluster nobody else's context named:
add a context naming its ``kubernetes_server_id``, then delete it. The same
add-and-delete told her whether anyone else's context named that cluster (its
objects survived or not).

Now only a trusted caller's delete (a service account, the local user, the
model's own callers such as the simulator) clears a cluster's objects; an
ordinary user's delete removes her context and nothing of the cluster's.

Reading is not part of the finding: cluster objects are readable by every user
by cluster id (shared state, as in Meshery), so a context naming a cluster
reads nothing that naming the cluster id itself does not.
"""

from __future__ import annotations

from typing import Any

import httpx
import trio

from meshsub_trio.meshery import create_app

from ..meshery.test_e2e_documents import when_live
from ..wsclient import TRANSPORT, open_raw_client
from .test_controller_ownership import (
    ADD_CONTEXT,
    ADD_OBJECT,
    ALICE,
    BOB,
    FEED,
    NAMESPACES,
    Api,
    auth,
    same_shape,
    world,
)

__all__ = ["world"]  # the fixture (the same users and service account), re-exported for pytest
CLUSTER = "cluster-fed-by-the-service-account"
UNUSED, USED = "cluster-nobody-else-names", "cluster-bob-names"

DELETE_CONTEXT = "mutation($c: String!) { deleteK8sContext(id: $c) }"
PUBLISH = "/api/meshsub/publish"
RESOURCES_SUB = """subscription($ids: [String!], $ns: String!) {
  subscribeClusterResources(k8scontextIDs: $ids, namespace: $ns) { resources { kind count } } }"""


async def feed(api: Api, cluster: str, kind: str = "Namespace", name: str = "web") -> None:
    """The service account reports one object of *cluster*."""
    namespace = "" if kind == "Namespace" else "default"
    await api.ok(FEED, ADD_OBJECT, i={
        "kubernetes_server_id": cluster, "kind": kind, "namespace": namespace, "name": name})  # fmt: skip


async def namespaces(api: Api, user: str, cluster: str) -> Any:
    return await api.ok(user, NAMESPACES, c=[cluster])


async def add_and_delete(api: Api, user: str, cluster: str) -> Any:
    """*user*'s context naming *cluster*, added and deleted again; the delete's answer."""
    context = await api.add_context(user, kubernetes_server_id=cluster)
    return await api.gql(user, DELETE_CONTEXT, c=context["id"])


WEB = {"getAvailableNamespaces": [{"namespace": "web"}]}


# ---- the wipe ------------------------------------------------------------------------------


async def test_deleting_a_context_does_not_wipe_the_cluster(world: Any) -> None:
    """The reproducer: alice names the feed's cluster in a context, then deletes it."""
    _server, app, api = world
    with trio.fail_after(10):
        await feed(api, CLUSTER)
        await feed(api, CLUSTER, "Pod", "api")
        assert (await add_and_delete(api, ALICE, CLUSTER))["data"] == {"deleteK8sContext": True}
        assert await namespaces(api, BOB, CLUSTER) == WEB
        assert len(app.model.objects(CLUSTER)) == 2


async def test_deleting_a_context_over_rest_does_not_wipe_the_cluster(world: Any) -> None:
    _server, app, api = world
    with trio.fail_after(10):
        await feed(api, CLUSTER)

        async def publish(message: dict[str, Any]) -> Any:
            response = await api.http.post(PUBLISH, json=message, headers=auth(ALICE))
            assert response.status_code == 200, response.text
            return response.json()

        added = await publish({"type": "k8s_context", "op": "upsert", "context": {
            "name": "x", "server": "https://x", "kubernetes_server_id": CLUSTER}})  # fmt: skip
        [context] = app.model.contexts(ALICE)
        assert added and context["kubernetes_server_id"] == CLUSTER
        await publish({"type": "k8s_context", "op": "delete", "id": context["id"]})
        assert app.model.contexts(ALICE) == []
        assert await namespaces(api, BOB, CLUSTER) == WEB


async def test_a_live_subscriber_keeps_the_clusters_objects(world: Any) -> None:
    """Bob watches the cluster while alice adds and deletes her context; the
    next thing the feed reports arrives on top of everything it reported before."""
    server, _app, api = world
    with trio.fail_after(10):
        await feed(api, CLUSTER)
        await feed(api, CLUSTER, "Pod", "api")
        headers = [(b"authorization", b"Bearer token-bob")]
        async with open_raw_client(
            server.port, path="/api/system/graphql/query", subprotocols=[TRANSPORT],
            extra_headers=headers,
        ) as client:  # fmt: skip
            assert (await client.init())["type"] == "connection_ack"
            payload = {"query": RESOURCES_SUB, "variables": {"ids": [CLUSTER], "ns": "default"}}
            await client.send({"id": "1", "type": "subscribe", "payload": payload})

            async def resources() -> list[dict[str, Any]]:
                message = await client.receive()
                assert message["type"] == "next", message
                found: list[dict[str, Any]] = message["payload"]["data"][
                    "subscribeClusterResources"
                ]["resources"]
                return found

            before = await resources()
            assert before == [{"kind": "Namespace", "count": 1}, {"kind": "Pod", "count": 1}]
            await when_live(server, 1)
            await add_and_delete(api, ALICE, CLUSTER)
            await feed(api, CLUSTER, "Service", "api")
            seen = await resources()
            while {"kind": "Service", "count": 1} not in seen:
                assert seen == before, seen  # never an emptied cluster in between
                seen = await resources()
            assert seen == [*before, {"kind": "Service", "count": 1}]


# ---- the probe -----------------------------------------------------------------------------


async def test_add_and_delete_does_not_tell_whether_anyone_else_names_a_cluster(
    world: Any,
) -> None:
    """Bob's context names one cluster, nobody's the other: to alice they look alike."""
    _server, _app, api = world
    with trio.fail_after(10):
        await feed(api, USED)
        await feed(api, UNUSED)
        await api.add_context(BOB, kubernetes_server_id=USED)
        answers = {}
        for cluster in (USED, UNUSED):
            deleted = await add_and_delete(api, ALICE, cluster)
            answers[cluster] = same_shape([deleted, await namespaces(api, ALICE, cluster)], cluster)
        assert answers[USED] == answers[UNUSED] == [{"data": {"deleteK8sContext": True}}, WEB]


# ---- who still clears a cluster ------------------------------------------------------------


async def test_a_service_account_deleting_its_context_clears_the_cluster(world: Any) -> None:
    """The cluster's feed removes a cluster no context names any more."""
    _server, app, api = world
    with trio.fail_after(10):
        await feed(api, CLUSTER)
        await api.ok(FEED, ADD_CONTEXT, i={
            "name": "k", "server": "https://k", "kubernetes_server_id": CLUSTER})  # fmt: skip
        [context] = app.model.contexts(FEED)
        await api.ok(FEED, DELETE_CONTEXT, c=context["id"])
        assert app.model.objects(CLUSTER) == []
        assert await namespaces(api, BOB, CLUSTER) == {"getAvailableNamespaces": []}


async def test_the_local_user_deleting_a_context_clears_the_cluster(start_server: Any) -> None:
    """Local mode: the one user is the cluster's feed too."""
    app = create_app(simulator=False)
    server = await start_server(app=app)
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:

            async def ok(query: str, **variables: Any) -> Any:
                response = await http.post(
                    "/api/system/graphql/query", json={"query": query, "variables": variables}
                )
                body = response.json()
                assert "errors" not in body, body
                return body["data"]

            await ok(ADD_OBJECT, i={
                "kubernetes_server_id": CLUSTER, "kind": "Namespace", "namespace": "",
                "name": "web"})  # fmt: skip
            added = await ok(ADD_CONTEXT, i={
                "name": "k", "server": "https://k", "kubernetes_server_id": CLUSTER})  # fmt: skip
            await ok(DELETE_CONTEXT, c=added["addK8sContext"]["id"])
            assert app.model.objects(CLUSTER) == []
