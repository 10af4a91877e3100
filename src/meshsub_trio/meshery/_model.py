"""The in-memory Meshery model: plain Python, no I/O, no Trio.

Every change is expressed as a JSON-ready message, applied to the model's own
state by :meth:`Model.apply` and then published on the message's topic. The
same message applied to an empty model elsewhere (a replica fed by a NATS
backplane, say) reproduces the change, so messages always carry the full new
record rather than a hint to go and look.

Message shapes (every message has ``type`` and ``op``)::

    meshery.k8s_contexts          {type: k8s_context, op: upsert, context: K8sContext}
                                  {type: k8s_context, op: delete, id}
    meshery.controllers           {type: controller, op: upsert,
                                   item: MesheryControllersStatusListItem}
                                  {type: controller, op: delete, connectionID}
    meshery.cluster_resources     {type: cluster_object, op: upsert|delete,
                                   object: {cluster_id, kind, namespace, name}}
                                  {type: cluster_object, op: clear, cluster_id}
    meshery.configuration.<user>  {type: pattern|filter, op: upsert, pattern|filter: record}
                                  {type: pattern|filter, op: delete, user_id, id}
    meshery.perf_profiles         {type: perf_profile, op: upsert, profile: PerfProfile}
                                  {type: perf_profile, op: delete, id}
    meshery.perf_results.<prof>   {type: perf_result, op: append, seq, result: MesheryResult}
    meshery.meshmodel             {type: meshmodel, op: register,
                                   entry: {entity, model, version, name}}
    meshery.events.<user>         {type: event, op: append, event: Event}

Committing publishes first and applies second: a broker that refuses the
message (a NATS broker whose bounded queue is full during an outage) leaves
the model untouched, so no replica ever holds a change the others never get.
With a replicated bus (:mod:`._replication`) the bus takes over committing.
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

import orjson
import trio

from .._broker import Broker, MemoryBroker
from . import _records as records
from . import _topics as topics
from ._timefmt import utc_now

Message = dict[str, Any]
_CONTROLLER_ORDER = {name: index for index, name in enumerate(records.CONTROLLERS)}


def _random_id() -> str:
    return str(uuid.uuid4())


class Committer(Protocol):
    """Who commits the model's changes when it is replicated (see ._replication)."""

    def commit(self, topic: str, message: Message) -> None:
        """Publish *message* (raising if refused) and apply it as replication requires."""

    async def flush(self) -> None:
        """Wait (bounded) until committed changes reached the shared bus."""


class Model:
    """Meshery's state: clusters, controllers, designs, perf data, MeshModel, events.

    All methods are synchronous and never block; subscribers learn about
    changes only through the broker. ``now`` and ``new_id`` are injectable so
    tests and the seeded simulator are reproducible.
    """

    def __init__(
        self,
        broker: Broker | None = None,
        *,
        now: Callable[[], str] = utc_now,
        new_id: Callable[[], str] = _random_id,
        system_id: str | None = None,
        event_history: int = 1000,
        results_per_profile: int = 1000,
    ) -> None:
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self.now = now
        self.new_id = new_id
        #: This Meshery instance (``Event.systemID``, ``meshery_instance_id``).
        self.system_id = system_id or new_id()
        self._event_history = event_history
        self._results_per_profile = results_per_profile
        #: Users the model knows of (the simulator sends them events).
        self.users: set[str] = set()
        self._contexts: dict[str, dict[str, Any]] = {}
        self._controllers: dict[tuple[str, str], dict[str, Any]] = {}
        self._objects: dict[str, dict[tuple[str, str, str], dict[str, str]]] = {}
        self._patterns: dict[str, dict[str, Any]] = {}
        self._filters: dict[str, dict[str, Any]] = {}
        self._profiles: dict[str, dict[str, Any]] = {}
        self._results: dict[str, deque[tuple[int, dict[str, Any]]]] = {}
        self._seq = 0
        self._meshmodel: set[tuple[str, str, str, str]] = set()
        self._events: dict[str, deque[dict[str, Any]]] = {}
        #: Set by a replicated bus: it then publishes and applies every change.
        self.committer: Committer | None = None
        #: When set, every BROKER controller reads as this status: this
        #: process's own link to a shared bus, a local fact never replicated.
        self.broker_status: str | None = None

    # ------------------------------------------------------------------ core

    def _commit(self, topic: str, message: Message) -> None:
        if self.committer is not None:
            self.committer.commit(topic, message)
            return
        self.broker.publish(topic, message)  # first: a refused message changes nothing
        self.apply(message)

    async def flush(self) -> None:
        """Wait until committed changes reached the bus (at once in memory)."""
        if self.committer is not None:
            await self.committer.flush()
        else:
            await trio.lowlevel.checkpoint()

    def apply(self, message: Mapping[str, Any]) -> None:
        """Apply one change message to this model's state (never publishes)."""
        handler = getattr(self, f"_apply_{message['type']}", None)
        if handler is None:
            raise ValueError(f"unknown message type {message['type']!r}")
        # A private copy: the message also goes to subscribers (and, in memory,
        # is the caller's). Messages are JSON by design, and a JSON round trip
        # copies them about 5x faster than deepcopy.
        handler(message["op"], orjson.loads(orjson.dumps(message)))

    def _apply_k8s_context(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._contexts[msg["context"]["id"]] = msg["context"]
        else:
            self._contexts.pop(msg["id"], None)

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

    def _apply_pattern(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._patterns[msg["pattern"]["id"]] = msg["pattern"]
        else:
            self._patterns.pop(msg["id"], None)

    def _apply_filter(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._filters[msg["filter"]["id"]] = msg["filter"]
        else:
            self._filters.pop(msg["id"], None)

    def _apply_perf_profile(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._profiles[msg["profile"]["id"]] = msg["profile"]
        else:
            self._profiles.pop(msg["id"], None)
            self._results.pop(msg["id"], None)

    def _apply_perf_result(self, _op: str, msg: Message) -> None:
        result = msg["result"]
        runs = self._results.setdefault(
            result["performance_profile"], deque(maxlen=self._results_per_profile)
        )
        runs.append((msg["seq"], result))
        self._seq = max(self._seq, msg["seq"])

    def _apply_meshmodel(self, _op: str, msg: Message) -> None:
        entry = msg["entry"]
        self._meshmodel.add((entry["entity"], entry["model"], entry["version"], entry["name"]))

    def _apply_event(self, _op: str, msg: Message) -> None:
        event = msg["event"]
        self.users.add(event["userID"])
        history = self._events.setdefault(event["userID"], deque(maxlen=self._event_history))
        history.append(event)

    # ----------------------------------------------------------------- users

    def add_user(self, user_id: str) -> None:
        """Make a user known (so the simulator greets them with events)."""
        self.users.add(user_id)

    # ---------------------------------------------------------------- events

    def publish_event(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Record an event for *user_id* and push it to their ``subscribeEvents``."""
        event = records.event(
            fields,
            event_id=self.new_id(),
            user_id=user_id,
            system_id=self.system_id,
            now=self.now(),
        )
        self._commit(topics.events(user_id), {"type": "event", "op": "append", "event": event})
        return event

    def events_of(self, user_id: str) -> list[dict[str, Any]]:
        """The user's retained event history, oldest first."""
        return list(self._events.get(user_id, ()))

    # ------------------------------------------------------ k8s and controllers

    def upsert_context(self, fields: Mapping[str, Any], *, owner: str) -> dict[str, Any]:
        """Add or update a Kubernetes context; a new connection gets its controllers."""
        context_id = str(fields.get("id") or self.new_id())
        previous = self._contexts.get(context_id)
        context = records.k8s_context(
            fields,
            context_id=context_id,
            owner=previous["owner"] if previous else owner,
            instance_id=self.system_id,
            now=self.now(),
            created_at=previous["created_at"] if previous else None,
        )
        self._commit(
            topics.K8S_CONTEXTS, {"type": "k8s_context", "op": "upsert", "context": context}
        )
        for controller in records.CONTROLLERS:
            if (context["connection_id"], controller) not in self._controllers:
                self.set_controller_status(context["connection_id"], controller, "NOTDEPLOYED")
        return context

    def delete_context(self, context_id: str) -> bool:
        """Remove a context, and its connection's controllers and cluster's objects
        once no other context refers to them."""
        context = self._contexts.get(context_id)
        if context is None:
            return False
        self._commit(topics.K8S_CONTEXTS, {"type": "k8s_context", "op": "delete", "id": context_id})
        rest = self._contexts.values()
        connection, cluster = context["connection_id"], context["kubernetes_server_id"]
        if not any(c["connection_id"] == connection for c in rest):
            self._commit(
                topics.CONTROLLERS,
                {"type": "controller", "op": "delete", "connectionID": connection},
            )
        if cluster in self._objects and not any(c["kubernetes_server_id"] == cluster for c in rest):
            self._commit(
                topics.CLUSTER_RESOURCES,
                {"type": "cluster_object", "op": "clear", "cluster_id": cluster},
            )
        return True

    def context(self, context_id: str) -> dict[str, Any] | None:
        return self._contexts.get(context_id)

    def contexts(self) -> list[dict[str, Any]]:
        return list(self._contexts.values())

    def set_controller_status(
        self, connection_id: str, controller: str, status: str, version: str | None = None
    ) -> dict[str, Any]:
        """Set one controller's status; ``version=None`` keeps the known version."""
        previous = self._controllers.get((connection_id, controller))
        if version is None:
            version = previous["version"] if previous else ""
        item = records.controller_item(connection_id, controller, status, version)
        if item != previous:
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

    def resolve_clusters(self, ids: Iterable[str]) -> set[str]:
        """Map ids to ``kubernetes_server_id`` values; context ids are accepted too."""
        clusters = set()
        for value in ids:
            context = self._contexts.get(value)
            is_cluster = value in self._objects or any(
                c["kubernetes_server_id"] == value for c in self._contexts.values()
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

    # ------------------------------------------------------ patterns, filters

    def _owned(
        self, store: Mapping[str, dict[str, Any]], user_id: str, item_id: Any, what: str
    ) -> dict[str, Any] | None:
        """The stored item with this id, refusing (without leaking it) another user's."""
        if item_id is None:
            return None
        previous = store.get(str(item_id))
        if previous is not None and previous["user_id"] != user_id:
            raise ValueError(f"no {what} {item_id} for this user")
        return previous

    def save_pattern(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's designs."""
        previous = self._owned(self._patterns, user_id, fields.get("id"), "design")
        record = records.pattern(
            fields,
            previous=previous,
            pattern_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        message = {"type": "pattern", "op": "upsert", "pattern": record}
        self._commit(topics.configuration(user_id), message)
        return record

    def delete_pattern(self, user_id: str, pattern_id: str) -> bool:
        if self._owned(self._patterns, user_id, pattern_id, "design") is None:
            return False
        message = {"type": "pattern", "op": "delete", "user_id": user_id, "id": pattern_id}
        self._commit(topics.configuration(user_id), message)
        return True

    def patterns_of(self, user_id: str | None) -> list[dict[str, Any]]:
        """The user's designs (everyone's when *user_id* is None)."""
        return [p for p in self._patterns.values() if user_id in (None, p["user_id"])]

    def save_filter(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's filters."""
        previous = self._owned(self._filters, user_id, fields.get("id"), "filter")
        record = records.filter_(
            fields,
            previous=previous,
            filter_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._commit(
            topics.configuration(user_id), {"type": "filter", "op": "upsert", "filter": record}
        )
        return record

    def delete_filter(self, user_id: str, filter_id: str) -> bool:
        if self._owned(self._filters, user_id, filter_id, "filter") is None:
            return False
        message = {"type": "filter", "op": "delete", "user_id": user_id, "id": filter_id}
        self._commit(topics.configuration(user_id), message)
        return True

    def filters_of(self, user_id: str | None) -> list[dict[str, Any]]:
        """The user's filters (everyone's when *user_id* is None)."""
        return [f for f in self._filters.values() if user_id in (None, f["user_id"])]

    # ------------------------------------------------------------ performance

    def save_profile(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update a performance profile (only its owner may update it)."""
        previous = self._owned(self._profiles, user_id, fields.get("id"), "performance profile")
        profile = records.perf_profile(
            fields,
            previous=previous,
            profile_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._put_profile(profile)
        return profile

    def _put_profile(self, profile: dict[str, Any]) -> None:
        message = {"type": "perf_profile", "op": "upsert", "profile": profile}
        self._commit(topics.PERF_PROFILES, message)

    def delete_profile(self, user_id: str, profile_id: str) -> bool:
        """Delete a profile and its results."""
        if self._owned(self._profiles, user_id, profile_id, "performance profile") is None:
            return False
        self._commit(
            topics.PERF_PROFILES, {"type": "perf_profile", "op": "delete", "id": profile_id}
        )
        return True

    def profile(self, profile_id: str) -> dict[str, Any] | None:
        return self._profiles.get(profile_id)

    def profiles(self) -> list[dict[str, Any]]:
        return list(self._profiles.values())

    def record_result(
        self, user_id: str, profile_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store one load-test result; the profile's run count and last run follow."""
        profile = self._profiles.get(profile_id)
        if profile is None:
            raise ValueError(f"no performance profile {profile_id}")
        now = self.now()
        result = records.perf_result(
            fields, result_id=self.new_id(), profile=profile, user_id=user_id, now=now
        )
        self._seq += 1
        message = {"type": "perf_result", "op": "append", "seq": self._seq, "result": result}
        self._commit(topics.perf_results(profile_id), message)
        self._put_profile(
            {
                **profile,
                "total_results": (profile.get("total_results") or 0) + 1,
                "last_run": now,
                "updated_at": now,
            }
        )
        return result

    def results_of(self, profile_id: str, upto_id: str | None = None) -> list[dict[str, Any]]:
        """The profile's retained results, oldest first; with *upto_id*, only those
        up to and including that result (none once it is no longer retained).

        Results are kept in the order they were applied, which is the shared
        log's order on every replica, so "as of this result" means the same
        everywhere (a per-origin sequence number would not).
        """
        runs = [result for _, result in self._results.get(profile_id, ())]
        if upto_id is None:
            return runs
        for index, result in enumerate(runs):
            if result["meshery_id"] == upto_id:
                return runs[: index + 1]
        return []

    def all_results(self) -> list[dict[str, Any]]:
        return [result for runs in self._results.values() for _, result in runs]

    def result(self, result_id: str) -> dict[str, Any] | None:
        for result in self.all_results():
            if result["meshery_id"] == result_id:
                return result
        return None

    # --------------------------------------------------------------- meshmodel

    def register_meshmodel(
        self, entity: str, model: str, version: str, name: str | None = None
    ) -> bool:
        """Register a component or relationship of a model version; False if known."""
        entry = records.meshmodel_entry(entity, model, version, name)
        if tuple(entry.values()) in self._meshmodel:
            return False
        self._commit(topics.MESHMODEL, {"type": "meshmodel", "op": "register", "entry": entry})
        return True

    def meshmodel_summary(self, entity: str) -> list[dict[str, Any]]:
        """``[{name: model, count: distinct versions}]`` for components or relationships."""
        versions: dict[str, set[str]] = {}
        for kind, model, version, _ in self._meshmodel:
            if kind == entity:
                versions.setdefault(model, set()).add(version)
        return [{"name": model, "count": len(versions[model])} for model in sorted(versions)]
