"""Which model changes the embedded database keeps, and as what rows.

Why a separate module: the writer thread and the v1 -> v2 migration must
agree exactly on what a change message means for the database.

* Current state per object key (kind, owner, id): the latest upsert message
  of a K8s context, design, filter, performance profile or MeshModel entry
  (``put``; MeshModel entries are shared, owner ``""``), removed on delete
  (``delete``; a delete naming no owner removes every owner's record with
  that id, as the model does); loading applies them to an empty model.
* Appends, trimmed to the model's retention: events per user and results
  per profile, each stored with its log sequence (the resume cursor).
* Not kept: controller statuses and cluster objects. They are live reports
  of a running cluster (MeshSync, the operator): after a restart the
  cluster reports them again, and a persisted copy would show a dead
  cluster as healthy until then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import orjson

#: Change message types kept as the latest state of one object: the key of
#: the record inside an upsert message, and of its owner inside the record
#: (and inside a delete message).
OBJECTS = {
    "k8s_context": ("context", "owner"),
    "pattern": ("pattern", "user_id"),
    "filter": ("filter", "user_id"),
    "perf_profile": ("profile", "user_id"),
}
#: Live state, reported again by the cluster after a restart (see module doc).
LIVE = frozenset({"controller", "cluster_object"})


class Change(NamedTuple):
    """One row operation: ``put``/``delete`` an object, append an ``event``
    or ``result``, or ``drop_results`` of a deleted profile. *owner* None
    (deletes only) means every owner."""

    action: str
    kind: str
    owner: str | None
    key: str


def _owner(value: Any) -> str | None:
    return None if value is None else str(value)


def meshmodel_key(entry: Mapping[str, Any]) -> str:
    """A MeshModel entry's identity (all four fields), as one text key."""
    return orjson.dumps([entry[k] for k in ("entity", "model", "version", "name")]).decode()


def changes_of(message: Mapping[str, Any]) -> tuple[Change, ...]:
    """The row operations that persist *message* (none for live or unknown ones)."""
    kind, op = message.get("type"), message.get("op")
    try:
        if kind in OBJECTS:
            assert isinstance(kind, str)
            field, owned_by = OBJECTS[kind]
            if op == "upsert":
                record = message[field]
                return (Change("put", kind, str(record[owned_by]), str(record["id"])),)
            if op != "delete":
                return ()
            removed = Change("delete", kind, _owner(message.get(owned_by)), str(message["id"]))
            if kind == "perf_profile":
                dropped = Change("drop_results", "perf_result", removed.owner, removed.key)
                return (removed, dropped)
            return (removed,)
        if kind == "meshmodel" and op == "register":
            return (Change("put", "meshmodel", "", meshmodel_key(message["entry"])),)
        if kind == "event" and op == "append":
            user = str(message["event"]["userID"])
            return (Change("event", "event", user, user),)
        if kind == "perf_result" and op == "append":
            result = message["result"]
            owner, profile = str(result["user_id"]), str(result["performance_profile"])
            return (Change("result", "perf_result", owner, profile),)
    except (KeyError, TypeError):
        return ()  # malformed: the model refuses it too
    return ()
