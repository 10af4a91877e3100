"""Token mode: controller status follows the ownership of K8s contexts.

Found in review: alice could not call ``setControllerStatus`` on bob's
connection, but she could register a context of her own that named bob's
connection (``connection_id``, or just bob's context id, which the connection
id defaulted to) and then flip bob's OPERATOR with ``changeOperatorStatus``.
Every user also saw every connection (and so every context id) in the
controllers subscription and its SSE route, and ``getOperatorStatus`` told an
existing connection from a missing one.

Now a user sees and changes the controllers of their own contexts'
connections only; a connection of anyone else's reads exactly like one that
does not exist. Service accounts (the cluster's feed) keep seeing everything,
and the simulator's discovered clusters still reach every user.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import Server
from meshsub_trio.meshery import create_app

from ..http_streams.test_meshery_sse import Reader, sse
from ..meshery.test_e2e_documents import when_live
from ..wsclient import TRANSPORT, RawClient, open_raw_client

GRAPHQL = "/api/system/graphql/query"
PUBLISH = "/api/meshsub/publish"
CONTROLLERS_SSE = "/api/system/controllers/status/subscribe"
ALICE, BOB, FEED = "alice", "bob", "feed"
TOKENS = {"token-alice": ALICE, "token-bob": BOB, "token-feed": FEED}
UNKNOWN = "connection-that-exists-nowhere"

ADD_CONTEXT = """mutation($i: K8sContextInput!) {
  addK8sContext(input: $i) { id connection_id kubernetes_server_id } }"""
CHANGE_OPERATOR = """mutation($c: String!, $t: Status!) {
  changeOperatorStatus(input: {contextID: $c, targetStatus: $t}) }"""
SET_CONTROLLER = """mutation($c: String!, $k: MesheryController!, $s: MesheryControllerStatus!) {
  setControllerStatus(input: {connectionID: $c, controller: $k, status: $s}) { status } }"""
STATUS_QUERIES = """query($c: String!) {
  op: getOperatorStatus(connectionID: $c) { connectionID controller status version }
  ms: getMeshsyncStatus(connectionID: $c) { name status version connectionID }
  nats: getNatsStatus(connectionID: $c) { name status version connectionID } }"""
CONTROLLERS_SUB = """subscription($ids: [String!]) {
  subscribeMesheryControllersStatus(connectionIDs: $ids) { connectionID controller status } }"""
NAMESPACES = "query($c: [String!]) { getAvailableNamespaces(k8sClusterIDs: $c) { namespace } }"
ADD_OBJECT = "mutation($i: ClusterResourceInput!) { addClusterResource(input: $i) }"


class Api:
    """GraphQL over HTTP and the REST publish route, as one user or another."""

    def __init__(self, http: httpx.AsyncClient) -> None:
        self.http = http

    async def gql(self, user: str, query: str, **variables: Any) -> dict[str, Any]:
        response = await self.http.post(
            GRAPHQL, json={"query": query, "variables": variables}, headers=auth(user)
        )
        body: dict[str, Any] = response.json()
        return body

    async def ok(self, user: str, query: str, **variables: Any) -> Any:
        body = await self.gql(user, query, **variables)
        assert "errors" not in body, body
        return body["data"]

    async def add_context(self, user: str, **fields: Any) -> dict[str, Any]:
        data = await self.ok(user, ADD_CONTEXT, i={"name": "k", "server": "https://k", **fields})
        context: dict[str, Any] = data["addK8sContext"]
        return context

    async def operator(self, user: str, connection: str) -> Any:
        return (await self.ok(user, STATUS_QUERIES, c=connection))["op"]


def auth(user: str) -> dict[str, str]:
    return {"authorization": f"Bearer token-{user}"}


def same_shape(body: Any, value: str) -> Any:
    """*body* with *value* (an id it names) replaced by a placeholder."""
    return json.loads(json.dumps(body).replace(value, "<id>"))


@pytest.fixture
async def world(start_server: Any) -> AsyncIterator[tuple[Server, Any, Api]]:
    app = create_app(simulator=False, tokens=TOKENS)
    app.event_publishers.add(FEED)
    server = await start_server(app=app)
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        yield server, app, Api(http)


@asynccontextmanager
async def controllers(
    server: Server, user: str, ids: list[str] | None = None
) -> AsyncIterator[RawClient]:
    """A controllers subscription over WebSocket as *user*, listening when it returns."""
    headers = [(b"authorization", f"Bearer token-{user}".encode())]
    async with open_raw_client(
        server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
    ) as client:
        assert (await client.init())["type"] == "connection_ack"
        payload = {"query": CONTROLLERS_SUB, "variables": {"ids": ids}}
        await client.send({"id": "1", "type": "subscribe", "payload": payload})
        yield client


async def frame(client: RawClient) -> list[dict[str, Any]]:
    message = await client.receive()
    assert message["type"] == "next", message
    items: list[dict[str, Any]] = message["payload"]["data"]["subscribeMesheryControllersStatus"]
    return items


def connections(items: list[dict[str, Any]]) -> set[str]:
    return {item["connectionID"] for item in items}


# ---- changing another user's controllers ---------------------------------------------


async def test_a_context_cannot_claim_another_users_connection(world: Any) -> None:
    """The reproducer: alice names bob's connection in a context of her own."""
    _server, app, api = world
    with trio.fail_after(10):
        bob = await api.add_context(BOB, name="bob-prod")
        claim = await api.gql(ALICE, ADD_CONTEXT, i={
            "name": "x", "server": "https://x", "connection_id": bob["connection_id"]})  # fmt: skip
        unknown = await api.gql(ALICE, ADD_CONTEXT, i={
            "name": "x", "server": "https://x", "connection_id": UNKNOWN})  # fmt: skip
        assert claim["data"] is None and claim["errors"], claim
        # Exactly what a connection that exists nowhere gets: nothing to probe.
        assert same_shape(claim, bob["connection_id"]) == same_shape(unknown, UNKNOWN)
        for target in ("ENABLED", "DISABLED"):  # and no context of hers reaches bob's
            for context in app.model.contexts(ALICE):
                await api.gql(ALICE, CHANGE_OPERATOR, c=context["id"], t=target)
        assert (await api.operator(BOB, bob["connection_id"]))["status"] == "NOTDEPLOYED"


async def test_a_context_cannot_claim_another_users_connection_over_rest(world: Any) -> None:
    _server, app, api = world
    with trio.fail_after(10):
        bob = await api.add_context(BOB)

        async def upsert(connection: str) -> Any:
            message = {"type": "k8s_context", "op": "upsert",
                       "context": {"name": "x", "server": "https://x", "connection_id": connection}}  # fmt: skip
            response = await api.http.post(PUBLISH, json=message, headers=auth(ALICE))
            return response.status_code, response.json()

        claim, unknown = await upsert(bob["connection_id"]), await upsert(UNKNOWN)
        assert claim[0] == 400, claim
        assert same_shape(claim, bob["connection_id"]) == same_shape(unknown, UNKNOWN)
        assert app.model.contexts(ALICE) == []


async def test_reusing_a_context_id_does_not_reach_its_connection(world: Any) -> None:
    """Context ids are per user; the connection a context gets must be too."""
    _server, _app, api = world
    with trio.fail_after(10):
        bob = await api.add_context(BOB, name="bob-prod")
        mine = await api.add_context(ALICE, id=bob["id"])
        assert mine["connection_id"] != bob["connection_id"]
        for target in ("ENABLED", "DISABLED"):
            await api.ok(ALICE, CHANGE_OPERATOR, c=mine["id"], t=target)
        assert (await api.operator(BOB, bob["connection_id"]))["status"] == "NOTDEPLOYED"
        assert (await api.operator(ALICE, mine["connection_id"]))["status"] == "UNDEPLOYED"


async def test_a_user_reuses_a_connection_of_their_own(world: Any) -> None:
    """Two of one user's contexts may share a connection; re-saving keeps it."""
    _server, app, api = world
    with trio.fail_after(10):
        first = await api.add_context(ALICE, name="one")
        second = await api.add_context(ALICE, name="two", connection_id=first["connection_id"])
        again = await api.add_context(ALICE, id=first["id"], name="one, renamed")
        assert second["connection_id"] == again["connection_id"] == first["connection_id"]
        await api.ok(ALICE, CHANGE_OPERATOR, c=second["id"], t="ENABLED")
        assert (await api.operator(ALICE, first["connection_id"]))["status"] == "DEPLOYED"
        assert len(app.model.controller_items({first["connection_id"]})) == 3
        # A context deleted and added again is back on the connection it was given.
        await api.ok(ALICE, "mutation($c: String!) { deleteK8sContext(id: $c) }", c=first["id"])
        back = await api.add_context(ALICE, id=first["id"], name="one")
        assert back["connection_id"] == first["connection_id"]


# ---- seeing another user's controllers -----------------------------------------------


async def test_controller_queries_read_a_foreign_connection_as_unknown(world: Any) -> None:
    _server, _app, api = world
    with trio.fail_after(10):
        bob = await api.add_context(BOB)
        theirs = await api.gql(ALICE, STATUS_QUERIES, c=bob["connection_id"])
        nobodys = await api.gql(ALICE, STATUS_QUERIES, c=UNKNOWN)
        assert theirs["data"]["op"] is None, theirs
        assert same_shape(theirs, bob["connection_id"]) == same_shape(nobodys, UNKNOWN)
        # Bob's own view is untouched.
        assert (await api.operator(BOB, bob["connection_id"]))["status"] == "NOTDEPLOYED"


async def test_the_controller_subscription_lists_own_connections_only(world: Any) -> None:
    server, _app, api = world
    with trio.fail_after(10):
        bob = (await api.add_context(BOB))["connection_id"]
        mine = (await api.add_context(ALICE))["connection_id"]
        async with (
            controllers(server, ALICE) as everything,
            controllers(server, ALICE, [bob, mine]) as filtered,
            controllers(server, ALICE, [bob]) as only_bobs,
        ):
            assert connections(await frame(everything)) == {mine}
            assert connections(await frame(filtered)) == {mine}
            assert await frame(only_bobs) == []
            await when_live(server, 3)
            # Bob's cluster changes, then hers: she hears of hers only.
            await api.ok(FEED, SET_CONTROLLER, c=bob, k="OPERATOR", s="RUNNING")
            await api.ok(FEED, SET_CONTROLLER, c=mine, k="OPERATOR", s="RUNNING")
            await api.ok(FEED, SET_CONTROLLER, c=mine, k="MESHSYNC", s="RUNNING")
            for client in (everything, filtered):
                seen: list[dict[str, Any]] = []
                while {
                    "connectionID": mine,
                    "controller": "MESHSYNC",
                    "status": "RUNNING",
                } not in seen:
                    seen += await frame(client)
                assert connections(seen) == {mine}, seen


async def test_the_controller_sse_route_lists_own_connections_only(world: Any) -> None:
    _server, _app, api = world
    with trio.fail_after(10):
        bob = (await api.add_context(BOB))["connection_id"]
        mine = (await api.add_context(ALICE))["connection_id"]
        http = api.http
        async with (
            sse(http, CONTROLLERS_SSE, auth(ALICE)) as everything,
            sse(http, CONTROLLERS_SSE, auth(ALICE), connectionIds=bob) as only_bobs,
        ):
            assert {i["connectionId"] for i in await sse_frame(everything)} == {mine}
            assert await sse_frame(only_bobs) == []
            await api.ok(FEED, SET_CONTROLLER, c=bob, k="OPERATOR", s="RUNNING")
            await api.ok(FEED, SET_CONTROLLER, c=mine, k="OPERATOR", s="RUNNING")
            items = await sse_frame(everything)
            while {"connectionId": mine, "controller": "OPERATOR", "status": "RUNNING",
                   "version": ""} not in items:  # fmt: skip
                items = await sse_frame(everything)
            assert {i["connectionId"] for i in items} == {mine}


async def sse_frame(reader: Reader) -> list[dict[str, Any]]:
    [event] = await reader.take(1)
    items: list[dict[str, Any]] = json.loads(event.data)
    return items


# ---- who keeps the wider view ----------------------------------------------------------


async def test_a_service_account_sees_every_connection(world: Any) -> None:
    server, _app, api = world
    with trio.fail_after(10):
        bob = (await api.add_context(BOB))["connection_id"]
        alice = (await api.add_context(ALICE))["connection_id"]
        async with controllers(server, FEED) as client:
            assert connections(await frame(client)) == {bob, alice}
        assert (await api.operator(FEED, bob))["status"] == "NOTDEPLOYED"
        async with sse(api.http, CONTROLLERS_SSE, auth(FEED)) as reader:
            assert {i["connectionId"] for i in await sse_frame(reader)} == {bob, alice}


async def test_simulated_clusters_show_their_controllers_to_every_user(
    start_server: Any,
) -> None:
    """The simulator registers each discovered cluster for every user, on one
    shared connection: each user sees exactly the connections of its contexts."""
    app = create_app(seed=5, rate=20.0, tokens=TOKENS)
    server = await start_server(app=app)
    with trio.fail_after(15):
        for user in (ALICE, BOB):
            async with controllers(server, user) as client:
                seen = connections(await frame(client))
                while len(seen) < 2:
                    seen |= connections(await frame(client))
            assert seen == {c["connection_id"] for c in app.model.contexts(user)}
        assert {c["connection_id"] for c in app.model.contexts(ALICE)} == {
            c["connection_id"] for c in app.model.contexts(BOB)
        }


# ---- probing context ids through cluster ids ------------------------------------------------


async def test_a_context_id_is_not_probed_through_cluster_ids(world: Any) -> None:
    """A context's cluster id defaults to its (private) id: another user's
    context must not change what one's own context id resolves to."""
    _server, _app, api = world
    with trio.fail_after(10):
        await api.ok(FEED, ADD_OBJECT, i={
            "kubernetes_server_id": "shared", "kind": "Namespace", "namespace": "", "name": "web"})  # fmt: skip
        bob = await api.add_context(BOB)
        await api.add_context(ALICE, id=bob["id"], kubernetes_server_id="shared")
        await api.add_context(ALICE, id="nobody-has-this", kubernetes_server_id="shared")
        theirs = await api.ok(ALICE, NAMESPACES, c=[bob["id"]])
        nobodys = await api.ok(ALICE, NAMESPACES, c=["nobody-has-this"])
        assert theirs == nobodys == {"getAvailableNamespaces": [{"namespace": "web"}]}
