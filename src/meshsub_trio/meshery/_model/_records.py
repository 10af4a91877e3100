"""Builders for the model's records, each already shaped like its GraphQL type.

Records are plain JSON-ready dicts: the same dict is stored by the model,
carried in broker messages (across processes, later) and emitted to
subscribers, so there is one shape to keep right instead of three.
Builders validate what the schema would otherwise reject at delivery time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._timefmt import format_time, parse_time

SEVERITIES = ("emergency", "alert", "critical", "error", "warning", "informational", "debug")
CONTROLLERS = ("BROKER", "OPERATOR", "MESHSYNC")
CONTROLLER_STATUSES = (
    "DEPLOYED", "NOTDEPLOYED", "DEPLOYING", "UNKOWN", "UNDEPLOYED", "ENABLED", "RUNNING",
    "CONNECTED",
)  # fmt: skip
VISIBILITIES = ("private", "public", "published")


def _text(value: Any, default: str = "") -> str:
    return default if value is None else str(value)


def _choice(value: Any, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"{what} must be one of {', '.join(allowed)}; got {value!r}")
    return str(value)


def _json_object(value: Any, what: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{what} must be a JSON object")
    return dict(value)


def _timestamp(value: Any, default: str) -> str:
    if value is None:
        return default
    return format_time(parse_time(str(value)))


def event(
    fields: Mapping[str, Any], *, event_id: str, user_id: str, system_id: str, now: str
) -> dict[str, Any]:
    """An ``Event``. Severity must be a schema value: meshkit's ``success`` is not one."""
    return {
        "id": _text(fields.get("id"), event_id),
        "userID": user_id,
        "actedUpon": _text(fields.get("actedUpon"), "00000000-0000-0000-0000-000000000000"),
        "operationID": _text(fields.get("operationID"), event_id),
        "systemID": _text(fields.get("systemID"), system_id),
        "severity": _choice(fields.get("severity"), SEVERITIES, "severity"),
        "action": _text(fields.get("action")),
        "status": _text(fields.get("status")),
        "category": _text(fields.get("category")),
        "description": _text(fields.get("description")),
        "metadata": _json_object(fields.get("metadata"), "metadata"),
        "createdAt": _timestamp(fields.get("createdAt"), now),
        "updatedAt": now,
        "deletedAt": None,
    }


def k8s_context(
    fields: Mapping[str, Any],
    *,
    context_id: str,
    owner: str,
    instance_id: str,
    now: str,
    created_at: str | None,
) -> dict[str, Any]:
    """A ``K8sContext``; the cluster and connection default to per-context ids."""
    name = _text(fields.get("name")).strip()
    server = _text(fields.get("server")).strip()
    if not name or not server:
        raise ValueError("a Kubernetes context needs a name and a server")
    return {
        "id": context_id,
        "name": name,
        "server": server,
        "owner": owner,
        "created_by": owner,
        "meshery_instance_id": instance_id,
        "kubernetes_server_id": _text(fields.get("kubernetes_server_id")) or context_id,
        "deployment_type": _text(fields.get("deployment_type")) or "out_cluster",
        "version": _text(fields.get("version")),
        "updated_at": now,
        "created_at": created_at or now,
        "connection_id": _text(fields.get("connection_id")) or context_id,
    }


def controller_item(
    connection_id: str, controller: str, status: str, version: str
) -> dict[str, Any]:
    """A ``MesheryControllersStatusListItem``."""
    if not connection_id:
        raise ValueError("connectionID must not be empty")
    return {
        "connectionID": connection_id,
        "controller": _choice(controller, CONTROLLERS, "controller"),
        "status": _choice(status, CONTROLLER_STATUSES, "status"),
        "version": version,
    }


def _string_list(value: Any) -> list[str] | None:
    return None if value is None else [str(item) for item in value]


def _positive(value: Any, what: str, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{what} must be a non-negative integer")
    return value


_PROFILE_TEXT = (
    "request_headers", "request_cookies", "request_body", "content_type", "service_mesh",
)  # fmt: skip


def perf_profile(
    fields: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None,
    profile_id: str,
    user_id: str,
    now: str,
) -> dict[str, Any]:
    """A ``PerfProfile``; on update, fields not given keep their previous values."""
    old = dict(previous or {})
    name = _text(fields.get("name"), old.get("name") or "").strip()
    if not name:
        raise ValueError("a performance profile needs a name")
    record = {
        "concurrent_request": _positive(
            fields.get("concurrent_request"), "concurrent_request", old.get("concurrent_request", 1)
        ),
        "created_at": old.get("created_at", now),
        "duration": _text(fields.get("duration"), old.get("duration", "30s")),
        "endpoints": _string_list(fields.get("endpoints")) or old.get("endpoints", []),
        "id": profile_id,
        "last_run": old.get("last_run"),
        "load_generators": _string_list(fields.get("load_generators"))
        or old.get("load_generators", ["fortio"]),
        "name": name,
        "qps": _positive(fields.get("qps"), "qps", old.get("qps", 0)),
        "total_results": old.get("total_results", 0),
        "updated_at": now,
        "user_id": old.get("user_id", user_id),
        "metadata": _json_object(fields.get("metadata"), "metadata") or old.get("metadata"),
    }
    for key in _PROFILE_TEXT:
        record[key] = fields[key] if fields.get(key) is not None else old.get(key)
    return record


def perf_result(
    fields: Mapping[str, Any], *, result_id: str, profile: Mapping[str, Any], user_id: str, now: str
) -> dict[str, Any]:
    """A ``MesheryResult`` of one load-test run of *profile*."""
    return {
        "meshery_id": result_id,
        "name": _text(fields.get("name")) or f"{profile.get('name')} run",
        "mesh": _text(fields.get("mesh"), profile.get("service_mesh") or ""),
        "performance_profile": profile["id"],
        "test_id": _text(fields.get("test_id"), result_id),
        "runner_results": _json_object(fields.get("runner_results"), "runner_results") or {},
        "server_metrics": fields.get("server_metrics"),
        "server_board_config": fields.get("server_board_config"),
        "test_start_time": _text(fields.get("test_start_time"), now),
        "user_id": user_id,
        "updated_at": now,
        "created_at": now,
    }


def _location(value: Any) -> dict[str, Any]:
    loc = dict(value or {})
    return {key: loc.get(key) for key in ("branch", "host", "path", "type")}


def _visibility(value: Any, previous: Any) -> str:
    if value is None:
        return str(previous or "private")
    return _choice(value, VISIBILITIES, "visibility")


def pattern(
    fields: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None,
    pattern_id: str,
    user_id: str,
    now: str,
) -> dict[str, Any]:
    """A ``PatternResult`` (a Meshery design) owned by *user_id*."""
    old = dict(previous or {})
    name = _text(fields.get("name")).strip()
    if not name:
        raise ValueError("a design needs a name")
    kind = fields.get("type")
    return {
        "id": pattern_id,
        "name": name,
        "user_id": user_id,
        "location": _location(fields.get("location") or old.get("location")),
        "pattern_file": _text(fields.get("pattern_file")),
        "visibility": _visibility(fields.get("visibility"), old.get("visibility")),
        "catalog_data": _json_object(fields.get("catalog_data"), "catalog_data")
        or old.get("catalog_data"),
        "canSupport": True,
        "errmsg": None,
        "created_at": old.get("created_at", now),
        "updated_at": now,
        "type": {"String": str(kind), "Valid": True}
        if kind
        else old.get("type", {"String": "", "Valid": False}),
    }


def filter_(
    fields: Mapping[str, Any],
    *,
    previous: Mapping[str, Any] | None,
    filter_id: str,
    user_id: str,
    now: str,
) -> dict[str, Any]:
    """A ``FilterResult`` (a WASM filter) owned by *user_id*."""
    old = dict(previous or {})
    name = _text(fields.get("name")).strip()
    if not name:
        raise ValueError("a filter needs a name")
    return {
        "id": filter_id,
        "name": name,
        "filter_file": _text(fields.get("filter_file")),
        "filter_resource": _text(fields.get("filter_resource"), old.get("filter_resource", "")),
        "user_id": user_id,
        "location": _location(fields.get("location") or old.get("location")),
        "visibility": _visibility(fields.get("visibility"), old.get("visibility")),
        "catalog_data": _json_object(fields.get("catalog_data"), "catalog_data")
        or old.get("catalog_data"),
        "created_at": old.get("created_at", now),
        "updated_at": now,
    }


def cluster_object(cluster_id: str, kind: str, namespace: str | None, name: str) -> dict[str, str]:
    """One Kubernetes object as MeshSync stores it; ``namespace == ""`` is cluster-scoped."""
    if not cluster_id or not kind or not name:
        raise ValueError("a cluster object needs kubernetes_server_id, kind and name")
    namespace = namespace or ""
    if kind == "Namespace" and namespace:
        raise ValueError("Namespace objects are cluster-scoped: leave namespace empty")
    return {"cluster_id": cluster_id, "kind": kind, "namespace": namespace, "name": name}


def meshmodel_entry(entity: str, model: str, version: str, name: str | None) -> dict[str, str]:
    """A registered component or relationship of a model version."""
    if entity not in ("components", "relationships"):
        raise ValueError("entity must be 'components' or 'relationships'")
    model, version = model.strip(), version.strip()
    if not model or not version:
        raise ValueError("a MeshModel entry needs a model name and a version")
    return {"entity": entity, "model": model, "version": version, "name": (name or "").strip()}
