"""Which cluster connections a user reaches: those of the user's own K8s contexts.

Controller status is cluster state kept per connection id, written by the
cluster's feed (service accounts and the simulator; the one user in local
mode), who see every connection. An ordinary user reaches a connection only
through a context of their own that refers to it, so another user's
connection reads, filters and changes exactly like one that exists nowhere.

That holds only if a user cannot point a context at someone else's
connection. Connection ids are one namespace shared by every owner, so
"claim it if it is free" would tell a user which ids are taken. Instead an
ordinary user's new context gets a connection id the server derives from its
owner and context id (the same on every replica and when the context is
added again, and never one derived for another owner), and a context may
name only a connection the user already holds (to put two of their contexts
on one connection); naming any other id is "no connection X", whether it is
another user's or nobody's. A discovered cluster shared by several users is
registered for each of them by a trusted caller (the simulator, a host),
which the model itself does not restrict.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Collection, Mapping
from typing import Any

from ._model import Model

#: The uuid5 namespace of the connection ids derived for users' contexts. Never
#: change it: stored contexts keep the ids it gave them.
_DERIVED = uuid.UUID("90cda06d-701a-4814-967e-903ee9fc4afa")


def connections_of(model: Model, owner: str) -> set[str]:
    """The connections *owner*'s contexts refer to."""
    return {context["connection_id"] for context in model.contexts(owner)}


def visible_connections(
    model: Model, user_id: str, sees_all: bool, wanted: Collection[str] | None
) -> set[str] | None:
    """The connection ids *user_id* may read controllers of, narrowed to *wanted*
    when given; None means every connection (only for those who *sees_all*)."""
    if sees_all:
        return None if wanted is None else set(wanted)
    held = connections_of(model, user_id)
    return held if wanted is None else held & set(wanted)


def own_context_fields(model: Model, fields: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """An ordinary user's ``K8sContextInput`` with its connection settled: the one
    named if *owner* holds it, else the context's current one, else a derived id.

    Raises ValueError ("no connection X") for any other named connection, the
    same for another user's as for one that does not exist.
    """
    named = str(fields.get("connection_id") or "")
    if named:
        if named not in connections_of(model, owner):
            raise ValueError(f"no connection {named}")
        return dict(fields)
    context_id = str(fields.get("id") or model.new_id())
    previous = model.context(context_id, owner)
    if previous is not None:
        connection = str(previous["connection_id"])
    else:  # JSON keeps (owner, id) pairs apart whatever characters they hold
        connection = str(uuid.uuid5(_DERIVED, json.dumps([owner, context_id])))
    return {**fields, "id": context_id, "connection_id": connection}
