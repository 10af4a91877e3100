"""Before-images: what puts back the records one own change is about to overwrite.

Why: a replica applies its own blind writes before the log has them (see
:mod:`._pending`). When the log then refuses one, or never confirms it, the
replica must drop it again, or it would hold a change no other replica has.
A blind write overwrites a known set of records and nothing else, so taking
it back is putting those records back as they were just before it: that is
what :func:`before_image` captures, cheaply (a few references, no copies of
records the model never mutates in place).

Exact when undone in the right state: right after the change was applied,
or after every own change applied since was undone first, newest first (how
:class:`.ReplicatedBus` uses them). The records are put back directly into
the model's stores, keeping its storage accounting (``Model.usage``) in
step, because some changes have no inverse message (a MeshModel entry or one
controller cannot be removed by a message). This mirrors the model's
``_apply_*`` handlers: a change to what a message writes there belongs here
too (``tests/scaleout/test_rollback_undo.py`` checks every kind).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .._model._model import Model

Message = Mapping[str, Any]
#: Puts the records back; call with the model the image was taken from.
Restore = Callable[[Model], None]

#: Owned record stores: message type -> (store attribute, the message's record
#: field, the owner's field in records and deletes, the usage kind charged).
_OWNED = {
    "k8s_context": ("_contexts", "context", "owner", "context"),
    "pattern": ("_patterns", "pattern", "user_id", "design"),
    "filter": ("_filters", "filter", "user_id", "filter"),
    "perf_profile": ("_profiles", "profile", "user_id", "profile"),
}


def before_image(model: Model, message: Message) -> Restore:
    """What undoes *message* on *model*; take it just before applying *message*.

    A message the model would refuse (unknown type, missing fields) changes
    nothing, so nothing is captured for it.
    """
    kind = message.get("type")
    try:
        if kind in _OWNED:
            return _owned(model, message, *_OWNED[str(kind)])
        if kind == "controller":
            return _controllers(model, message)
        if kind == "cluster_object":
            return _cluster_objects(model, message)
        if kind == "meshmodel":
            return _meshmodel(model, message)
    except (KeyError, TypeError, AttributeError):
        pass
    return _nothing  # appends (events, results) are never applied early


def _nothing(_model: Model) -> None:
    return None


def _owned(
    model: Model, message: Message, store_name: str, field: str, owner: str, usage: str
) -> Restore:
    """Records keyed ``(owner, id)``; a profile's delete also takes its results."""
    store: dict[tuple[str, str], dict[str, Any]] = getattr(model, store_name)
    if message["op"] == "upsert":
        record = message[field]
        keys = [(str(record[owner]), str(record["id"]))]
    else:  # the model deletes what is not an upsert: the owner's record, or every owner's
        who, item_id = message.get(owner), str(message["id"])
        keys = [(str(who), item_id)] if who is not None else [k for k in store if k[1] == item_id]
    records = {key: store.get(key) for key in keys}
    runs: dict[tuple[str, str], list[tuple[int, dict[str, Any]]] | None] = {}
    if store_name == "_profiles" and message["op"] != "upsert":
        runs = {k: list(model._results[k]) if k in model._results else None for k in keys}

    def restore(model: Model) -> None:
        store = getattr(model, store_name)
        for key, record in records.items():
            old = store.get(key)
            if old is not record:
                model.usage.replace(key[0], usage, old, record)
                _put(store, key, record)
        for key, kept in runs.items():
            for _, result in model._results.pop(key, ()):
                model.usage.replace(key[0], "result", result, None)
            if kept is not None:
                model._results[key] = deque(kept)
                for _, result in kept:
                    model.usage.replace(key[0], "result", None, result)

    return restore


def _controllers(model: Model, message: Message) -> Restore:
    store = model._controllers
    if message["op"] == "upsert":
        item = message["item"]
        keys = [(item["connectionID"], item["controller"])]
    else:
        keys = [key for key in store if key[0] == message["connectionID"]]
    records = {key: store.get(key) for key in keys}

    def restore(model: Model) -> None:
        for key, record in records.items():
            _put(model._controllers, key, record)

    return restore


def _cluster_objects(model: Model, message: Message) -> Restore:
    objects = model._objects
    if message["op"] == "clear":
        cluster_id = message["cluster_id"]
        whole = objects.get(cluster_id)  # clearing drops this dict, never changes it

        def restore_cluster(model: Model) -> None:
            _put(model._objects, cluster_id, whole)

        return restore_cluster
    obj = message["object"]
    cluster_id, key = obj["cluster_id"], (obj["kind"], obj["namespace"], obj["name"])
    record = objects.get(cluster_id, {}).get(key)

    def restore(model: Model) -> None:
        cluster = model._objects.setdefault(cluster_id, {})
        _put(cluster, key, record)
        if not cluster:  # the model keeps no empty cluster
            del model._objects[cluster_id]

    return restore


def _meshmodel(model: Model, message: Message) -> Restore:
    entry = message["entry"]
    member = (entry["entity"], entry["model"], entry["version"], entry["name"])
    if member in model._meshmodel:
        return _nothing  # registering again changes nothing

    def restore(model: Model) -> None:
        model._meshmodel.discard(member)

    return restore


def _put(store: dict[Any, Any], key: Any, record: Any) -> None:
    """``store[key] = record``, or no *key* at all when *record* is None."""
    if record is None:
        store.pop(key, None)
    else:
        store[key] = record
