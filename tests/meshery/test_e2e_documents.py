"""The eight subscription documents the Meshery UI sends, and one story to drive them.

The documents are written the way Relay emits them (named operations,
variables, aliases, the UI's selection sets). The end-to-end tests run them
through real clients against a real server, with the model seeded by
:func:`seed`, then changed by :func:`drive` once every subscription is live,
and check what came back with :func:`check`: the snapshot rule (a first
message before any change, or none), the delta rule for controller status,
and the data shapes. This module's own test only checks they validate.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
from graphql import parse, validate

from meshsub_trio import Server
from meshsub_trio.meshery import LOCAL_USER_ID, Model, create_app


@dataclass(frozen=True)
class UiDocument:
    """One subscription as the UI sends it, and what the story makes it receive."""

    name: str
    operation: str
    query: str
    variables: dict[str, Any]
    #: Response key (the alias where the UI uses one).
    key: str
    #: Messages that arrive before any change: 1 for a snapshot, 0 for none.
    initial: int
    #: Messages in the whole story (initial + after :func:`drive`).
    take: int

    def request(self) -> dict[str, Any]:
        """A graphql-ws ``subscribe`` payload."""
        return {"query": self.query, "variables": self.variables, "operationName": self.operation}


def page_filter(**overrides: Any) -> dict[str, Any]:
    """A ``PageFilter`` as Relay sends it: every field present, strings for numbers."""
    selector: dict[str, Any] = {
        "page": "0",
        "pageSize": "10",
        "order": "name asc",
        "search": "",
        "from": None,
        "to": None,
        "updated_after": None,
        "visibility": None,
        "metrics": None,
    }
    selector.update(overrides)
    return selector


PROFILE_ID = "prof-1"
CONTEXT_ID = "ctx-a"
CLUSTER_ID = "cluster-a"
CONNECTION_ID = "conn-a"

_DOCS = [
    UiDocument(
        "events",
        "EventsSubscription",
        """
        subscription EventsSubscription {
          event: subscribeEvents {
            id userID actedUpon operationID systemID severity action status category
            description metadata createdAt updatedAt deletedAt
          }
        }
        """,
        {},
        "event",
        initial=0,
        take=1,
    ),
    UiDocument(
        "controllers",
        "MesheryControllersStatusSubscription",
        """
        subscription MesheryControllersStatusSubscription($connectionIDs: [String!]) {
          subscribeMesheryControllersStatus(connectionIDs: $connectionIDs) {
            connectionID controller status version
          }
        }
        """,
        {"connectionIDs": [CONNECTION_ID]},
        "subscribeMesheryControllersStatus",
        initial=1,
        take=2,
    ),
    UiDocument(
        "perf_profiles",
        "PerformanceProfilesSubscription",
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
        {"selector": page_filter()},
        "subscribePerfProfiles",
        initial=0,
        take=1,
    ),
    UiDocument(
        "perf_results",
        "PerformanceResultSubscription",
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
        {"selector": page_filter(order="created_at desc"), "profileID": PROFILE_ID},
        "subscribePerfResults",
        initial=0,
        take=1,
    ),
    UiDocument(
        "configuration",
        "ConfigurationSubscription",
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
        {"patternSelector": page_filter(), "filterSelector": page_filter(pageSize="25")},
        "configuration",
        initial=1,
        take=2,
    ),
    UiDocument(
        "cluster_resources",
        "ClusterResourcesSubscription",
        """
        subscription ClusterResourcesSubscription($k8scontextIDs: [String!], $namespace: String!) {
          clusterResources: subscribeClusterResources(
            k8scontextIDs: $k8scontextIDs, namespace: $namespace
          ) {
            resources { kind count }
          }
        }
        """,
        {"k8scontextIDs": [CLUSTER_ID], "namespace": "default"},
        "clusterResources",
        initial=1,
        take=2,
    ),
    UiDocument(
        "k8s_contexts",
        "K8sContextSubscription",
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
        {"selector": page_filter(search=None, order=None)},
        "k8sContext",
        initial=1,
        take=2,
    ),
    UiDocument(
        "meshmodel",
        "MeshModelSummarySubscription",
        """
        subscription MeshModelSummarySubscription($selector: MeshModelSummarySelector!) {
          meshmodelSummary: subscribeMeshModelSummary(selector: $selector) {
            components { name count }
            relationships { name count }
          }
        }
        """,
        {"selector": {"type": "components"}},
        "meshmodelSummary",
        initial=1,
        take=2,
    ),
]

UI_DOCUMENTS: dict[str, UiDocument] = {doc.name: doc for doc in _DOCS}


# ---- the story ---------------------------------------------------------------------


def seed(model: Model, user_id: str = LOCAL_USER_ID) -> None:
    """State that exists before anyone subscribes (snapshots must show it)."""
    model.upsert_context(
        {
            "id": CONTEXT_ID,
            "name": "kind-a",
            "server": "https://a.example:6443",
            "kubernetes_server_id": CLUSTER_ID,
            "connection_id": CONNECTION_ID,
            "version": "v1.30.2",
        },
        owner=user_id,
    )
    model.add_object(CLUSTER_ID, "Namespace", "", "default")
    model.add_object(CLUSTER_ID, "Node", "", "node-1")
    model.add_object(CLUSTER_ID, "Pod", "default", "web-1")
    model.add_object(CLUSTER_ID, "Pod", "kube-system", "dns-1")  # another namespace
    model.save_pattern(user_id, {"name": "bookinfo", "pattern_file": "name: bookinfo"})
    model.save_filter(user_id, {"name": "http-auth", "filter_file": "(module)"})
    model.register_meshmodel("components", "kubernetes", "v1.30.0", "Deployment")
    model.register_meshmodel("relationships", "kubernetes", "v1.30.0", "edge")
    model.save_profile(user_id, {"id": PROFILE_ID, "name": "soak", "qps": 50})
    model.record_result(user_id, PROFILE_ID, {"name": "run 1"})
    # History: a subscriber must never get this replayed.
    model.publish_event(user_id, {"severity": "debug", "description": "before anyone listened"})


def drive(model: Model, user_id: str = LOCAL_USER_ID) -> None:
    """One change per subscription, made once every subscription is live."""
    model.publish_event(
        user_id,
        {
            "severity": "warning",
            "description": "driven",
            "category": "e2e",
            "action": "update",
            "metadata": {"step": 1},
        },
    )
    model.set_controller_status(CONNECTION_ID, "OPERATOR", "DEPLOYED", "v0.8.3")
    model.save_profile(user_id, {"name": "second"})
    model.record_result(user_id, PROFILE_ID, {"name": "run 2"})
    model.save_pattern(user_id, {"name": "design-2", "pattern_file": "name: two"})
    model.add_object(CLUSTER_ID, "Pod", "default", "web-2")
    model.upsert_context(
        {"id": "ctx-b", "name": "kind-b", "server": "https://b.example:6443"}, owner=user_id
    )
    model.register_meshmodel("components", "istio-base", "1.22.0", "Gateway")


async def when_live(server: Server, operations: int, timeout: float = 5.0) -> None:
    """Every operation started, and every server task has run to its next wait
    (so each streamer is subscribed to its topics): a change now reaches them."""
    with trio.fail_after(timeout):
        await server.metrics.wait_for(lambda m: m.live_operations >= operations)
        await trio.testing.wait_all_tasks_blocked()


def bounded(seconds: float = 15.0) -> Callable[[Any], Any]:
    """Run an async test inside ``trio.fail_after``: a silent server fails it, never hangs it."""

    def wrap(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(test)
        async def run(*args: Any, **kwargs: Any) -> None:
            with trio.fail_after(seconds):
                await test(*args, **kwargs)

        return run

    return wrap


# ---- what the clients must have received -------------------------------------------

EVENT_FIELDS = {
    "id", "userID", "actedUpon", "operationID", "systemID", "severity", "action", "status",
    "category", "description", "metadata", "createdAt", "updatedAt", "deletedAt",
}  # fmt: skip
CONTEXT_FIELDS = {
    "id", "name", "server", "owner", "created_by", "meshery_instance_id",
    "kubernetes_server_id", "deployment_type", "updated_at", "created_at", "version",
    "connection_id",
}  # fmt: skip


def _is_time(value: Any) -> bool:
    return isinstance(value, str) and value.endswith("Z") and "T" in value


def check(name: str, messages: list[dict[str, Any]], user_id: str = LOCAL_USER_ID) -> None:
    """Assert the whole story of one document: count, snapshot/delta rules, shapes.

    *messages* are the ``data`` objects received, in order.
    """
    doc = UI_DOCUMENTS[name]
    assert len(messages) == doc.take, (name, messages)
    values = [message[doc.key] for message in messages]
    CHECKS[name](values, user_id)


def _events(values: list[Any], user_id: str) -> None:
    (event,) = values  # the history event was not replayed: no snapshot
    assert set(event) == EVENT_FIELDS
    assert event["description"] == "driven" and event["severity"] == "warning"
    assert event["userID"] == user_id and event["metadata"] == {"step": 1}
    assert _is_time(event["createdAt"]) and _is_time(event["updatedAt"])
    assert event["deletedAt"] is None


def _controllers(values: list[Any], _user_id: str) -> None:
    full, delta = values
    assert [(i["controller"], i["status"], i["version"]) for i in full] == [
        ("BROKER", "NOTDEPLOYED", ""),
        ("OPERATOR", "NOTDEPLOYED", ""),
        ("MESHSYNC", "NOTDEPLOYED", ""),
    ]
    assert {i["connectionID"] for i in full} == {CONNECTION_ID}
    # Then one single-item array per change; ctx-b's controllers are filtered out.
    assert delta == [
        {
            "connectionID": CONNECTION_ID,
            "controller": "OPERATOR",
            "status": "DEPLOYED",
            "version": "v0.8.3",
        }
    ]


def _perf_profiles(values: list[Any], user_id: str) -> None:
    (page,) = values  # no snapshot: the first page already has the new profile
    assert (page["page"], page["page_size"], page["total_count"]) == (0, 10, 2)
    assert [p["name"] for p in page["profiles"]] == ["second", "soak"]
    assert all(p["user_id"] == user_id for p in page["profiles"])


def _perf_results(values: list[Any], user_id: str) -> None:
    (page,) = values  # no snapshot: the first page is the one the new result made
    assert page["total_count"] == 2
    assert {r["name"] for r in page["results"]} == {"run 1", "run 2"}
    assert {r["performance_profile"] for r in page["results"]} == {PROFILE_ID}
    assert all(r["user_id"] == user_id and _is_time(r["created_at"]) for r in page["results"])


def _configuration(values: list[Any], user_id: str) -> None:
    first, second = values
    for page in values:
        assert page["applications"] is None
        assert page["filters"]["total_count"] == 1
        assert page["filters"]["filters"][0]["name"] == "http-auth"
    assert [p["name"] for p in first["patterns"]["patterns"]] == ["bookinfo"]
    assert second["patterns"]["total_count"] == 2
    assert [p["name"] for p in second["patterns"]["patterns"]] == ["bookinfo", "design-2"]
    pattern = first["patterns"]["patterns"][0]
    assert pattern["user_id"] == user_id and pattern["canSupport"] is True
    assert pattern["type"] == {"String": "", "Valid": False}
    assert set(pattern["location"]) == {"branch", "host", "path", "type"}


def _cluster_resources(values: list[Any], _user_id: str) -> None:
    first, second = values
    # Cluster-scoped objects, Namespaces, and only the chosen namespace's objects.
    assert first == {
        "resources": [
            {"kind": "Namespace", "count": 1},
            {"kind": "Node", "count": 1},
            {"kind": "Pod", "count": 1},
        ]
    }
    assert {"kind": "Pod", "count": 2} in second["resources"]


def _k8s_contexts(values: list[Any], user_id: str) -> None:
    first, second = values
    assert first["total_count"] == 1
    (context,) = first["contexts"]
    assert set(context) == CONTEXT_FIELDS
    assert context["id"] == CONTEXT_ID and context["connection_id"] == CONNECTION_ID
    assert context["kubernetes_server_id"] == CLUSTER_ID and context["owner"] == user_id
    assert second["total_count"] == 2
    assert {c["id"] for c in second["contexts"]} == {CONTEXT_ID, "ctx-b"}


def _meshmodel(values: list[Any], _user_id: str) -> None:
    first, second = values
    assert first == {"components": [{"name": "kubernetes", "count": 1}], "relationships": []}
    assert second["components"] == [
        {"name": "istio-base", "count": 1},
        {"name": "kubernetes", "count": 1},
    ]


CHECKS = {
    "events": _events,
    "controllers": _controllers,
    "perf_profiles": _perf_profiles,
    "perf_results": _perf_results,
    "configuration": _configuration,
    "cluster_resources": _cluster_resources,
    "k8s_contexts": _k8s_contexts,
    "meshmodel": _meshmodel,
}


@pytest.mark.parametrize("name", sorted(UI_DOCUMENTS))
def test_ui_document_validates(name: str) -> None:
    doc = UI_DOCUMENTS[name]
    schema = create_app(simulator=False).schema
    assert validate(schema, parse(doc.query)) == []
    assert set(UI_DOCUMENTS) == set(CHECKS)
