"""Read-side rendering: model state plus client arguments, shaped like GraphQL types.

Resolvers and streamers both render through these functions, so a query and
a subscription with the same arguments always agree. Argument checks live in
the ``parse_*`` helpers so a streamer can reject bad arguments before it
subscribes to anything. Every view of owned records takes the caller's user
id and shows that user's records only (see :mod:`._model`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._model import Model
from ._paging import BadUserInput, PageRequest, page_envelope, paginate, parse_page_filter

CONTEXT_ORDER = ("name", "server", "created_at", "updated_at")
PROFILE_ORDER = ("name", "created_at", "updated_at", "last_run", "qps", "duration")
RESULT_ORDER = ("name", "created_at", "updated_at", "test_start_time")
CONFIG_ORDER = ("name", "created_at", "updated_at", "visibility")
MESHMODEL_TYPES = ("components", "relationships")


def contexts_selector(selector: Mapping[str, Any] | None) -> PageRequest:
    return parse_page_filter(selector, order_fields=CONTEXT_ORDER)


def profiles_selector(selector: Mapping[str, Any] | None) -> PageRequest:
    return parse_page_filter(selector, order_fields=PROFILE_ORDER)


def results_selector(selector: Mapping[str, Any] | None) -> PageRequest:
    return parse_page_filter(selector, order_fields=RESULT_ORDER, default_order="created_at desc")


def config_selector(selector: Mapping[str, Any] | None) -> PageRequest:
    return parse_page_filter(selector, order_fields=CONFIG_ORDER)


def meshmodel_type(selector: Mapping[str, Any] | None) -> str:
    kind = str((selector or {}).get("type") or "").strip().lower()
    if kind not in MESHMODEL_TYPES:
        raise BadUserInput(f'selector.type must be "components" or "relationships", got {kind!r}')
    return kind


def cluster_ids(values: Sequence[str] | None) -> list[str] | None:
    """``k8scontextIDs``: omitted (the schema makes it optional) means every cluster of
    the caller's contexts; a list must name at least one (Meshery logs and sends nothing)."""
    if values is None:
        return None
    chosen = [value for value in values if value]
    if not chosen:
        raise BadUserInput(
            "k8scontextIDs must list at least one cluster: pass the kubernetes_server_id "
            "of each K8sContext to include"
        )
    return chosen


def k8s_contexts_page(model: Model, user_id: str, request: PageRequest) -> dict[str, Any]:
    """``K8sContextsPage`` of the user's contexts; search matches name or server."""
    contexts = model.contexts(user_id)
    items, total = paginate(contexts, request, search_fields=("name", "server"))
    return {"total_count": total, "contexts": items}


def perf_profiles_page(model: Model, user_id: str, request: PageRequest) -> dict[str, Any]:
    items, total = paginate(model.profiles(user_id), request)
    return {**page_envelope(request, total), "profiles": items}


def perf_results_page(
    model: Model,
    user_id: str,
    request: PageRequest,
    profile_id: str | None,
    upto_id: str | None = None,
) -> dict[str, Any]:
    """``PerfPageResult`` of one of the user's profiles (all of them when
    *profile_id* is None), optionally as of one of its results (*upto_id*)."""
    if profile_id is None:
        runs = model.all_results(user_id)
    else:
        runs = model.results_of(profile_id, upto_id, owner=user_id)
    items, total = paginate(runs, request, id_field="meshery_id")
    return {**page_envelope(request, total), "results": items}


def patterns_page(model: Model, user_id: str, request: PageRequest) -> dict[str, Any]:
    items, total = paginate(model.patterns_of(user_id), request)
    return {**page_envelope(request, total), "patterns": items}


def filters_page(model: Model, user_id: str, request: PageRequest) -> dict[str, Any]:
    items, total = paginate(model.filters_of(user_id), request)
    return {**page_envelope(request, total), "filters": items}


def configuration_page(
    model: Model, user_id: str, patterns: PageRequest, filters: PageRequest
) -> dict[str, Any]:
    """``ConfigurationPage``: the user's designs and filters (applications are gone
    from Meshery, so that part is always null)."""
    return {
        "applications": None,
        "patterns": patterns_page(model, user_id, patterns),
        "filters": filters_page(model, user_id, filters),
    }


def cluster_resources(
    model: Model, user_id: str, ids: Sequence[str] | None, namespace: str
) -> dict[str, Any]:
    """Counts for the named clusters (shared state); context ids name the user's own only.
    With no ids, the clusters of the user's contexts as they are now."""
    if ids is None:
        clusters = {c["kubernetes_server_id"] for c in model.contexts(user_id)}
    else:
        clusters = model.resolve_clusters(ids, user_id)
    return {"resources": model.count_resources(clusters, namespace)}


def meshmodel_summary(model: Model, kind: str) -> dict[str, Any]:
    """Meshery fills the selected list and sends the other one empty."""
    summary: dict[str, Any] = {"components": [], "relationships": []}
    summary[kind] = model.meshmodel_summary(kind)
    return summary
