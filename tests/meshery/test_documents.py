"""Documents the Meshery UI sends validate unchanged, and emitted values fit them.

The documents are written the way Relay generates them (named operations,
variables, aliases), from the field lists in the reference notes.
"""

from __future__ import annotations

from typing import Any

import pytest
from graphql import execute_sync, parse, validate
from graphql.execution import ExecutionResult

from meshsub_trio.meshery import create_app

PAGE_FILTER_VARS = {
    "selector": {
        "page": "0",
        "pageSize": "10",
        "order": "name asc",
        "search": "",
        "from": None,
        "to": None,
        "updated_after": None,
        "visibility": ["private", "public"],
        "metrics": None,
    }
}

UI_SUBSCRIPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "events": (
        """
        subscription EventsSubscription {
          subscribeEvents {
            id userID actedUpon operationID systemID severity action status category
            description metadata createdAt updatedAt deletedAt
          }
        }
        """,
        {},
    ),
    "controllers": (
        """
        subscription MesheryControllersStatusSubscription($connectionIDs: [String!]) {
          subscribeMesheryControllersStatus(connectionIDs: $connectionIDs) {
            connectionID controller status version
          }
        }
        """,
        {"connectionIDs": ["c-1", "c-2"]},
    ),
    "perf_profiles": (
        """
        subscription PerformanceProfilesSubscription($selector: PageFilter!) {
          subscribePerfProfiles(selector: $selector) {
            page page_size total_count
            profiles {
              concurrent_request created_at duration endpoints id last_run load_generators
              name qps total_results updated_at user_id request_body request_cookies
              request_headers content_type service_mesh metadata
            }
          }
        }
        """,
        PAGE_FILTER_VARS,
    ),
    "perf_results": (
        """
        subscription PerformanceResultSubscription($selector: PageFilter!, $profileID: String!) {
          subscribePerfResults(selector: $selector, profileID: $profileID) {
            page page_size total_count
            results {
              meshery_id name mesh performance_profile test_id runner_results server_metrics
              server_board_config test_start_time user_id updated_at created_at
            }
          }
        }
        """,
        {**PAGE_FILTER_VARS, "profileID": "p-1"},
    ),
    "configuration": (
        """
        subscription ConfigurationSubscription(
          $patternSelector: PageFilter!, $filterSelector: PageFilter!
        ) {
          configuration: subscribeConfiguration(
            patternSelector: $patternSelector, filterSelector: $filterSelector
          ) {
            applications { page page_size total_count applications { id name } }
            patterns {
              page page_size total_count
              patterns {
                id name user_id pattern_file visibility catalog_data canSupport errmsg
                created_at updated_at type { String Valid }
                location { branch host path type }
              }
            }
            filters {
              page page_size total_count
              filters {
                id name filter_file filter_resource visibility catalog_data user_id
                created_at updated_at location { branch host path type }
              }
            }
          }
        }
        """,
        {
            "patternSelector": PAGE_FILTER_VARS["selector"],
            "filterSelector": {"page": "0", "pageSize": "25"},
        },
    ),
    "cluster_resources": (
        """
        subscription ClusterResourcesSubscription($k8scontextIDs: [String!], $namespace: String!) {
          subscribeClusterResources(k8scontextIDs: $k8scontextIDs, namespace: $namespace) {
            resources { kind count }
          }
        }
        """,
        {"k8scontextIDs": ["cluster-1"], "namespace": "default"},
    ),
    "k8s_contexts": (
        """
        subscription K8sContextSubscription($selector: PageFilter!) {
          k8sContext: subscribeK8sContext(selector: $selector) {
            total_count
            contexts {
              id name server owner created_by meshery_instance_id kubernetes_server_id
              deployment_type updated_at created_at version connection_id
            }
          }
        }
        """,
        {"selector": {"page": "0", "pageSize": "10", "search": None, "order": None}},
    ),
    "meshmodel": (
        """
        subscription MeshModelSummarySubscription($selector: MeshModelSummarySelector!) {
          meshmodelSummary: subscribeMeshModelSummary(selector: $selector) {
            components { name count }
            relationships { name count }
          }
        }
        """,
        {"selector": {"type": "components"}},
    ),
}

UI_QUERIES = [
    """query FetchPatterns($selector: PageFilter!) {
         fetchPatterns(selector: $selector) { page page_size total_count
           patterns { id name pattern_file visibility catalog_data canSupport type { String Valid } }
         } }""",
    """query PerformanceProfiles($selector: PageFilter!) {
         getPerformanceProfiles(selector: $selector) { page page_size total_count
           profiles { id name qps duration endpoints last_run total_results } } }""",
    """query FetchResults($selector: PageFilter!, $profileID: String!) {
         fetchResults(selector: $selector, profileID: $profileID) { total_count
           results { meshery_id name runner_results test_start_time } } }""",
    """query OperatorStatus($connectionID: String!) {
         operator: getOperatorStatus(connectionID: $connectionID) { connectionID controller
           status version }
         meshsync: getMeshsyncStatus(connectionID: $connectionID) { name status version
           error { code description } }
         nats: getNatsStatus(connectionID: $connectionID) { name status version } }""",
    """query Namespaces($ids: [String!]) { getAvailableNamespaces(k8sClusterIDs: $ids)
         { namespace } }""",
    """mutation ChangeOperatorStatus($input: OperatorStatusInput) {
         changeOperatorStatus(input: $input) }""",
    """query Summary($selector: MeshModelSummarySelector!) {
         getMeshModelSummary(selector: $selector) { components { name count } } }""",
]


@pytest.fixture(scope="module")
def schema() -> Any:
    return create_app(simulator=False).schema


@pytest.mark.parametrize("name", sorted(UI_SUBSCRIPTIONS))
def test_ui_subscription_documents_validate(schema: Any, name: str) -> None:
    document, _ = UI_SUBSCRIPTIONS[name]
    assert validate(schema, parse(document)) == []


@pytest.mark.parametrize("document", UI_QUERIES)
def test_ui_query_documents_validate(schema: Any, document: str) -> None:
    assert validate(schema, parse(document)) == []


@pytest.mark.parametrize(
    "document",
    [
        # Legacy (snapshot C) names must not be accepted silently.
        "subscription { subscribeMesheryControllersStatus(k8scontextIDs: []) { contextId } }",
        # Snapshot B renames are not snapshot A.
        "subscription { subscribeEvents { UserID } }",
        'subscription { subscribeK8sContext(selector: {page: "0", pageSize: "1"}) '
        "{ contexts { connectionId } } }",
        # The enum is misspelt in Meshery; the correct spelling is not a value.
        "query { getOperatorStatus(connectionID: UNKNOWN) { status } }",
    ],
)
def test_documents_outside_snapshot_a_fail(schema: Any, document: str) -> None:
    assert validate(schema, parse(document)) != []


def project(schema: Any, name: str, value: Any) -> ExecutionResult:
    """Execute a UI subscription's selection with *value* as the field's value,
    as the server does for each emission."""
    document, variables = UI_SUBSCRIPTIONS[name]
    return execute_sync(schema, parse(document), root_value=value, variable_values=variables)


def test_projection_reports_shape_errors(schema: Any) -> None:
    """The projection helper the streamer tests rely on does catch bad values."""
    bad = project(schema, "controllers", [{"connectionID": "c", "controller": "BROKER"}])
    assert bad.errors
    bad_enum = project(
        schema,
        "controllers",
        [{"connectionID": "c", "controller": "BROKER", "status": "UNKNOWN", "version": ""}],
    )
    assert bad_enum.errors and "UNKNOWN" in bad_enum.errors[0].message
    good = project(
        schema,
        "controllers",
        [{"connectionID": "c", "controller": "BROKER", "status": "UNKOWN", "version": ""}],
    )
    assert good.errors is None
    assert good.data == {
        "subscribeMesheryControllersStatus": [
            {"connectionID": "c", "controller": "BROKER", "status": "UNKOWN", "version": ""}
        ]
    }
