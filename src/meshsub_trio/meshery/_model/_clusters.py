"""Kubernetes contexts and the shared cluster state they lead to.

Contexts are owned; controllers, cluster objects and MeshModel entries are
cluster state written by the cluster's feed. Controllers are read through
one's own contexts (see :mod:`._connections`). One module because a context's
life drives its connection's controllers and (when a trusted caller deletes
it) its cluster's objects.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from . import _records as records
from . import _topics as topics
from ._core import Message, ModelCore, _keys

_CONTROLLER_ORDER = {name: index for index, name in enumerate(records.CONTROLLERS)}


class ClusterRecords(ModelCore):
    """Contexts, controllers, cluster objects and MeshModel registrations."""

    def _apply_k8s_context(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._store(self._contexts, "context", msg["context"]["owner"], msg["context"])
        else:
            self._unstore(self._contexts, "context", msg.get("owner"), msg["id"])

    def _apply_controller(self, op: str, msg: Message) -> None:
        if op == "upsert":
            item = msg["item"]
            self._controllers[(item["connectionID"], item["controller"])] = item
        else:
            for key in [k for k in self._controllers if k[0] == msg["connectionID"]]:
                del self._controllers[key]

    def _apply_cluster_object(self, op: str, msg: Message) -> None:
        if op == "clear":
            self._objects.pop(msg["cluster_id"], None)
            return
        obj = msg["object"]
        key = (obj["kind"], obj["namespace"], obj["name"])
        if op == "upsert":
            self._objects.setdefault(obj["cluster_id"], {})[key] = obj
            return
        cluster = self._objects.get(obj["cluster_id"], {})
        cluster.pop(key, None)
        if not cluster:
            self._objects.pop(obj["cluster_id"], None)

    def _apply_meshmodel(self, _op: str, msg: Message) -> None:
        entry = msg["entry"]
        self._meshmodel.add((entry["entity"], entry["model"], entry["version"], entry["name"]))

    # ------------------------------------------------------ k8s and controllers

    def upsert_context(self, fields: Mapping[str, Any], *, owner: str) -> dict[str, Any]:
        """Add or update one of *owner*'s Kubernetes contexts (another user's
        context with the same id is theirs, untouched); a new connection gets
        its controllers."""
        context_id = str(fields.get("id") or self.new_id())
        previous = self._contexts.get((owner, context_id))
        context = records.k8s_context(
            fields,
            context_id=context_id,
            owner=owner,
            instance_id=self.system_id,
            now=self.now(),
            created_at=previous["created_at"] if previous else None,
        )
        self._admit(owner, "context", context, previous)
        self._commit(
            topics.K8S_CONTEXTS, {"type": "k8s_context", "op": "upsert", "context": context}
        )
        for controller in records.CONTROLLERS:
            if (context["connection_id"], controller) not in self._controllers:
                self.set_controller_status(context["connection_id"], controller, "NOTDEPLOYED")
        return context

    def delete_context(
        self, context_id: str, owner: str | None = None, *, clear_cluster: bool = True
    ) -> bool:
        """Remove *owner*'s context (every owner's when None), and its connection's
        controllers once no context, anyone's, refers to the connection.

        Its cluster's objects go too once no context refers to the cluster, but
        only if *clear_cluster*: they are the cluster feed's, so only a trusted
        caller (the feed, the local user, the simulator) clears them. Otherwise
        any user could wipe a cluster by naming it in a context and deleting it,
        and learn from the result whether anyone else's context names it.
        """
        keys = _keys(self._contexts, owner, context_id)
        for key in keys:
            context = self._contexts[key]
            message = {"type": "k8s_context", "op": "delete", "owner": key[0], "id": key[1]}
            self._commit(topics.K8S_CONTEXTS, message)
            rest = self._contexts.values()
            connection, cluster = context["connection_id"], context["kubernetes_server_id"]
            if not any(c["connection_id"] == connection for c in rest):
                self._commit(
                    topics.CONTROLLERS,
                    {"type": "controller", "op": "delete", "connectionID": connection},
                )
            if (
                clear_cluster
                and cluster in self._objects
                and not any(c["kubernetes_server_id"] == cluster for c in rest)
            ):
                self._commit(
                    topics.CLUSTER_RESOURCES,
                    {"type": "cluster_object", "op": "clear", "cluster_id": cluster},
                )
        return bool(keys)

    def context(self, context_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """*owner*'s context with this id (any owner's when None)."""
        keys = _keys(self._contexts, owner, context_id)
        return self._contexts[keys[0]] if keys else None

    def contexts(self, owner: str | None = None) -> list[dict[str, Any]]:
        """*owner*'s contexts (everyone's when None)."""
        return [c for (who, _), c in self._contexts.items() if owner in (None, who)]

    def set_controller_status(
        self, connection_id: str, controller: str, status: str, version: str | None = None
    ) -> dict[str, Any]:
        """Set one controller's status; ``version=None`` keeps the known version."""
        previous = self._controllers.get((connection_id, controller))
        if version is None:
            version = previous["version"] if previous else ""
        item = records.controller_item(connection_id, controller, status, version)
        if item != previous:
            self._check_object("controller", item)
            self._commit(topics.CONTROLLERS, {"type": "controller", "op": "upsert", "item": item})
        return item

    def controller_items(
        self, connection_ids: Collection[str] | None = None
    ) -> list[dict[str, Any]]:
        """Controller statuses, all or for the given connections, in a stable order."""
        status = self.broker_status
        items = [
            item if status is None or item["controller"] != "BROKER" else {**item, "status": status}
            for (connection, _), item in self._controllers.items()
            if connection_ids is None or connection in connection_ids
        ]
        items.sort(key=lambda i: (i["connectionID"], _CONTROLLER_ORDER[i["controller"]]))
        return items

    # ------------------------------------------------------- cluster resources

    def add_object(self, cluster_id: str, kind: str, namespace: str | None, name: str) -> bool:
        """Record a Kubernetes object (as MeshSync would); False if already known."""
        obj = records.cluster_object(cluster_id, kind, namespace, name)
        if (obj["kind"], obj["namespace"], name) in self._objects.get(cluster_id, {}):
            return False
        self._check_object("cluster_object", obj)
        self._commit(
            topics.CLUSTER_RESOURCES, {"type": "cluster_object", "op": "upsert", "object": obj}
        )
        return True

    def delete_object(self, cluster_id: str, kind: str, namespace: str | None, name: str) -> bool:
        obj = records.cluster_object(cluster_id, kind, namespace, name)
        if (obj["kind"], obj["namespace"], name) not in self._objects.get(cluster_id, {}):
            return False
        self._commit(
            topics.CLUSTER_RESOURCES, {"type": "cluster_object", "op": "delete", "object": obj}
        )
        return True

    def objects(self, cluster_id: str) -> list[dict[str, str]]:
        return list(self._objects.get(cluster_id, {}).values())

    def resolve_clusters(self, ids: Iterable[str], owner: str | None = None) -> set[str]:
        """Map ids to ``kubernetes_server_id`` values; *owner*'s context ids (anyone's
        when None) are accepted too. Cluster ids themselves are shared state.

        Whether an id is read as a cluster depends on cluster objects and on
        *owner*'s own contexts only: a cluster id defaults to its context's
        (private) id, so other users' contexts must not change the answer."""
        clusters = set()
        for value in ids:
            context = self.context(value, owner)
            is_cluster = value in self._objects or any(
                c["kubernetes_server_id"] == value for c in self.contexts(owner)
            )
            clusters.add(context["kubernetes_server_id"] if context and not is_cluster else value)
        return clusters

    def count_resources(self, cluster_ids: Collection[str], namespace: str) -> list[dict[str, Any]]:
        """Per-kind counts as Meshery's SQL computes them for the given clusters:
        cluster-scoped objects, plus objects in *namespace*, plus Namespaces."""
        counts: Counter[str] = Counter()
        for cluster_id in cluster_ids:
            for obj in self._objects.get(cluster_id, {}).values():
                kind, ns = obj["kind"], obj["namespace"]
                if kind == "Namespace" or ns in ("", namespace):
                    counts[kind] += 1
        return [{"kind": kind, "count": counts[kind]} for kind in sorted(counts)]

    def namespaces(self, cluster_ids: Collection[str] | None = None) -> list[str]:
        """Names of the Namespace objects in the given clusters (all when None)."""
        chosen = self._objects.keys() if cluster_ids is None else cluster_ids
        return sorted(
            {
                obj["name"]
                for cluster_id in chosen
                for obj in self._objects.get(cluster_id, {}).values()
                if obj["kind"] == "Namespace"
            }
        )

    # --------------------------------------------------------------- meshmodel

    def register_meshmodel(
        self, entity: str, model: str, version: str, name: str | None = None
    ) -> bool:
        """Register a component or relationship of a model version; False if known."""
        entry = records.meshmodel_entry(entity, model, version, name)
        if tuple(entry.values()) in self._meshmodel:
            return False
        self._check_object("meshmodel", entry)
        self._commit(topics.MESHMODEL, {"type": "meshmodel", "op": "register", "entry": entry})
        return True

    def meshmodel_summary(self, entity: str) -> list[dict[str, Any]]:
        """``[{name: model, count: distinct versions}]`` for components or relationships."""
        versions: dict[str, set[str]] = {}
        for kind, model, version, _ in self._meshmodel:
            if kind == entity:
                versions.setdefault(model, set()).add(version)
        return [{"name": model, "count": len(versions[model])} for model in sorted(versions)]
