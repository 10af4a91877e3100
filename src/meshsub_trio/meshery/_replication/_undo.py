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
:class:`.ReplicatedBus` uses them). The records are put back directly, through
the model's ``held`` and ``put_back`` (:mod:`.._model._restore`, which keeps
its storage accounting in step), because some changes have no inverse message
(a MeshModel entry or one controller cannot be removed by a message). This
mirrors the model's ``_apply_*`` handlers: a change to what a message writes
there belongs here too (``tests/scaleout/test_rollback_undo.py`` checks every
kind).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .._model._model import Model

Message = Mapping[str, Any]
#: Puts the records back; call with the model the image was taken from.
Restore = Callable[[Model], None]

#: Owned records: message type -> (the model's place for them, the message's
#: record field, the owner's field in records and deletes).
_OWNED = {
    "k8s_context": ("context", "context", "owner"),
    "pattern": ("design", "pattern", "user_id"),
    "filter": ("filter", "filter", "user_id"),
    "perf_profile": ("profile", "profile", "user_id"),
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


def _owned(model: Model, message: Message, place: str, field: str, owner: str) -> Restore:
    """Records keyed ``(owner, id)``; a profile's delete also takes its results."""
    if message["op"] == "upsert":
        record = message[field]
        keys = [(str(record[owner]), str(record["id"]))]
    else:  # the model deletes what is not an upsert: the owner's record, or every owner's
        who, item_id = message.get(owner), str(message["id"])
        keys = (
            [(str(who), item_id)]
            if who is not None
            else [k for k in model.held_keys(place) if k[1] == item_id]
        )
    records = {key: model.held(place, key) for key in keys}
    runs: dict[tuple[str, str], Any] = {}
    if place == "profile" and message["op"] != "upsert":
        runs = {key: model.held("results", key) for key in keys}

    def restore(model: Model) -> None:
        for key, record in records.items():
            model.put_back(place, key, record)
        for key, kept in runs.items():
            model.put_back("results", key, kept)

    return restore


def _controllers(model: Model, message: Message) -> Restore:
    if message["op"] == "upsert":
        item = message["item"]
        keys = [(item["connectionID"], item["controller"])]
    else:
        keys = [key for key in model.held_keys("controller") if key[0] == message["connectionID"]]
    records = {key: model.held("controller", key) for key in keys}

    def restore(model: Model) -> None:
        for key, record in records.items():
            model.put_back("controller", key, record)

    return restore


def _cluster_objects(model: Model, message: Message) -> Restore:
    if message["op"] == "clear":
        cluster_id = message["cluster_id"]
        whole = model.held("cluster", cluster_id)  # clearing drops this dict, never changes it

        def restore_cluster(model: Model) -> None:
            model.put_back("cluster", cluster_id, whole)

        return restore_cluster
    obj = message["object"]
    key = (obj["cluster_id"], obj["kind"], obj["namespace"], obj["name"])
    record = model.held("cluster_object", key)

    def restore(model: Model) -> None:
        model.put_back("cluster_object", key, record)

    return restore


def _meshmodel(model: Model, message: Message) -> Restore:
    entry = message["entry"]
    member = (entry["entity"], entry["model"], entry["version"], entry["name"])
    if model.held("meshmodel", member) is not None:
        return _nothing  # registering again changes nothing

    def restore(model: Model) -> None:
        model.put_back("meshmodel", member, None)

    return restore
