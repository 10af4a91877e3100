"""Query and Mutation resolvers: thin, synchronous calls into the model.

They are plain functions on purpose: nothing here needs to wait, and they
also run under ``graphql_sync``. Model ``ValueError``s become
``BAD_USER_INPUT`` GraphQL errors; a storage limit becomes ``STORAGE_LIMIT``
with the limit's name and value in ``extensions``. Everything owned is the
caller's own: another user's id reads, updates and deletes exactly as an id
that does not exist ("no design X"), so ids cannot be probed; shared cluster
state (cluster objects, MeshModel) is everyone's to read, and only a caller
who feeds the cluster clears a cluster's objects by deleting the last context
that names it. Controller status is read and changed through the caller's own
contexts' connections only, unless the caller feeds the cluster (see
:mod:`.._model._connections`).

A change the shared broker refuses (its bounded queue is full during an
outage) becomes a ``BROKER_UNAVAILABLE`` error, "broker unavailable, change
not accepted", and nothing was applied.
Only when the model is replicated does a mutation return an awaitable: it
resolves once the change reached the shared bus (at once during an outage,
when the change waits in the broker's bounded queue).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from graphql import GraphQLError, GraphQLResolveInfo

from .._auth import current_user
from .._model import _connections as connections
from .._model import _views as views
from .._model._model import Model
from .._model._paging import BadUserInput, paginate, parse_page_filter
from .._model._quota import StorageLimitExceeded
from .._replication._replication import BrokerUnavailable

Resolver = Callable[..., Any]

#: How each controller's status reads as the coarser ``Status`` enum.
_STATUS_OF = {
    "DEPLOYED": "ENABLED",
    "ENABLED": "ENABLED",
    "RUNNING": "ENABLED",
    "CONNECTED": "CONNECTED",
    "DEPLOYING": "PROCESSING",
    "NOTDEPLOYED": "DISABLED",
    "UNDEPLOYED": "DISABLED",
    "UNKOWN": "UNKNOWN",
}


def _user_errors(fn: Resolver) -> Resolver:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except StorageLimitExceeded as error:
            extensions = {"code": "STORAGE_LIMIT", "limit": error.limit, "max": error.value}
            raise GraphQLError(str(error), extensions=extensions) from None
        except ValueError as error:
            raise BadUserInput(str(error)) from None
        except BrokerUnavailable as error:
            raise GraphQLError(str(error), extensions={"code": "BROKER_UNAVAILABLE"}) from None

    return wrapper


def _flushed(model: Model, fn: Resolver) -> Resolver:
    """A mutation that, on a replicated model, answers once its change is on the bus."""

    async def after_flush(result: Any) -> Any:
        try:
            await model.flush()
        except BrokerUnavailable as error:  # the log refused it, or did not answer in time
            raise GraphQLError(str(error), extensions={"code": "BROKER_UNAVAILABLE"}) from None
        return result

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = fn(*args, **kwargs)
        return result if model.committer is None else after_flush(result)

    return wrapper


def _user_id(info: GraphQLResolveInfo[Any]) -> str:
    return current_user(info.context).id


def _found(deleted: bool, what: str, item_id: str) -> bool:
    """A delete that found nothing of the caller's is an error, whether the id
    is another user's or nobody's (the same error: ids cannot be probed)."""
    if not deleted:
        raise BadUserInput(f"no {what} {item_id}")
    return True


def _empty_list(_root: Any, _info: GraphQLResolveInfo[Any], **_args: Any) -> list[Any]:
    return []


def _catalog(records: list[dict[str, Any]], selector: Mapping[str, Any] | None) -> list[Any]:
    """Published items, paged by Meshery's ``CatalogSelector`` (``pagesize``, lower-case)."""
    selector = dict(selector or {})
    request = parse_page_filter(
        {
            "page": selector.get("page") or "0",
            "pageSize": selector.get("pagesize") or "25",
            "search": selector.get("search"),
            "order": selector.get("order"),
        },
        order_fields=views.CONFIG_ORDER,
    )
    published = [r for r in records if r.get("visibility") == "published"]
    return paginate(published, request)[0]


def make_query_resolvers(
    model: Model, may_feed_cluster: Callable[[str], bool] = lambda _user_id: True
) -> dict[str, Resolver]:
    def controller_item(info: Any, connection_id: str, controller: str) -> dict[str, Any] | None:
        """The caller's view of one controller: another user's connection is as
        missing as one that does not exist."""
        user_id = _user_id(info)
        ids = connections.visible_connections(
            model, user_id, may_feed_cluster(user_id), {connection_id}
        )
        items = model.controller_items(ids)
        return next((i for i in items if i["controller"] == controller), None)

    def controller_status(info: Any, connection_id: str, controller: str) -> dict[str, Any]:
        item = controller_item(info, connection_id, controller)
        return {
            "name": controller.lower(),
            "version": item["version"] if item else "",
            "status": _STATUS_OF.get(item["status"], "UNKNOWN") if item else "UNKNOWN",
            "error": None,
            "connectionID": connection_id,
        }

    def get_operator_status(_root: Any, info: Any, connectionID: str) -> Any:
        return controller_item(info, connectionID, "OPERATOR")

    def resync_cluster(_root: Any, info: Any, k8scontextID: str, selector: Any = None) -> str:
        if model.context(k8scontextID, _user_id(info)) is None:
            raise BadUserInput(f"no Kubernetes context {k8scontextID}")
        return "PROCESSING"

    def available_namespaces(_root: Any, info: Any, k8sClusterIDs: Any = None) -> list[Any]:
        owner = _user_id(info)
        clusters = model.resolve_clusters(k8sClusterIDs, owner) if k8sClusterIDs else None
        return [{"namespace": name} for name in model.namespaces(clusters)]

    def kubectl_describe(_root: Any, info: Any, name: str, kind: str, namespace: str) -> Any:
        for context in model.contexts(_user_id(info)):
            for obj in model.objects(context["kubernetes_server_id"]):
                if (obj["name"], obj["kind"], obj["namespace"]) == (name, kind, namespace):
                    text = (
                        f"Name:         {name}\nNamespace:    {namespace}\nKind:         {kind}\n"
                    )
                    return {"describe": text, "ctxid": context["id"]}
        raise BadUserInput(f"no {kind} {namespace}/{name} in any known cluster")

    def pattern_catalog(_root: Any, _info: Any, selector: Any = None) -> list[Any]:
        items = _catalog(model.patterns_of(None), selector)
        keep = ("id", "name", "user_id", "pattern_file", "location", "visibility",
                "catalog_data", "created_at", "updated_at")  # fmt: skip
        return [{key: item[key] for key in keep} for item in items]

    def filter_catalog(_root: Any, _info: Any, selector: Any = None) -> list[Any]:
        return _catalog(model.filters_of(None), selector)

    return {
        "getAvailableAddons": _empty_list,
        "getControlPlanes": _empty_list,
        "getDataPlanes": _empty_list,
        "getOperatorStatus": get_operator_status,
        "resyncCluster": resync_cluster,
        "getMeshsyncStatus": lambda _r, info, connectionID: controller_status(
            info, connectionID, "MESHSYNC"
        ),
        "getNatsStatus": lambda _r, info, connectionID: controller_status(
            info, connectionID, "BROKER"
        ),
        "getAvailableNamespaces": available_namespaces,
        "getPerfResult": lambda _r, info, id: model.result(id, _user_id(info)),
        "fetchResults": lambda _r, info, selector, profileID: views.perf_results_page(
            model, _user_id(info), views.results_selector(selector), profileID
        ),
        "getPerformanceProfiles": lambda _r, info, selector: views.perf_profiles_page(
            model, _user_id(info), views.profiles_selector(selector)
        ),
        "fetchAllResults": lambda _r, info, selector: views.perf_results_page(
            model, _user_id(info), views.results_selector(selector), None
        ),
        "fetchPatterns": lambda _r, info, selector: views.patterns_page(
            model, _user_id(info), views.config_selector(selector)
        ),
        "getKubectlDescribe": kubectl_describe,
        "fetchPatternCatalogContent": pattern_catalog,
        "fetchFilterCatalogContent": filter_catalog,
        "getMeshModelSummary": lambda _r, _i, selector: views.meshmodel_summary(
            model, views.meshmodel_type(selector)
        ),
        "fetchTelemetryComponents": _empty_list,
    }


def make_mutation_resolvers(
    model: Model, may_feed_cluster: Callable[[str], bool] = lambda _user_id: True
) -> dict[str, Resolver]:
    def add_context(_root: Any, info: Any, input: Mapping[str, Any]) -> Any:
        user_id = _user_id(info)
        if not may_feed_cluster(user_id):  # the feed names connections; a user holds them
            input = connections.own_context_fields(model, input, user_id)
        return model.upsert_context(input, owner=user_id)

    def delete_context(_root: Any, info: Any, id: str) -> bool:
        user_id = _user_id(info)  # only the cluster's feed clears its objects
        deleted = model.delete_context(id, user_id, clear_cluster=may_feed_cluster(user_id))
        return _found(deleted, "Kubernetes context", id)

    def change_operator_status(_root: Any, info: Any, input: Any = None) -> str:
        if not input:
            raise BadUserInput("input is required")
        context = model.context(input["contextID"], _user_id(info))
        if context is None:
            raise BadUserInput(f"no Kubernetes context {input['contextID']}")
        target = {"ENABLED": "DEPLOYED", "DISABLED": "UNDEPLOYED"}.get(input["targetStatus"])
        if target is None:
            raise BadUserInput("targetStatus must be ENABLED or DISABLED")
        model.set_controller_status(context["connection_id"], "OPERATOR", target)
        return "PROCESSING"

    def change_adapter_status(_root: Any, _info: Any, input: Any = None) -> str:
        raise BadUserInput("Meshery adapters are not modelled by meshsub-trio")

    def cluster_object(change: Callable[..., bool]) -> Resolver:
        def resolve(_root: Any, _info: Any, input: Mapping[str, Any]) -> bool:
            return change(
                input["kubernetes_server_id"], input["kind"], input.get("namespace"), input["name"]
            )

        return resolve

    def meshmodel(entity: str) -> Resolver:
        def resolve(_root: Any, _info: Any, input: Mapping[str, Any]) -> bool:
            return model.register_meshmodel(
                entity, input["model"], input["version"], input.get("name")
            )

        return resolve

    def set_controller(_root: Any, _info: Any, input: Mapping[str, Any]) -> Any:
        return model.set_controller_status(
            input["connectionID"], input["controller"], input["status"], input.get("version")
        )

    return {
        "changeOperatorStatus": change_operator_status,
        "changeAdapterStatus": change_adapter_status,
        "publishEvent": lambda _r, info, input: model.publish_event(_user_id(info), input),
        "savePerformanceProfile": lambda _r, info, input: model.save_profile(_user_id(info), input),
        "deletePerformanceProfile": lambda _r, info, id: _found(
            model.delete_profile(_user_id(info), id), "performance profile", id
        ),
        "recordPerfResult": lambda _r, info, input: model.record_result(
            _user_id(info), input["profileID"], input
        ),
        "savePattern": lambda _r, info, input: model.save_pattern(_user_id(info), input),
        "deletePattern": lambda _r, info, id: _found(
            model.delete_pattern(_user_id(info), id), "design", id
        ),
        "saveFilter": lambda _r, info, input: model.save_filter(_user_id(info), input),
        "deleteFilter": lambda _r, info, id: _found(
            model.delete_filter(_user_id(info), id), "filter", id
        ),
        "addK8sContext": add_context,
        "deleteK8sContext": delete_context,
        "setControllerStatus": set_controller,
        "addClusterResource": cluster_object(model.add_object),
        "deleteClusterResource": cluster_object(model.delete_object),
        "addMeshModelComponent": meshmodel("components"),
        "addMeshModelRelationship": meshmodel("relationships"),
    }


#: Mutations that write the shared cluster state every user sees (in Meshery
#: it comes from the cluster itself, through MeshSync), not a user's own objects.
CLUSTER_FEEDS = frozenset(
    {
        "setControllerStatus",
        "addClusterResource",
        "deleteClusterResource",
        "addMeshModelComponent",
        "addMeshModelRelationship",
    }
)


class ClusterFeedRefused(GraphQLError):
    """An ordinary user tried to write shared cluster state (token mode)."""

    def __init__(self, user_id: str) -> None:
        super().__init__(
            f"user {user_id} may not change shared cluster state; only service accounts "
            "(the app's event_publishers) may",
            extensions={"code": "FORBIDDEN"},
        )


def _cluster_feed(may_feed: Callable[[str], bool], fn: Resolver) -> Resolver:
    @functools.wraps(fn)
    def wrapper(root: Any, info: GraphQLResolveInfo[Any], **kwargs: Any) -> Any:
        user_id = _user_id(info)
        if not may_feed(user_id):
            raise ClusterFeedRefused(user_id)
        return fn(root, info, **kwargs)

    return wrapper


def make_resolvers(
    model: Model, may_feed_cluster: Callable[[str], bool] = lambda _user_id: True
) -> dict[str, dict[str, Resolver]]:
    """The ``resolvers=`` mapping for the App, bound to *model*.

    *may_feed_cluster(user_id)* says who may run the :data:`CLUSTER_FEEDS`
    mutations (everyone in local mode; service accounts in token mode), and
    so who sees and names every connection's controllers.
    """
    mutations = make_mutation_resolvers(model, may_feed_cluster)
    for name in CLUSTER_FEEDS:
        mutations[name] = _cluster_feed(may_feed_cluster, mutations[name])
    return {
        "Query": {
            k: _user_errors(v) for k, v in make_query_resolvers(model, may_feed_cluster).items()
        },
        "Mutation": {k: _flushed(model, _user_errors(v)) for k, v in mutations.items()},
    }
