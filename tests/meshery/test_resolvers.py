"""Queries and mutations through graphql-core against the app's schema."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import graphql, graphql_sync

from meshsub_trio import Context
from meshsub_trio.meshery import LOCAL_USER, MesheryApp, User, create_app

from .conftest import ALICE, BOB, PAGE


@pytest.fixture
def app() -> MesheryApp:
    return create_app(simulator=False, seed=7)


def run(app: MesheryApp, query: str, user: User = LOCAL_USER, **variables: Any) -> Any:
    result = graphql_sync(
        app.schema, query, context_value=Context(auth=user), variable_values=variables
    )
    assert result.errors is None, result.errors
    return result.data


def fails(app: MesheryApp, query: str, user: User = LOCAL_USER, **variables: Any) -> Any:
    result = graphql_sync(
        app.schema, query, context_value=Context(auth=user), variable_values=variables
    )
    assert result.errors, result.data
    return result.errors[0]


ADD_CONTEXT = """mutation($input: K8sContextInput!) { addK8sContext(input: $input) {
  id name server owner created_by meshery_instance_id kubernetes_server_id deployment_type
  version created_at updated_at connection_id } }"""


def add_context(app: MesheryApp, name: str = "kind", **extra: Any) -> dict[str, Any]:
    data = run(app, ADD_CONTEXT, input={"name": name, "server": f"https://{name}", **extra})
    return data["addK8sContext"]


def test_publish_event_serialises_every_field(app: MesheryApp) -> None:
    data = run(
        app,
        """mutation { publishEvent(input: {severity: critical, description: "disk full",
             category: "node", metadata: {node: "n1"}}) {
           id userID actedUpon operationID systemID severity action status category
           description metadata createdAt updatedAt deletedAt } }""",
    )
    event = data["publishEvent"]
    assert event["userID"] == LOCAL_USER.id and event["systemID"] == app.model.system_id
    assert event["severity"] == "critical" and event["metadata"] == {"node": "n1"}
    assert event["createdAt"].endswith("Z") and "T" in event["createdAt"]
    assert event["deletedAt"] is None
    assert app.model.events_of(LOCAL_USER.id)[-1]["id"] == event["id"]


def test_k8s_context_mutations_and_operator_queries(app: MesheryApp) -> None:
    context = add_context(app, version="v1.30.0")
    assert context["owner"] == context["created_by"] == LOCAL_USER.id
    assert context["meshery_instance_id"] == app.model.system_id
    connection = context["connection_id"]
    status_query = """query($c: String!) {
      op: getOperatorStatus(connectionID: $c) { connectionID controller status version }
      ms: getMeshsyncStatus(connectionID: $c) { name status version connectionID error { code } }
      nats: getNatsStatus(connectionID: $c) { name status version } }"""
    data = run(app, status_query, c=connection)
    assert data["op"] == {
        "connectionID": connection, "controller": "OPERATOR", "status": "NOTDEPLOYED", "version": "",
    }  # fmt: skip
    assert data["ms"]["status"] == "DISABLED" and data["ms"]["error"] is None
    run(
        app,
        """mutation($c: String!) { setControllerStatus(input: {connectionID: $c,
             controller: MESHSYNC, status: RUNNING, version: "v0.8"}) { status version } }""",
        c=connection,
    )
    run(
        app,
        """mutation($c: String!) { setControllerStatus(input: {connectionID: $c,
             controller: BROKER, status: CONNECTED}) { status } }""",
        c=connection,
    )
    data = run(app, status_query, c=connection)
    assert (data["ms"]["status"], data["ms"]["version"]) == ("ENABLED", "v0.8")
    assert data["nats"] == {"name": "broker", "status": "CONNECTED", "version": ""}
    changed = run(
        app,
        """mutation($id: String!) { changeOperatorStatus(input: {targetStatus: ENABLED,
             contextID: $id}) }""",
        id=context["id"],
    )
    assert changed == {"changeOperatorStatus": "PROCESSING"}
    assert run(app, status_query, c=connection)["op"]["status"] == "DEPLOYED"
    unknown = run(app, status_query, c="nope")
    assert unknown["op"] is None and unknown["nats"]["status"] == "UNKNOWN"
    assert run(app, "mutation($id: String!) { deleteK8sContext(id: $id) }", id=context["id"]) == {
        "deleteK8sContext": True
    }
    assert app.model.contexts() == []


def test_operator_mutation_errors_are_clear(app: MesheryApp) -> None:
    error = fails(
        app, 'mutation { changeOperatorStatus(input: {targetStatus: ENABLED, contextID: "x"}) }'
    )
    assert "no Kubernetes context x" in error.message
    assert error.extensions == {"code": "BAD_USER_INPUT"}
    assert "required" in fails(app, "mutation { changeOperatorStatus }").message
    adapter = fails(
        app,
        'mutation { changeAdapterStatus(input: {targetStatus: ENABLED, targetPort: "1", '
        'adapter: "istio"}) }',
    )
    assert "adapters" in adapter.message


def test_cluster_resource_mutations_namespaces_and_describe(app: MesheryApp) -> None:
    context = add_context(app, kubernetes_server_id="cluster-1")
    add = """mutation($i: ClusterResourceInput!) { addClusterResource(input: $i) }"""
    for obj in (
        {"kind": "Namespace", "name": "default"},
        {"kind": "Namespace", "name": "meshery"},
        {"kind": "Pod", "namespace": "default", "name": "web"},
    ):
        assert run(app, add, i={"kubernetes_server_id": "cluster-1", **obj})["addClusterResource"]
    assert run(app, add, i={"kubernetes_server_id": "cluster-1", "kind": "Namespace",
                           "name": "default"}) == {"addClusterResource": False}  # fmt: skip
    namespaces = run(app, '{ getAvailableNamespaces(k8sClusterIDs: ["cluster-1"]) { namespace } }')
    assert namespaces == {
        "getAvailableNamespaces": [{"namespace": "default"}, {"namespace": "meshery"}]
    }
    assert run(app, "{ getAvailableNamespaces { namespace } }") == namespaces
    describe = run(
        app,
        '{ getKubectlDescribe(name: "web", kind: "Pod", namespace: "default") { describe ctxid } }',
    )["getKubectlDescribe"]
    assert describe["ctxid"] == context["id"] and "Name:         web" in describe["describe"]
    missing = fails(app, '{ getKubectlDescribe(name: "x", kind: "Pod", namespace: "d") { ctxid } }')
    assert "no Pod d/x" in missing.message
    bad = fails(app, add, i={"kubernetes_server_id": "c", "kind": "Namespace", "namespace": "x",
                            "name": "y"})  # fmt: skip
    assert "cluster-scoped" in bad.message
    removed = run(
        app,
        """mutation { deleteClusterResource(input: {kubernetes_server_id: "cluster-1",
             kind: "Pod", namespace: "default", name: "web"}) }""",
    )
    assert removed == {"deleteClusterResource": True}


def test_resync_needs_a_known_context(app: MesheryApp) -> None:
    context = add_context(app)
    query = """query($id: String!) { resyncCluster(k8scontextID: $id,
      selector: {clearDB: "false", ReSync: "true", hardReset: "false"}) }"""
    assert run(app, query, id=context["id"]) == {"resyncCluster": "PROCESSING"}
    assert "no Kubernetes context" in fails(app, query, id="nope").message


def test_performance_profiles_and_results(app: MesheryApp) -> None:
    saved = run(
        app,
        """mutation { savePerformanceProfile(input: {name: "soak", qps: 20, duration: "1m",
             endpoints: ["http://x"], metadata: {team: "a"}}) {
           id name qps duration endpoints load_generators concurrent_request total_results
           user_id metadata created_at } }""",
    )["savePerformanceProfile"]
    assert saved["load_generators"] == ["fortio"] and saved["total_results"] == 0
    profile_id = saved["id"]
    for n in range(3):
        run(
            app,
            """mutation($p: String!, $n: String) { recordPerfResult(input: {profileID: $p,
                 name: $n, runner_results: {ActualQPS: 19.5}}) { meshery_id } }""",
            p=profile_id,
            n=f"run {n}",
        )
    results = run(
        app,
        """query($p: String!, $s: PageFilter!) { fetchResults(selector: $s, profileID: $p) {
             page page_size total_count results { name performance_profile runner_results } } }""",
        p=profile_id,
        s={"page": "0", "pageSize": "2", "order": "created_at desc"},
    )["fetchResults"]
    assert results["total_count"] == 3 and results["page_size"] == 2
    assert [r["name"] for r in results["results"]] == ["run 2", "run 1"]
    profiles = run(
        app,
        "query($s: PageFilter!) { getPerformanceProfiles(selector: $s) { total_count "
        "profiles { id total_results last_run } } }",
        s=PAGE,
    )["getPerformanceProfiles"]
    assert profiles["profiles"][0]["total_results"] == 3
    assert profiles["profiles"][0]["last_run"] is not None
    all_results = run(
        app, "query($s: PageFilter!) { fetchAllResults(selector: $s) { total_count } }", s=PAGE
    )
    assert all_results == {"fetchAllResults": {"total_count": 3}}
    one_id = app.model.results_of(profile_id)[0]["meshery_id"]
    assert run(app, "query($id: ID!) { getPerfResult(id: $id) { name } }", id=one_id) == {
        "getPerfResult": {"name": "run 0"}
    }
    assert run(app, '{ getPerfResult(id: "nope") { name } }') == {"getPerfResult": None}
    missing = fails(app, 'mutation { recordPerfResult(input: {profileID: "nope"}) { name } }')
    assert "no performance profile nope" in missing.message
    assert run(app, "mutation($id: String!) { deletePerformanceProfile(id: $id) }",
               id=profile_id) == {"deletePerformanceProfile": True}  # fmt: skip


def test_patterns_and_filters_are_per_user(app: MesheryApp) -> None:
    save = """mutation($i: PatternInput!) { savePattern(input: $i) {
      id name user_id visibility canSupport type { String Valid } location { type } } }"""
    mine = run(app, save, user=ALICE, i={"name": "bookinfo", "pattern_file": "x",
                                        "visibility": "published", "type": "Deployment"})  # fmt: skip
    assert mine["savePattern"]["type"] == {"String": "Deployment", "Valid": True}
    assert mine["savePattern"]["location"] == {"type": None}
    run(app, save, user=BOB, i={"name": "bob's", "pattern_file": "y"})
    fetch = (
        "query($s: PageFilter!) { fetchPatterns(selector: $s) { total_count patterns { name } } }"
    )
    assert run(app, fetch, user=ALICE, s=PAGE)["fetchPatterns"] == {
        "total_count": 1, "patterns": [{"name": "bookinfo"}],
    }  # fmt: skip
    pattern_id = mine["savePattern"]["id"]
    stolen = fails(app, "mutation($id: ID!) { deletePattern(id: $id) }", user=BOB, id=pattern_id)
    assert "no design" in stolen.message
    bad = fails(app, save, user=ALICE, i={"name": "x", "pattern_file": "", "visibility": "world"})
    assert "visibility must be one of" in bad.message
    catalog = run(
        app,
        '{ fetchPatternCatalogContent(selector: {page: "0", pagesize: "10", search: "", '
        'order: ""}) { name visibility } }',
        user=BOB,
    )
    assert catalog == {
        "fetchPatternCatalogContent": [{"name": "bookinfo", "visibility": "published"}]
    }
    saved = run(
        app,
        """mutation { saveFilter(input: {name: "auth", filter_file: "(module)",
             filter_resource: "wasm"}) { id filter_resource user_id } }""",
    )["saveFilter"]
    assert saved["user_id"] == LOCAL_USER.id
    assert run(app, "mutation($id: ID!) { deleteFilter(id: $id) }", id=saved["id"]) == {
        "deleteFilter": True
    }


def test_meshmodel_mutations_and_summary(app: MesheryApp) -> None:
    add = """mutation($i: MeshModelEntityInput!) { addMeshModelComponent(input: $i) }"""
    run(app, add, i={"model": "kubernetes", "version": "v1", "name": "Pod"})
    run(app, add, i={"model": "kubernetes", "version": "v2"})
    run(app, 'mutation { addMeshModelRelationship(input: {model: "istio", version: "1"}) }')
    summary = run(
        app,
        '{ c: getMeshModelSummary(selector: {type: "components"}) { components { name count } '
        "relationships { name } } "
        'r: getMeshModelSummary(selector: {type: "relationships"}) { relationships { name count } } }',
    )
    assert summary == {
        "c": {"components": [{"name": "kubernetes", "count": 2}], "relationships": []},
        "r": {"relationships": [{"name": "istio", "count": 1}]},
    }
    bad = fails(app, '{ getMeshModelSummary(selector: {type: "x"}) { components { name } } }')
    assert "selector.type" in bad.message


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ('{page: "x", pageSize: "10"}', "page must be a non-negative whole number"),
        ('{page: "-2", pageSize: "10"}', "page must be a non-negative whole number"),
        ('{page: "0", pageSize: "0"}', "pageSize must be between 1 and 1000"),
        ('{page: "0", pageSize: "99999999"}', "pageSize must be between 1 and 1000"),
        ('{page: "0", pageSize: "5", order: "name sideways"}', "order must look like"),
    ],
)
def test_paging_errors_through_graphql(app: MesheryApp, selector: str, message: str) -> None:
    error = fails(app, f"{{ getPerformanceProfiles(selector: {selector}) {{ total_count }} }}")
    assert message in error.message
    assert error.extensions == {"code": "BAD_USER_INPUT"}
    assert error.path == ["getPerformanceProfiles"]


def test_unmodelled_lists_are_empty(app: MesheryApp) -> None:
    data = run(
        app,
        """{ getAvailableAddons { name } getControlPlanes { name } getDataPlanes { name }
             fetchTelemetryComponents { name } fetchFilterCatalogContent { name } }""",
    )
    assert all(value == [] for value in data.values())


def test_resolvers_need_an_authenticated_user(app: MesheryApp) -> None:
    result = graphql_sync(
        app.schema, "query($s: PageFilter!) { fetchPatterns(selector: $s) { total_count } }",
        context_value=Context(), variable_values={"s": PAGE},
    )  # fmt: skip
    assert result.errors and "not authenticated" in result.errors[0].message


async def test_async_graphql_entry_point_works_under_trio(app: MesheryApp) -> None:
    result = await graphql(
        app.schema,
        """mutation { a: publishEvent(input: {severity: debug, description: "1"}) { id }
                      b: publishEvent(input: {severity: error, description: "2"}) { id } }""",
        context_value=Context(auth=LOCAL_USER),
    )
    assert result.errors is None
    assert [e["description"] for e in app.model.events_of(LOCAL_USER.id)] == ["1", "2"]
