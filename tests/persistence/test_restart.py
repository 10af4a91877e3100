"""Acknowledged means durable: every kind of change, made over real HTTP and
WebSocket against a real ``meshsub-trio serve --data-dir``, is there after a
SIGKILL and a restart on the same directory; state subscriptions show it at
once, and an event subscription resumes from its cursor with nothing lost
or repeated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from ..scaleout._kit import (
    EVENTS,
    EVENTS_PATH,
    Reader,
    descriptions,
    graphql,
    http_client,
    post_event,
)
from ._kit import serving

PUBLISH_PATH = "/api/meshsub/publish"
PAGE = '{page: "0", pageSize: "100"}'

SAVE_PATTERN = "mutation($i: PatternInput!) { savePattern(input: $i) { id name } }"
DELETE_PATTERN = "mutation($id: ID!) { deletePattern(id: $id) }"
SAVE_FILTER = "mutation($i: FilterInput!) { saveFilter(input: $i) { id } }"
DELETE_FILTER = "mutation($id: ID!) { deleteFilter(id: $id) }"
ADD_CONTEXT = "mutation($i: K8sContextInput!) { addK8sContext(input: $i) { id connection_id } }"
DELETE_CONTEXT = "mutation($id: String!) { deleteK8sContext(id: $id) }"
SAVE_PROFILE = "mutation($i: PerformanceProfileInput!) { savePerformanceProfile(input: $i) { id } }"
DELETE_PROFILE = "mutation($id: String!) { deletePerformanceProfile(id: $id) }"
RECORD_RESULT = "mutation($i: PerfResultInput!) { recordPerfResult(input: $i) { meshery_id } }"
COMPONENT = "mutation($i: MeshModelEntityInput!) { addMeshModelComponent(input: $i) }"
RELATIONSHIP = "mutation($i: MeshModelEntityInput!) { addMeshModelRelationship(input: $i) }"
PUBLISH_EVENT = "mutation($i: EventInput!) { publishEvent(input: $i) { id description } }"
SET_CONTROLLER = (
    "mutation($i: ControllerStatusInput!) { setControllerStatus(input: $i) { status } }"
)
ADD_OBJECT = "mutation($i: ClusterResourceInput!) { addClusterResource(input: $i) }"

CONFIGURATION = f"""subscription {{ subscribeConfiguration(patternSelector: {PAGE},
  filterSelector: {PAGE}) {{ patterns {{ patterns {{ id name pattern_file }} }}
  filters {{ filters {{ id name }} }} }} }}"""
CONTEXTS = f"subscription {{ subscribeK8sContext(selector: {PAGE}) {{ contexts {{ id name }} }} }}"
CONTROLLERS = "subscription { subscribeMesheryControllersStatus { connectionID status } }"
STATE_QUERY = f"""{{
  getPerformanceProfiles(selector: {PAGE}) {{ profiles {{ id name total_results }} }}
  fetchAllResults(selector: {PAGE}) {{ results {{ meshery_id name performance_profile }} }}
  components: getMeshModelSummary(selector: {{type: "components"}}) {{ components {{ name count }} }}
  relationships: getMeshModelSummary(selector: {{type: "relationships"}}) {{
    relationships {{ name count }} }}
}}"""


async def ok(http: httpx.AsyncClient, query: str, **variables: Any) -> dict[str, Any]:
    """One acknowledged mutation (or query): its data, or the test fails."""
    answer = await graphql(http, query, **variables)
    assert "errors" not in answer, answer
    return answer["data"]  # type: ignore[no-any-return]


async def change_everything(http: httpx.AsyncClient) -> dict[str, Any]:
    """Every kind of change, some undone again; returns what must survive."""
    kept = await ok(http, SAVE_PATTERN, i={"name": "bookinfo", "pattern_file": "a: 1"})
    kept_id = kept["savePattern"]["id"]
    await ok(http, SAVE_PATTERN, i={"id": kept_id, "name": "bookinfo", "pattern_file": "a: 2"})
    gone = await ok(http, SAVE_PATTERN, i={"name": "scratch", "pattern_file": "b: 1"})
    assert (await ok(http, DELETE_PATTERN, id=gone["savePattern"]["id"]))["deletePattern"]

    filter_id = (await ok(http, SAVE_FILTER, i={"name": "authz", "filter_file": "(module)"}))[
        "saveFilter"
    ]["id"]
    gone = await ok(http, SAVE_FILTER, i={"name": "old", "filter_file": "(module)"})
    assert (await ok(http, DELETE_FILTER, id=gone["saveFilter"]["id"]))["deleteFilter"]

    context = (await ok(http, ADD_CONTEXT, i={"name": "prod", "server": "https://prod:6443"}))[
        "addK8sContext"
    ]
    gone = await ok(http, ADD_CONTEXT, i={"name": "tmp", "server": "https://tmp:6443"})
    assert (await ok(http, DELETE_CONTEXT, id=gone["addK8sContext"]["id"]))["deleteK8sContext"]

    profile_id = (await ok(http, SAVE_PROFILE, i={"name": "soak"}))["savePerformanceProfile"]["id"]
    results = [
        (await ok(http, RECORD_RESULT, i={"profileID": profile_id, "name": f"run {n}"}))[
            "recordPerfResult"
        ]["meshery_id"]
        for n in (1, 2)
    ]
    gone_profile = (await ok(http, SAVE_PROFILE, i={"name": "gone"}))["savePerformanceProfile"]
    await ok(http, RECORD_RESULT, i={"profileID": gone_profile["id"], "name": "lost run"})
    assert (await ok(http, DELETE_PROFILE, id=gone_profile["id"]))["deletePerformanceProfile"]

    entity = {"model": "istio-base", "version": "1.22.0", "name": "VirtualService"}
    assert (await ok(http, COMPONENT, i=entity))["addMeshModelComponent"]
    assert (await ok(http, RELATIONSHIP, i={**entity, "name": "edge"}))["addMeshModelRelationship"]

    # Live state, which a restart does not keep (the cluster reports it again).
    controller = {"connectionID": context["connection_id"], "controller": "BROKER"}
    await ok(http, SET_CONTROLLER, i={**controller, "status": "CONNECTED"})
    obj = {"kubernetes_server_id": "k1", "kind": "Pod", "namespace": "default", "name": "p"}
    assert (await ok(http, ADD_OBJECT, i=obj))["addClusterResource"]

    # The publish route: a design in a batch (an event comes with the events).
    batch = {"type": "pattern", "op": "upsert", "pattern": {"name": "via-publish",
             "pattern_file": "c: 1"}}  # fmt: skip
    response = await http.post(PUBLISH_PATH, json=batch)
    assert response.status_code == 200, response.text
    return {
        "patterns": {kept_id: "a: 2", response.json()["results"][0]["id"]: "c: 1"},
        "filters": [filter_id],
        "contexts": [context["id"]],
        "profile": profile_id,
        "results": results,
    }


async def publish_events(http: httpx.AsyncClient, names: list[str]) -> None:
    """Acknowledged events, round-robin over the three ways to publish one."""
    for index, name in enumerate(names):
        if index % 3 == 0:
            await ok(http, PUBLISH_EVENT, i={"severity": "warning", "description": name})
        elif index % 3 == 1:
            response = await post_event(http, name)
            assert response.status_code == 201, response.text
        else:
            event = {
                "type": "event",
                "op": "append",
                "event": {"description": name, "severity": "debug"},
            }
            response = await http.post(PUBLISH_PATH, json=event)
            assert response.status_code == 200, response.text


async def first_payload(port: int, query: str, nursery: trio.Nursery) -> Any:
    reader = Reader(query, query[:40])
    await reader.start(nursery, port)
    await reader.wait_count(1)
    return reader.items[0][1]


async def test_everything_acknowledged_survives_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    seen = [f"seen-{n}" for n in range(4)]
    missed = [f"missed-{n}" for n in range(5)]
    async with trio.open_nursery() as nursery:
        async with serving(data) as first, http_client(first.port) as http:
            before = Reader(EVENTS, "before the crash")
            await before.start(nursery, first.port, cursor="0")  # from the start: no race
            expected = await change_everything(http)
            await publish_events(http, seen)
            await before.wait_count(len(seen))
            cursor = before.cursor
            assert cursor is not None
            await publish_events(http, missed)
            first.sigkill()  # right after the last answer: nothing gets a grace period
        await before.wait_closed()
        assert descriptions(before)[: len(seen)] == seen

        async with serving(data) as second, http_client(second.port) as http:
            await check_state(http, expected, second.port, nursery)
            history = (await http.get(EVENTS_PATH, params={"pagesize": "all"})).json()
            assert sorted(e["description"] for e in history["events"]) == sorted(seen + missed)

            resumed = Reader(EVENTS, "resumed")
            await resumed.start(nursery, second.port, cursor)
            await resumed.wait_count(len(missed))
            await publish_events(http, ["after-restart"])
            await resumed.wait_count(len(missed) + 1)
            assert descriptions(resumed) == [*missed, "after-restart"]
            cursors = [int(c) for c, _ in [(cursor, None), *resumed.items] if c is not None]
            assert len(cursors) == len(missed) + 2 and cursors == sorted(set(cursors)), cursors
            # The last cursor of the old run still resumes exactly: only what came after.
            tail = Reader(EVENTS, "tail")
            await tail.start(nursery, second.port, resumed.items[len(missed) - 1][0])
            await tail.wait_count(1)
            assert descriptions(tail) == ["after-restart"]
        nursery.cancel_scope.cancel()


async def check_state(
    http: httpx.AsyncClient, expected: dict[str, Any], port: int, nursery: trio.Nursery
) -> None:
    configuration = (await first_payload(port, CONFIGURATION, nursery))["subscribeConfiguration"]
    patterns = configuration["patterns"]["patterns"]
    assert {p["id"]: p["pattern_file"] for p in patterns} == expected["patterns"]
    assert [f["id"] for f in configuration["filters"]["filters"]] == expected["filters"]
    contexts = (await first_payload(port, CONTEXTS, nursery))["subscribeK8sContext"]["contexts"]
    assert [c["id"] for c in contexts] == expected["contexts"]
    # Controllers are live state: nothing is claimed about them until reported again.
    assert (await first_payload(port, CONTROLLERS, nursery)) == {
        "subscribeMesheryControllersStatus": []
    }

    state = await ok(http, STATE_QUERY)
    profiles = state["getPerformanceProfiles"]["profiles"]
    assert [(p["id"], p["total_results"]) for p in profiles] == [(expected["profile"], 2)]
    results = state["fetchAllResults"]["results"]
    assert sorted(r["meshery_id"] for r in results) == sorted(expected["results"])
    assert state["components"]["components"] == [{"name": "istio-base", "count": 1}]
    assert state["relationships"]["relationships"] == [{"name": "istio-base", "count": 1}]
