"""The Meshery app's plain HTTP routes, the playground and GraphQL over HTTP,
through httpx against a real server; published events must reach live
subscriptions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx
import pytest

from meshsub_trio import Server
from meshsub_trio.meshery import LOCAL_USER_ID, create_app

from ..interop.conftest import wait_idle
from ..wsclient import TRANSPORT, RawClient, open_raw_client
from .test_e2e_documents import UI_DOCUMENTS, bounded, when_live

EVENTS = "/api/system/events"
PUBLISH = "/api/meshsub/publish"
GRAPHQL = "/api/system/graphql/query"
TOKENS = {"alice-token": "alice", "bob-token": "bob", "svc-token": "svc"}


def http_client(server: Server) -> httpx.AsyncClient:
    # Plain HTTP on loopback: verify=False only skips loading CA files (slow).
    return httpx.AsyncClient(base_url=server.url, timeout=5, verify=False)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def local(start_server: Any) -> AsyncIterator[tuple[Server, Any, httpx.AsyncClient]]:
    app = create_app(simulator=False)
    server = await start_server(app=app)
    async with http_client(server) as http:
        yield server, app, http


@pytest.fixture
async def tokens(start_server: Any) -> AsyncIterator[tuple[Server, Any, httpx.AsyncClient]]:
    app = create_app(simulator=False, tokens=TOKENS)
    app.event_publishers.add("svc")
    server = await start_server(app=app)
    async with http_client(server) as http:
        yield server, app, http


async def events_subscriber(stack: AsyncExitStack, server: Server, **headers: str) -> RawClient:
    doc = UI_DOCUMENTS["events"]
    client = await stack.enter_async_context(
        open_raw_client(
            server.port,
            path=GRAPHQL,
            subprotocols=[TRANSPORT],
            extra_headers=[(k.encode(), v.encode()) for k, v in headers.items()],
        )
    )
    assert (await client.init())["type"] == "connection_ack"
    await client.send({"id": "e", "type": "subscribe", "payload": doc.request()})
    return client


async def next_event(client: RawClient) -> dict[str, Any]:
    message = await client.receive()
    assert message["type"] == "next", message
    return message["payload"]["data"]["event"]


def error_of(response: httpx.Response) -> str:
    (error,) = response.json()["errors"]
    return error["message"]


# ---- POST /api/system/events ---------------------------------------------------------


@bounded()
async def test_posted_event_reaches_the_live_subscription(
    local: tuple[Server, Any, httpx.AsyncClient],
) -> None:
    server, _app, http = local
    async with AsyncExitStack() as stack:
        subscriber = await events_subscriber(stack, server)
        await when_live(server, 1)
        body = {
            "severity": "error",
            "description": "image pull failed",
            "category": "kubernetes",
            "action": "deploy",
            "acted_upon": "ctx-1",  # meshkit's spelling works too
            "metadata": {"pod": "web-1"},
        }
        response = await http.post(EVENTS, json=body)
        assert response.status_code == 201, response.text
        stored = response.json()
        received = await next_event(subscriber)
    assert received == stored
    assert stored["userID"] == LOCAL_USER_ID and stored["actedUpon"] == "ctx-1"
    assert stored["metadata"] == {"pod": "web-1"} and stored["severity"] == "error"
    await wait_idle(server)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"severity": "success", "description": "x"}', "use informational"),
        (b'{"severity": "fatal", "description": "x"}', "severity must be one of"),
        (b'{"description": "x"}', "severity must be one of"),
        (b'{"severity": "error"}', "description must be a non-empty string"),
        (b'{"severity": "error", "description": 5}', "description must be a string"),
        (b'{"severity": "error", "description": "x", "metadata": [1]}', "metadata must be"),
        (b'{"severity": "error", "description": "x", "severty": 1}', "unknown event field"),
        (b'{"severity": "error", "description": "x", "createdAt": "nope"}', "RFC 3339"),
        (b'{"severity": "error", "description": "x", "actedUpon": "a", "acted_upon": "b"}', "one"),
    ],
)
@bounded()
async def test_bad_events_are_400_with_a_clear_message(
    local: tuple[Server, Any, httpx.AsyncClient], content: bytes, words: str
) -> None:
    _server, app, http = local
    response = await http.post(
        EVENTS, content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400, response.text
    assert words in error_of(response)
    assert app.model.events_of(LOCAL_USER_ID) == []


@bounded()
async def test_post_needs_a_json_content_type(
    local: tuple[Server, Any, httpx.AsyncClient],
) -> None:
    """A cross-site form or no-cors fetch cannot send application/json."""
    _server, _app, http = local
    body = b'{"severity": "error", "description": "csrf"}'
    response = await http.post(EVENTS, content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 415
    response = await http.put(EVENTS, content=body)
    assert (response.status_code, response.headers["allow"]) == (405, "GET, HEAD, POST")


@bounded()
async def test_token_mode_needs_a_valid_token(
    tokens: tuple[Server, Any, httpx.AsyncClient],
) -> None:
    _server, _app, http = tokens
    event = {"severity": "error", "description": "x"}
    assert (await http.get(EVENTS)).status_code == 401
    assert (await http.post(EVENTS, json=event, headers=bearer("wrong"))).status_code == 401
    assert (await http.post(PUBLISH, json={}, headers=bearer("wrong"))).status_code == 401
    cookie = {"cookie": "meshery-provider=Meshery; token=alice-token"}
    assert (await http.post(EVENTS, json=event, headers=cookie)).status_code == 201


@bounded()
async def test_who_may_publish_to_whom(tokens: tuple[Server, Any, httpx.AsyncClient]) -> None:
    """Everyone to itself; only a listed publisher to another (known) user."""
    server, app, http = tokens
    to_bob = {"severity": "warning", "description": "for bob", "user_id": "bob"}
    async with AsyncExitStack() as stack:
        bob = await events_subscriber(stack, server, authorization="Bearer bob-token")
        alice = await events_subscriber(stack, server, cookie="token=alice-token")
        await when_live(server, 2)

        refused = await http.post(EVENTS, json=to_bob, headers=bearer("alice-token"))
        assert refused.status_code == 403 and "only publish events to itself" in error_of(refused)
        unknown = await http.post(
            EVENTS, json={**to_bob, "user_id": "mallory"}, headers=bearer("svc-token")
        )
        assert unknown.status_code == 404
        sent = await http.post(EVENTS, json=to_bob, headers=bearer("svc-token"))
        assert sent.status_code == 201, sent.text
        own = {"severity": "debug", "description": "alice's own", "user_id": "alice"}
        assert (await http.post(EVENTS, json=own, headers=bearer("alice-token"))).status_code == 201

        assert (await next_event(bob))["description"] == "for bob"
        assert (await next_event(alice))["description"] == "alice's own"
    assert [e["description"] for e in app.model.events_of("bob")] == ["for bob"]
    await wait_idle(server)


# ---- GET /api/system/events ----------------------------------------------------------


@bounded()
async def test_history_is_newest_first_and_paged(
    tokens: tuple[Server, Any, httpx.AsyncClient],
) -> None:
    _server, app, http = tokens
    severities = ["error", "warning", "error", "debug", "alert"]
    for number, severity in enumerate(severities):
        app.model.publish_event("alice", {"severity": severity, "description": f"event {number}"})
    app.model.publish_event("bob", {"severity": "error", "description": "bob's"})

    async def get(**query: str) -> httpx.Response:
        return await http.get(EVENTS, params=query, headers=bearer("alice-token"))

    page = (await get(page="0", pagesize="2")).json()
    assert [e["description"] for e in page["events"]] == ["event 4", "event 3"]
    assert (page["page"], page["page_size"], page["total_count"]) == (0, 2, 5)
    assert page["count_by_severity_level"] == [
        {"severity": "alert", "count": 1},
        {"severity": "error", "count": 2},
        {"severity": "warning", "count": 1},
        {"severity": "debug", "count": 1},
    ]
    second = (await get(page="2", pagesize="2")).json()
    assert [e["description"] for e in second["events"]] == ["event 0"]
    everything = (await get(pagesize="all", order="asc")).json()
    assert [e["description"] for e in everything["events"]] == [f"event {i}" for i in range(5)]
    errors = (await get(severity='["error","alert"]')).json()
    assert [e["description"] for e in errors["events"]] == ["event 4", "event 2", "event 0"]
    assert (await get(severity="warning,debug")).json()["total_count"] == 2
    assert (await get(search="EVENT 3")).json()["total_count"] == 1
    default = (await get()).json()
    assert default["page_size"] == 25 and "bob's" not in str(default)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"page": "-1"}, "page must be a whole number"),
        ({"pagesize": "ten"}, "pagesize must be a whole number"),
        ({"pagesize": "0"}, "pagesize must be a whole number"),
        ({"severity": "success"}, "unknown severity success"),
        ({"severity": '["error"'}, "JSON array"),
        ({"order": "sideways"}, "order must be asc or desc"),
    ],
)
@bounded()
async def test_bad_history_queries_are_400(
    local: tuple[Server, Any, httpx.AsyncClient], query: dict[str, str], words: str
) -> None:
    _server, _app, http = local
    response = await http.get(EVENTS, params=query)
    assert response.status_code == 400 and words in error_of(response), response.text


# ---- POST /api/meshsub/publish -------------------------------------------------------


@bounded()
async def test_publish_applies_changes_that_subscribers_see(
    local: tuple[Server, Any, httpx.AsyncClient],
) -> None:
    server, app, http = local
    doc = UI_DOCUMENTS["k8s_contexts"]
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(
            open_raw_client(server.port, path=GRAPHQL, subprotocols=[TRANSPORT])
        )
        await client.init()
        await client.send({"id": "k", "type": "subscribe", "payload": doc.request()})
        assert (await client.receive())["payload"]["data"]["k8sContext"]["total_count"] == 0

        batch = {
            "messages": [
                {
                    "type": "k8s_context",
                    "op": "upsert",
                    "context": {"id": "ctx-1", "name": "kind", "server": "https://k:6443"},
                },
                {
                    "type": "controller",
                    "op": "upsert",
                    "item": {"connectionID": "ctx-1", "controller": "BROKER", "status": "RUNNING"},
                },
                {
                    "type": "cluster_object",
                    "op": "upsert",
                    "object": {"kubernetes_server_id": "ctx-1", "kind": "Pod", "name": "p"},
                },
                {"type": "pattern", "op": "upsert", "pattern": {"name": "d", "pattern_file": "x"}},
                {
                    "type": "meshmodel",
                    "op": "register",
                    "entry": {"entity": "components", "model": "istio", "version": "1.0"},
                },
                {
                    "type": "event",
                    "op": "append",
                    "event": {"severity": "debug", "description": "e"},
                },
            ]
        }
        response = await http.post(PUBLISH, json=batch)
        assert response.status_code == 200, response.text
        assert response.json()["applied"] == 6

        page = (await client.receive())["payload"]["data"]["k8sContext"]
        assert [c["id"] for c in page["contexts"]] == ["ctx-1"]
    model = app.model
    statuses = {i["controller"]: i["status"] for i in model.controller_items({"ctx-1"})}
    assert statuses == {"BROKER": "RUNNING", "OPERATOR": "NOTDEPLOYED", "MESHSYNC": "NOTDEPLOYED"}
    assert model.count_resources({"ctx-1"}, "default") == [{"kind": "Pod", "count": 1}]
    assert [p["name"] for p in model.patterns_of(LOCAL_USER_ID)] == ["d"]
    assert [e["description"] for e in model.events_of(LOCAL_USER_ID)] == ["e"]
    await wait_idle(server)


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ({"type": "nope", "op": "upsert"}, "unsupported type/op"),
        ({"type": "controller", "op": "upsert", "item": {"connectionID": "c"}}, "item"),
        (
            {
                "type": "controller",
                "op": "upsert",
                "item": {"connectionID": "c", "controller": "BROKER", "status": "UNKNOWN"},
            },
            "MesheryControllerStatus",
        ),
        ({"type": "k8s_context", "op": "upsert", "context": "kind"}, "JSON object"),
        (
            {"type": "perf_result", "op": "append", "result": {"profileID": "missing"}},
            "no performance profile",
        ),
        ({"type": "pattern", "op": "delete"}, "id must be"),
    ],
)
@bounded()
async def test_publish_stops_at_the_first_bad_message(
    local: tuple[Server, Any, httpx.AsyncClient], message: dict[str, Any], words: str
) -> None:
    _server, app, http = local
    good = {"type": "meshmodel", "op": "register", "entry": {
        "entity": "components", "model": "m", "version": "1"}}  # fmt: skip
    response = await http.post(PUBLISH, json={"messages": [good, message, good]})
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["applied"] == 1 and body["errors"][0]["index"] == 1
    assert words in body["errors"][0]["message"], body
    assert app.model.meshmodel_summary("components") == [{"name": "m", "count": 1}]


# ---- playground and GraphQL over HTTP --------------------------------------------------


@bounded()
async def test_playground_serves_graphiql(local: tuple[Server, Any, httpx.AsyncClient]) -> None:
    _server, _app, http = local
    response = await http.get("/api/system/graphql/playground")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "GraphiQL" in response.text and GRAPHQL in response.text


@bounded()
async def test_graphql_query_over_http(tokens: tuple[Server, Any, httpx.AsyncClient]) -> None:
    _server, app, http = tokens
    app.model.register_meshmodel("components", "istio", "1.0")
    query = 'query S { getMeshModelSummary(selector: {type: "components"}) { components { name count } } }'
    expected = {"data": {"getMeshModelSummary": {"components": [{"name": "istio", "count": 1}]}}}
    posted = await http.post(GRAPHQL, json={"query": query}, headers=bearer("bob-token"))
    assert (posted.status_code, posted.json()) == (200, expected)
    got = await http.get(GRAPHQL, params={"query": query}, headers=bearer("bob-token"))
    assert (got.status_code, got.json()) == (200, expected)
    assert (await http.post(GRAPHQL, json={"query": query})).status_code == 401
