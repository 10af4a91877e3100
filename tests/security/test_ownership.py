"""Token mode: one user's objects are invisible and untouchable for another.

user1 creates one of everything that has an owner (a K8s context and its
cluster's objects, a design, a filter, a performance profile with request
headers and cookies, a perf result, an event). Then every query, mutation,
subscription and REST route that names or lists owned objects runs as user2,
over real sockets (GraphQL over HTTP and WebSocket, the plain REST routes),
once against user1's ids and once against ids that exist nowhere. For every
operation:

* nothing of user1's reaches user2 (user1's content all carries "s3cret");
* user1's ids get exactly what missing ids get (so ids cannot be probed);
* user1's own view (every page, snapshot and REST read) is unchanged;
* whatever user2 holds afterwards is user2's own.

Shared cluster state (cluster objects by cluster id, MeshModel) is not per
user, so user1's context names its cluster ``cluster-u1``, a different id
from the context's own: passing user1's *context* id must not reach that
cluster. Controller status is reached through one's own contexts only: user1's
connection (server-assigned) is as missing for user2 as any other id.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import Config, LogStream, NatsBroker, Server, serve
from meshsub_trio.meshery import LOCAL_USER_ID, create_app
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from ..http_streams.test_meshery_sse import sse
from ..interop.conftest import wait_idle
from ..meshery.test_e2e_documents import when_live
from ..scaleout._kit import SOON, Replica
from ..wsclient import TRANSPORT, RawClient, open_raw_client

__all__ = ["nats_server"]  # the fixture, for the scale-out test

GRAPHQL = "/api/system/graphql/query"
PUBLISH = "/api/meshsub/publish"
EVENTS = "/api/system/events"
USER1, USER2 = "user1", "user2"
#: A service account (in the app's event_publishers): shared cluster state comes from it.
CLUSTER_FEED = "cluster-feed"
TOKENS = {"token-1": USER1, "token-2": USER2, "token-feed": CLUSTER_FEED}
#: The local user's token exists only where a test adds it to the server's tokens.
TOKEN_OF = {USER1: "token-1", USER2: "token-2", LOCAL_USER_ID: "token-0", CLUSTER_FEED: "token-feed"}
SECRET = "s3cret"
ALL = {"page": "0", "pageSize": "all"}
OWNER_KEYS = ("owner", "created_by", "user_id", "userID")

CONTEXT_FIELDS = "id name server owner created_by kubernetes_server_id connection_id updated_at"
PROFILE_FIELDS = (
    "id name user_id endpoints request_headers request_cookies request_body content_type "
    "service_mesh total_results last_run updated_at"
)
RESULT_FIELDS = "meshery_id name mesh performance_profile user_id runner_results test_id"
PATTERN_FIELDS = "id name user_id pattern_file visibility updated_at"
FILTER_FIELDS = "id name user_id filter_file filter_resource updated_at"

ADD_CONTEXT = (
    f"mutation($i: K8sContextInput!) {{ addK8sContext(input: $i) {{ {CONTEXT_FIELDS} }} }}"
)
SAVE_PROFILE = (
    "mutation($i: PerformanceProfileInput!) "
    f"{{ savePerformanceProfile(input: $i) {{ {PROFILE_FIELDS} }} }}"
)
RECORD = f"mutation($i: PerfResultInput!) {{ recordPerfResult(input: $i) {{ {RESULT_FIELDS} }} }}"
SAVE_PATTERN = f"mutation($i: PatternInput!) {{ savePattern(input: $i) {{ {PATTERN_FIELDS} }} }}"
SAVE_FILTER = f"mutation($i: FilterInput!) {{ saveFilter(input: $i) {{ {FILTER_FIELDS} }} }}"
PUBLISH_EVENT = "mutation($i: EventInput!) { publishEvent(input: $i) { id } }"
ADD_OBJECT = "mutation($i: ClusterResourceInput!) { addClusterResource(input: $i) }"

K8S_SUB = (
    "subscription($s: PageFilter!) { subscribeK8sContext(selector: $s) "
    f"{{ total_count contexts {{ {CONTEXT_FIELDS} }} }} }}"
)
CONFIG_SUB = (
    "subscription($s: PageFilter!) { subscribeConfiguration(patternSelector: $s, "
    f"filterSelector: $s) {{ patterns {{ total_count patterns {{ {PATTERN_FIELDS} }} }} "
    f"filters {{ total_count filters {{ {FILTER_FIELDS} }} }} }} }}"
)
PROFILES_SUB = (
    "subscription($s: PageFilter!) { subscribePerfProfiles(selector: $s) "
    f"{{ total_count profiles {{ {PROFILE_FIELDS} }} }} }}"
)
RESULTS_SUB = (
    "subscription($s: PageFilter!, $p: String!) { subscribePerfResults(selector: $s, "
    f"profileID: $p) {{ total_count results {{ {RESULT_FIELDS} }} }} }}"
)
RESOURCES_SUB = (
    "subscription($ids: [String!], $ns: String!) { subscribeClusterResources("
    "k8scontextIDs: $ids, namespace: $ns) { resources { kind count } } }"
)
EVENTS_SUB = "subscription { subscribeEvents { id userID description } }"
CONTROLLERS_SUB = (
    "subscription($ids: [String!]) { subscribeMesheryControllersStatus(connectionIDs: $ids) "
    "{ connectionID controller status version } }"
)
CONTROLLERS_SSE = "/api/system/controllers/status/subscribe"


@dataclass(frozen=True)
class Target:
    """The ids an attack aims at: user1's, or ids that exist nowhere."""

    context: str
    design: str
    filter: str
    profile: str
    result: str
    pod: str
    connection: str

    def names(self) -> dict[str, str]:
        return {value: f"<{key}>" for key, value in self.__dict__.items()}


MISSING = Target("ctx-missing", "design-missing", "filter-missing", "prof-missing",
                 "result-missing", "pod-missing", "conn-missing")  # fmt: skip


@dataclass
class World:
    server: Server
    app: Any
    http: httpx.AsyncClient
    user1: Target = field(default=MISSING)
    #: user1's view, as the attack must leave it.
    before: dict[str, Any] = field(default_factory=dict)

    async def rebaseline(self) -> None:
        """user1 changed something itself: that is the view to keep from now on."""
        self.before = await view(self, USER1)


# ---- clients ---------------------------------------------------------------------------


async def gql(w: World, user: str, query: str, **variables: Any) -> dict[str, Any]:
    """GraphQL over HTTP as *user*: ``{"data": ..., "errors": [...]}``."""
    response = await w.http.post(
        GRAPHQL,
        json={"query": query, "variables": variables},
        headers={"authorization": f"Bearer {TOKEN_OF[user]}"},
    )
    body: dict[str, Any] = response.json()
    return {"data": body.get("data"), "errors": [e["message"] for e in body.get("errors", [])]}


async def ok(w: World, user: str, query: str, **variables: Any) -> Any:
    body = await gql(w, user, query, **variables)
    assert not body["errors"], body
    return body["data"]


async def rest(w: World, user: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    response = await w.http.request(
        method, path, json=body, headers={"authorization": f"Bearer {TOKEN_OF[user]}"}
    )
    return {"status": response.status_code, "body": response.json()}


async def publish(w: World, user: str, message: dict[str, Any]) -> dict[str, Any]:
    return await rest(w, user, "POST", PUBLISH, message)


@asynccontextmanager
async def subscription(
    w: World,
    user: str,
    query: str,
    variables: dict[str, Any] | None = None,
    *,
    cursor: str | None = None,
    live: bool = True,
) -> AsyncIterator[RawClient]:
    """One socket, one subscription; with *live*, returns once the streamer listens."""
    if live:
        await wait_idle(w.server)
    headers = [(b"authorization", f"Bearer {TOKEN_OF[user]}".encode())]
    async with open_raw_client(
        w.server.port, path=GRAPHQL, subprotocols=[TRANSPORT], extra_headers=headers
    ) as client:
        assert (await client.init())["type"] == "connection_ack"
        payload: dict[str, Any] = {"query": query, "variables": variables or {}}
        if cursor is not None:
            payload["extensions"] = {"cursor": cursor}
        await client.send({"id": "1", "type": "subscribe", "payload": payload})
        if live:
            await when_live(w.server, 1)
        yield client


async def next_data(client: RawClient) -> Any:
    message = await client.receive()
    assert message["type"] == "next", message
    return message["payload"]


async def snapshot(w: World, user: str, query: str, variables: dict[str, Any]) -> Any:
    async with subscription(w, user, query, variables, live=False) as client:
        return await next_data(client)


async def view(w: World, user: str) -> dict[str, Any]:
    """Everything *user* can read of owned objects (and user1's cluster and controllers)."""
    reads = await ok(
        w,
        user,
        f"""query($s: PageFilter!, $p: String!, $c: String!) {{
          profiles: getPerformanceProfiles(selector: $s) {{ total_count profiles {{ {PROFILE_FIELDS} }} }}
          all: fetchAllResults(selector: $s) {{ total_count results {{ {RESULT_FIELDS} }} }}
          one: fetchResults(selector: $s, profileID: $p) {{ total_count results {{ meshery_id }} }}
          patterns: fetchPatterns(selector: $s) {{ total_count patterns {{ {PATTERN_FIELDS} }} }}
          operator: getOperatorStatus(connectionID: $c) {{ status version }}
        }}""",
        s=ALL,
        p="prof-u1",
        c=w.user1.connection,
    )
    events = await rest(w, user, "GET", f"{EVENTS}?pagesize=all")
    return {
        **reads,
        "contexts": await snapshot(w, user, K8S_SUB, {"s": ALL}),
        "configuration": await snapshot(w, user, CONFIG_SUB, {"s": ALL}),
        "resources": await snapshot(w, user, RESOURCES_SUB, {"ids": ["ctx-u1"], "ns": "default"}),
        "controllers": await snapshot(w, user, CONTROLLERS_SUB, {"ids": None}),
        "events": events,
    }


# ---- the world -------------------------------------------------------------------------


async def create_user1_objects(w: World) -> Target:
    """One of everything user1 can own, each full of user1's secrets."""
    context = await ok(w, USER1, ADD_CONTEXT, i={
        "id": "ctx-u1", "name": f"{SECRET}-context", "server": f"https://{SECRET}.example:6443",
        "kubernetes_server_id": "cluster-u1",
    })  # fmt: skip
    for kind, namespace, name in (("Namespace", "", "default"), ("Pod", "default", "web-u1")):
        await ok(w, CLUSTER_FEED, ADD_OBJECT, i={
            "kubernetes_server_id": "cluster-u1", "kind": kind, "namespace": namespace, "name": name
        })  # fmt: skip
    design = await ok(w, USER1, SAVE_PATTERN, i={
        "name": f"{SECRET}-design", "pattern_file": f"{SECRET}: design"})  # fmt: skip
    filter_ = await ok(w, USER1, SAVE_FILTER, i={
        "name": f"{SECRET}-filter", "filter_file": f"{SECRET}-wasm"})  # fmt: skip
    await ok(w, USER1, SAVE_PROFILE, i={
        "id": "prof-u1", "name": f"{SECRET}-profile", "endpoints": [f"https://{SECRET}.example"],
        "request_headers": f"Authorization: Bearer {SECRET}-header",
        "request_cookies": f"session={SECRET}-cookie", "request_body": f"{SECRET}-body",
    })  # fmt: skip
    result = await ok(w, USER1, RECORD, i={
        "profileID": "prof-u1", "name": f"{SECRET}-run", "runner_results": {"note": SECRET}})  # fmt: skip
    await ok(w, USER1, PUBLISH_EVENT, i={"severity": "alert", "description": f"{SECRET}-event"})
    return Target(
        context="ctx-u1",
        design=design["savePattern"]["id"],
        filter=filter_["saveFilter"]["id"],
        profile="prof-u1",
        result=result["recordPerfResult"]["meshery_id"],
        pod="web-u1",
        connection=context["addK8sContext"]["connection_id"],
    )


WorldFactory = Callable[[], Awaitable[World]]


@pytest.fixture
async def new_world(start_server: Any) -> AsyncIterator[WorldFactory]:
    """``await new_world()``: a fresh token-mode server where user1 owns one of everything."""
    async with AsyncExitStack() as stack:

        async def make() -> World:
            app = create_app(simulator=False, tokens=TOKENS)
            app.event_publishers.add(CLUSTER_FEED)
            server = await start_server(app=app)
            http = await stack.enter_async_context(
                httpx.AsyncClient(base_url=server.url, timeout=5, verify=False)
            )
            w = World(server, app, http)
            return replace(w, user1=await create_user1_objects(w))

        yield make


# ---- what user2 tries --------------------------------------------------------------------

Attack = Callable[[World, Target], Awaitable[Any]]


async def q_profiles(w: World, t: Target) -> Any:
    return await gql(w, USER2, f"query($s: PageFilter!) {{ getPerformanceProfiles(selector: $s) "
                     f"{{ total_count profiles {{ {PROFILE_FIELDS} }} }} }}", s=ALL)  # fmt: skip


async def q_results(w: World, t: Target) -> Any:
    return await gql(w, USER2, f"query($s: PageFilter!, $p: String!) {{ fetchResults(selector: $s, "
                     f"profileID: $p) {{ total_count results {{ {RESULT_FIELDS} }} }} }}",
                     s=ALL, p=t.profile)  # fmt: skip


async def q_all_results(w: World, t: Target) -> Any:
    return await gql(w, USER2, f"query($s: PageFilter!) {{ fetchAllResults(selector: $s) "
                     f"{{ total_count results {{ {RESULT_FIELDS} }} }} }}", s=ALL)  # fmt: skip


async def q_result(w: World, t: Target) -> Any:
    return await gql(w, USER2, f"query($id: ID!) {{ getPerfResult(id: $id) {{ {RESULT_FIELDS} }} }}",
                     id=t.result)  # fmt: skip


async def q_patterns(w: World, t: Target) -> Any:
    return await gql(w, USER2, f"query($s: PageFilter!) {{ fetchPatterns(selector: $s) "
                     f"{{ total_count patterns {{ {PATTERN_FIELDS} }} }} }}", s=ALL)  # fmt: skip


async def q_describe(w: World, t: Target) -> Any:
    return await gql(w, USER2, "query($n: String!) { getKubectlDescribe(name: $n, kind: \"Pod\", "
                     "namespace: \"default\") { describe ctxid } }", n=t.pod)  # fmt: skip


async def q_resync(w: World, t: Target) -> Any:
    return await gql(w, USER2, "query($c: String!) { resyncCluster(k8scontextID: $c) }",
                     c=t.context)  # fmt: skip


async def q_namespaces(w: World, t: Target) -> Any:
    return await gql(w, USER2, "query($c: [String!]) { getAvailableNamespaces(k8sClusterIDs: $c) "
                     "{ namespace } }", c=[t.context])  # fmt: skip


async def q_operator(w: World, t: Target) -> Any:
    return await gql(w, USER2, "query($c: String!) { getOperatorStatus(connectionID: $c) "
                     "{ connectionID controller status version } }", c=t.connection)  # fmt: skip


async def q_controller_statuses(w: World, t: Target) -> Any:
    return await gql(w, USER2, "query($c: String!) { "
                     "ms: getMeshsyncStatus(connectionID: $c) { name status version connectionID } "
                     "nats: getNatsStatus(connectionID: $c) { name status version connectionID } }",
                     c=t.connection)  # fmt: skip


async def s_controllers(w: World, t: Target) -> Any:
    return await snapshot(w, USER2, CONTROLLERS_SUB, {"ids": None})


async def s_controllers_named(w: World, t: Target) -> Any:
    return await snapshot(w, USER2, CONTROLLERS_SUB, {"ids": [t.connection]})


async def _sse_controllers(w: World, **params: str) -> Any:
    headers = {"authorization": f"Bearer {TOKEN_OF[USER2]}"}
    async with sse(w.http, CONTROLLERS_SSE, headers, **params) as stream:
        [first] = await stream.take(1)
        return json.loads(first.data)


async def r_controllers_sse(w: World, t: Target) -> Any:
    return await _sse_controllers(w)


async def r_controllers_sse_named(w: World, t: Target) -> Any:
    return await _sse_controllers(w, connectionIds=t.connection)


async def s_contexts(w: World, t: Target) -> Any:
    """The snapshot, then: user1 renames its context, user2 adds one of its own."""
    async with subscription(w, USER2, K8S_SUB, {"s": ALL}) as client:
        first = await next_data(client)
        await ok(w, USER1, ADD_CONTEXT, i={"id": "ctx-u1", "name": f"{SECRET}-renamed",
                                           "server": f"https://{SECRET}.example:6443"})  # fmt: skip
        await w.rebaseline()
        await ok(w, USER2, ADD_CONTEXT, i={"id": t.context, "name": "mine", "server": "https://m"})
        return [first, await next_data(client)]


async def s_configuration(w: World, t: Target) -> Any:
    async with subscription(w, USER2, CONFIG_SUB, {"s": ALL}) as client:
        first = await next_data(client)
        await ok(w, USER1, SAVE_PATTERN, i={"id": w.user1.design, "name": f"{SECRET}-v2",
                                            "pattern_file": SECRET})  # fmt: skip
        await w.rebaseline()
        await ok(w, USER2, SAVE_PATTERN, i={"id": t.design, "name": "mine", "pattern_file": "m"})
        return [first, await next_data(client)]


async def s_profiles(w: World, t: Target) -> Any:
    """No snapshot: user1 changes its profile, then user2 saves one; user2's first page."""
    async with subscription(w, USER2, PROFILES_SUB, {"s": ALL}) as client:
        await ok(w, USER1, SAVE_PROFILE, i={"id": "prof-u1", "name": f"{SECRET}-v2"})
        await w.rebaseline()
        await ok(w, USER2, SAVE_PROFILE, i={"id": t.profile, "name": "mine"})
        return await next_data(client)


async def _results_after_own_run(w: World, t: Target, cursor: str | None) -> Any:
    # A results subscription names one of the caller's profiles (else it is an
    # error, the same for another user's id as for a missing one).
    await ok(w, USER2, SAVE_PROFILE, i={"id": t.profile, "name": "mine"})
    async with subscription(w, USER2, RESULTS_SUB, {"s": ALL, "p": t.profile},
                            cursor=cursor) as client:  # fmt: skip
        await ok(w, USER1, RECORD, i={"profileID": "prof-u1", "name": f"{SECRET}-run-2"})
        await w.rebaseline()
        await ok(w, USER2, RECORD, i={"profileID": t.profile, "name": "mine"})
        return await next_data(client)


async def s_results(w: World, t: Target) -> Any:
    """user1 records into its profile, user2 into its own of the same id: user2's first page."""
    return await _results_after_own_run(w, t, None)


async def s_results_resumed(w: World, t: Target) -> Any:
    """A resume from cursor 0 replays the profile's topic from the start: still only user2's."""
    return await _results_after_own_run(w, t, "0")


async def s_cluster_resources(w: World, t: Target) -> Any:
    return await snapshot(w, USER2, RESOURCES_SUB, {"ids": [t.context], "ns": "default"})


async def _events_after_own(w: World, cursor: str | None) -> Any:
    async with subscription(w, USER2, EVENTS_SUB, cursor=cursor) as client:
        await ok(w, USER1, PUBLISH_EVENT, i={"severity": "debug", "description": f"{SECRET}-2"})
        await w.rebaseline()
        await ok(w, USER2, PUBLISH_EVENT, i={"severity": "debug", "description": "mine"})
        return (await next_data(client))["data"]["subscribeEvents"]["description"]


async def s_events(w: World, t: Target) -> Any:
    return await _events_after_own(w, None)


async def s_events_resumed(w: World, t: Target) -> Any:
    return await _events_after_own(w, "0")


async def m_add_context(w: World, t: Target) -> Any:
    return await gql(
        w, USER2, ADD_CONTEXT, i={"id": t.context, "name": "mine", "server": "https://m"}
    )


async def m_claim_connection(w: World, t: Target) -> Any:
    return await gql(w, USER2, ADD_CONTEXT, i={"name": "mine", "server": "https://m",
                                               "connection_id": t.connection})  # fmt: skip


async def m_claim_then_operator(w: World, t: Target) -> Any:
    """The reported attack: a context of one's own on user1's connection, then
    the operator of whatever it reaches."""
    claim = await m_claim_connection(w, t)
    mine = [c["id"] for c in w.app.model.contexts(USER2)]
    flips = [await gql(w, USER2, "mutation($c: String!, $s: Status!) { changeOperatorStatus("
                       "input: {targetStatus: $s, contextID: $c}) }", c=c, s=s)
             for c in mine for s in ("ENABLED", "DISABLED")]  # fmt: skip
    return [claim, flips]


async def r_claim_connection(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "k8s_context", "op": "upsert", "context": {
        "name": "mine", "server": "https://m", "connection_id": t.connection}})  # fmt: skip


async def m_delete_context(w: World, t: Target) -> Any:
    return await gql(w, USER2, "mutation($c: String!) { deleteK8sContext(id: $c) }", c=t.context)


async def m_operator(w: World, t: Target) -> Any:
    return await gql(w, USER2, "mutation($c: String!) { changeOperatorStatus(input: "
                     "{targetStatus: ENABLED, contextID: $c}) }", c=t.context)  # fmt: skip


async def m_save_pattern(w: World, t: Target) -> Any:
    return await gql(
        w, USER2, SAVE_PATTERN, i={"id": t.design, "name": "mine", "pattern_file": "m"}
    )


async def m_delete_pattern(w: World, t: Target) -> Any:
    return await gql(w, USER2, "mutation($d: ID!) { deletePattern(id: $d) }", d=t.design)


async def m_save_filter(w: World, t: Target) -> Any:
    return await gql(w, USER2, SAVE_FILTER, i={"id": t.filter, "name": "mine", "filter_file": "m"})


async def m_delete_filter(w: World, t: Target) -> Any:
    return await gql(w, USER2, "mutation($f: ID!) { deleteFilter(id: $f) }", f=t.filter)


async def m_save_profile(w: World, t: Target) -> Any:
    return await gql(w, USER2, SAVE_PROFILE, i={"id": t.profile, "name": "mine"})


async def m_delete_profile(w: World, t: Target) -> Any:
    return await gql(w, USER2, "mutation($p: String!) { deletePerformanceProfile(id: $p) }",
                     p=t.profile)  # fmt: skip


async def m_record_result(w: World, t: Target) -> Any:
    return await gql(w, USER2, RECORD, i={"profileID": t.profile, "name": "mine"})


async def r_context_upsert(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "k8s_context", "op": "upsert",
                                    "context": {"id": t.context, "name": "mine", "server": "https://m"}})  # fmt: skip


async def r_context_delete(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "k8s_context", "op": "delete", "id": t.context})


async def r_pattern_upsert(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "pattern", "op": "upsert",
                                    "pattern": {"id": t.design, "name": "mine", "pattern_file": "m"}})  # fmt: skip


async def r_pattern_delete(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "pattern", "op": "delete", "id": t.design})


async def r_filter_upsert(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "filter", "op": "upsert",
                                    "filter": {"id": t.filter, "name": "mine", "filter_file": "m"}})  # fmt: skip


async def r_filter_delete(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "filter", "op": "delete", "id": t.filter})


async def r_profile_upsert(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "perf_profile", "op": "upsert",
                                    "profile": {"id": t.profile, "name": "mine"}})  # fmt: skip


async def r_profile_delete(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "perf_profile", "op": "delete", "id": t.profile})


async def r_result_append(w: World, t: Target) -> Any:
    return await publish(w, USER2, {"type": "perf_result", "op": "append",
                                    "result": {"profileID": t.profile, "name": "mine"}})  # fmt: skip


async def r_events_read(w: World, t: Target) -> Any:
    return await rest(w, USER2, "GET", f"{EVENTS}?pagesize=all")


async def r_event_to_user1(w: World, t: Target) -> Any:
    return await rest(w, USER2, "POST", EVENTS,
                      {"severity": "alert", "description": "spoofed", "user_id": USER1})  # fmt: skip


def errors(seen: Any) -> list[str]:
    return list(seen["errors"])


def empty_page(key: str, items: str) -> Callable[[Any], None]:
    def check(seen: Any) -> None:
        assert seen["data"][key]["total_count"] == 0 and seen["data"][key][items] == [], seen

    return check


def refused(seen: Any) -> None:
    """A GraphQL error (one, naming no more than the id it was given)."""
    assert seen["data"] is None and len(errors(seen)) == 1, seen


def claim_refused(seen: Any) -> None:
    """The claim is refused, so user2 holds no context to change an operator through."""
    claim, flips = seen
    refused(claim)
    assert flips == [], seen


def rest_refused(seen: Any) -> None:
    assert seen["status"] == 400 and seen["body"]["applied"] == 0, seen


def owned_by_user2(path: tuple[str | int, ...]) -> Callable[[Any], None]:
    def check(seen: Any) -> None:
        value = seen
        for key in path:
            value = value[key]
        assert value["name"] == "mine" and USER2 in (value.get("owner"), value.get("user_id")), seen

    return check


def only_mine(seen: Any) -> None:
    page = seen if isinstance(seen, dict) else seen[-1]
    assert "mine" in json.dumps(page), seen


@dataclass(frozen=True)
class Row:
    attack: Attack
    #: What user2 must see (besides: no secret, and the same as for missing ids).
    expect: Callable[[Any], None]
    #: Compare with the same operation on ids that exist nowhere.
    probe: bool = True


ROWS = {
    "query getPerformanceProfiles": Row(q_profiles, empty_page("getPerformanceProfiles", "profiles"), probe=False),
    "query fetchResults": Row(q_results, empty_page("fetchResults", "results")),
    "query fetchAllResults": Row(q_all_results, empty_page("fetchAllResults", "results"), probe=False),
    "query getPerfResult": Row(q_result, lambda s: s == {"data": {"getPerfResult": None}, "errors": []}),
    "query fetchPatterns": Row(q_patterns, empty_page("fetchPatterns", "patterns"), probe=False),
    "query getKubectlDescribe": Row(q_describe, refused),
    "query resyncCluster": Row(q_resync, refused),
    "query getAvailableNamespaces": Row(q_namespaces, lambda s: s["data"] == {"getAvailableNamespaces": []}),
    "query getOperatorStatus": Row(q_operator, lambda s: s == {"data": {"getOperatorStatus": None}, "errors": []}),
    "query getMeshsyncStatus getNatsStatus": Row(q_controller_statuses, lambda s: {v["status"] for v in s["data"].values()} == {"UNKNOWN"}),
    "subscribeMesheryControllersStatus": Row(s_controllers, lambda s: s["data"] == {"subscribeMesheryControllersStatus": []}),
    "subscribeMesheryControllersStatus named": Row(s_controllers_named, lambda s: s["data"] == {"subscribeMesheryControllersStatus": []}),
    "REST SSE controllers status": Row(r_controllers_sse, lambda s: s == []),
    "REST SSE controllers status named": Row(r_controllers_sse_named, lambda s: s == []),
    "subscribeK8sContext": Row(s_contexts, only_mine),
    "subscribeConfiguration": Row(s_configuration, only_mine),
    "subscribePerfProfiles": Row(s_profiles, only_mine),
    "subscribePerfResults": Row(s_results, only_mine),
    "subscribePerfResults resumed": Row(s_results_resumed, only_mine),
    "subscribeClusterResources": Row(s_cluster_resources, lambda s: s["data"] == {"subscribeClusterResources": {"resources": []}}),
    "subscribeEvents": Row(s_events, lambda s: s == "mine", probe=False),
    "subscribeEvents resumed": Row(s_events_resumed, lambda s: s == "mine", probe=False),
    "mutation addK8sContext": Row(m_add_context, owned_by_user2(("data", "addK8sContext"))),
    "mutation deleteK8sContext": Row(m_delete_context, refused),
    "mutation addK8sContext on user1's connection": Row(m_claim_connection, refused),
    "mutation addK8sContext on user1's connection, changeOperatorStatus": Row(m_claim_then_operator, claim_refused),
    "mutation changeOperatorStatus": Row(m_operator, refused),
    "mutation savePattern": Row(m_save_pattern, owned_by_user2(("data", "savePattern"))),
    "mutation deletePattern": Row(m_delete_pattern, refused),
    "mutation saveFilter": Row(m_save_filter, owned_by_user2(("data", "saveFilter"))),
    "mutation deleteFilter": Row(m_delete_filter, refused),
    "mutation savePerformanceProfile": Row(m_save_profile, owned_by_user2(("data", "savePerformanceProfile"))),
    "mutation deletePerformanceProfile": Row(m_delete_profile, refused),
    "mutation recordPerfResult": Row(m_record_result, refused),
    "REST k8s_context upsert": Row(r_context_upsert, owned_by_user2(("body", "results", 0))),
    "REST k8s_context delete": Row(r_context_delete, rest_refused),
    "REST k8s_context upsert on user1's connection": Row(r_claim_connection, rest_refused),
    "REST pattern upsert": Row(r_pattern_upsert, owned_by_user2(("body", "results", 0))),
    "REST pattern delete": Row(r_pattern_delete, rest_refused),
    "REST filter upsert": Row(r_filter_upsert, owned_by_user2(("body", "results", 0))),
    "REST filter delete": Row(r_filter_delete, rest_refused),
    "REST perf_profile upsert": Row(r_profile_upsert, owned_by_user2(("body", "results", 0))),
    "REST perf_profile delete": Row(r_profile_delete, rest_refused),
    "REST perf_result append": Row(r_result_append, rest_refused),
    "REST GET events": Row(r_events_read, lambda s: s["body"]["total_count"] == 0, probe=False),
    "REST POST event to user1": Row(r_event_to_user1, lambda s: s["status"] == 403, probe=False),
}  # fmt: skip

#: Generated, time- or instance-dependent fields: two runs of one operation differ there
#: (a user's new context gets a fresh connection id from the server).
_VOLATILE = {"updated_at", "created_at", "last_run", "meshery_id", "test_id", "meshery_instance_id",
             "connection_id"}  # fmt: skip


def normalized(seen: Any, target: Target) -> Any:
    """*seen* with the target's ids named by role and volatile fields dropped."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in _VOLATILE}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    text = json.dumps(strip(seen))
    for value, name in target.names().items():
        text = text.replace(value, name)
    return json.loads(text)


def owners_in(value: Any) -> set[str]:
    if isinstance(value, dict):
        found = {str(v) for k, v in value.items() if k in OWNER_KEYS and v is not None}
        return found.union(*(owners_in(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(*(owners_in(v) for v in value))
    return set()


async def run_row(w: World, row: Row, target: Target) -> Any:
    """Run one attack as user2 and check that user1 lost nothing and user2 got nothing."""
    w.before = await view(w, USER1)
    assert SECRET in json.dumps(w.before)  # user1 does see its own objects
    seen = await row.attack(w, target)
    assert SECRET not in json.dumps(seen), seen
    row.expect(seen)
    after = await view(w, USER1)
    assert after == w.before, "user2 changed something of user1's"
    theirs = await view(w, USER2)
    assert SECRET not in json.dumps(theirs), theirs
    assert owners_in(theirs) <= {USER2}, theirs
    # Nothing of user1's connection reaches user2, whatever user2 now holds.
    assert theirs["operator"] is None, theirs
    assert target.connection not in json.dumps(theirs["controllers"]), theirs
    await wait_idle(w.server)
    return seen


@pytest.mark.parametrize("name", sorted(ROWS))
async def test_user2_sees_and_changes_nothing_of_user1s(new_world: WorldFactory, name: str) -> None:
    row = ROWS[name]
    with trio.fail_after(20):
        world = await new_world()
        seen = await run_row(world, row, world.user1)
        if row.probe:
            # The same operation on ids that exist nowhere, from the same starting point.
            elsewhere = await new_world()
            missing = await run_row(elsewhere, row, MISSING)
            assert normalized(seen, world.user1) == normalized(missing, MISSING)


# ---- scale-out: the same on every process ----------------------------------------------------


@asynccontextmanager
async def token_replica(nats: NatsServer) -> AsyncIterator[tuple[Replica, httpx.AsyncClient]]:
    """A replica in token mode on its own NATS connection, with an HTTP client."""
    async with NatsBroker.connect(
        nats.url, reconnect_wait=0.1, log=LogStream(name="MESHERY", subjects=("meshery.>",), heartbeat=0.5)
    ) as broker:
        app = create_app(broker=broker, simulator=False, tokens=TOKENS)
        async with trio.open_nursery() as nursery:
            config = Config(port=0, keepalive=0, close_timeout=1.0)
            server: Server = await nursery.start(serve, app, config)
            try:
                async with httpx.AsyncClient(base_url=server.url, timeout=5, verify=False) as http:
                    yield Replica(app, server, broker), http
            finally:
                server.shutdown()


async def user_records(http: httpx.AsyncClient, user: str) -> dict[str, Any]:
    """What *user* reads over HTTP on one replica: profiles, results, designs."""
    response = await http.post(
        GRAPHQL,
        json={
            "query": """query($s: PageFilter!) {
              getPerformanceProfiles(selector: $s) { profiles { id name user_id request_headers total_results } }
              fetchAllResults(selector: $s) { results { name user_id performance_profile } }
              fetchPatterns(selector: $s) { patterns { id name user_id pattern_file } } }""",
            "variables": {"s": ALL},
        },
        headers={"authorization": f"Bearer {TOKEN_OF[user]}"},
    )
    body: dict[str, Any] = response.json()
    assert "errors" not in body, body
    return body["data"]  # type: ignore[no-any-return]


async def test_ownership_holds_on_every_replica(nats_server: NatsServer) -> None:
    """Two users write the same ids at once on two processes, then user2 deletes
    and re-records: every process ends with both users' records, each intact."""
    async with token_replica(nats_server) as (a, http_a), token_replica(nats_server) as (b, http_b):
        with trio.fail_after(SOON):
            for http, user in ((http_a, USER1), (http_b, USER2)):  # no sync in between
                token = {"authorization": f"Bearer {TOKEN_OF[user]}"}
                for message in (
                    {"type": "pattern", "op": "upsert", "pattern": {"id": "d-x", "name": user, "pattern_file": f"{user} file"}},
                    {"type": "perf_profile", "op": "upsert", "profile": {"id": "p-x", "name": user, "request_headers": f"{user} header"}},
                    {"type": "perf_result", "op": "append", "result": {"profileID": "p-x", "name": f"{user} run"}},
                    {"type": "k8s_context", "op": "upsert", "context": {"id": "c-x", "name": user, "server": "https://k"}},
                ):  # fmt: skip
                    response = await http.post(PUBLISH, json=message, headers=token)
                    assert response.status_code == 200, response.text
            # user2, on B, deletes "its" design and profile before B heard of user1's.
            token2 = {"authorization": f"Bearer {TOKEN_OF[USER2]}"}
            for kind in ("pattern", "perf_profile"):
                deleted = await http_b.post(PUBLISH, json={"type": kind, "op": "delete", "id": "d-x" if kind == "pattern" else "p-x"}, headers=token2)  # fmt: skip
                assert deleted.status_code == 200, deleted.text
            await b.sync()
            await a.sync()
            await b.sync()

            for http in (http_a, http_b):
                mine = await user_records(http, USER1)
                assert mine == {
                    "getPerformanceProfiles": {"profiles": [{"id": "p-x", "name": USER1, "user_id": USER1, "request_headers": f"{USER1} header", "total_results": 1}]},
                    "fetchAllResults": {"results": [{"name": f"{USER1} run", "user_id": USER1, "performance_profile": "p-x"}]},
                    "fetchPatterns": {"patterns": [{"id": "d-x", "name": USER1, "user_id": USER1, "pattern_file": f"{USER1} file"}]},
                }  # fmt: skip
                theirs = await user_records(http, USER2)
                assert theirs == {
                    "getPerformanceProfiles": {"profiles": []},
                    "fetchAllResults": {"results": []},
                    "fetchPatterns": {"patterns": []},
                }
            for replica in (a, b):
                contexts = sorted((c["owner"], c["name"]) for c in replica.app.model.contexts())
                assert contexts == [(USER1, USER1), (USER2, USER2)]


# ---- the simulator's objects ---------------------------------------------------------------


async def test_simulated_clusters_reach_every_user_its_artifacts_only_their_owner(
    start_server: Any,
) -> None:
    """Token mode: each user gets its own context for each simulated cluster (as
    Meshery registers a discovered cluster per user); the simulated profile,
    its results and design stay the simulator's owner's (the local user id)."""
    tokens = {**TOKENS, "token-0": LOCAL_USER_ID}
    app = create_app(seed=3, rate=20.0, tokens=tokens)
    server = await start_server(app=app)
    w = World(server, app, httpx.AsyncClient(base_url=server.url, timeout=5, verify=False))
    try:
        with trio.fail_after(15):
            async with subscription(
                w, LOCAL_USER_ID, PROFILES_SUB, {"s": ALL}, live=False
            ) as owner:
                owned = (await next_data(owner))["data"]["subscribePerfProfiles"]
            assert owned["profiles"][0]["user_id"] == LOCAL_USER_ID
            async with subscription(w, USER1, K8S_SUB, {"s": ALL}, live=False) as client:
                page = (await next_data(client))["data"]["subscribeK8sContext"]
                while page["total_count"] < 2:
                    page = (await next_data(client))["data"]["subscribeK8sContext"]
            assert {c["owner"] for c in page["contexts"]} == {USER1}
            theirs = {c["id"] for c in app.model.contexts(LOCAL_USER_ID)}
            assert {c["id"] for c in page["contexts"]} == theirs
            for user in (USER1, USER2):
                assert (await view(w, user))["profiles"] == {"total_count": 0, "profiles": []}
    finally:
        await w.http.aclose()
