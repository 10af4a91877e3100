"""The in-memory Meshery model: plain Python, no I/O, no Trio.

Every change is expressed as a JSON-ready message, applied to the model's own
state by :meth:`Model.apply` and then published on the message's topic. The
same message applied to an empty model elsewhere (a replica fed by a NATS
backplane, say) reproduces the change, so messages always carry the full new
record rather than a hint to go and look.

Message shapes (every message has ``type`` and ``op``)::

    meshery.k8s_contexts          {type: k8s_context, op: upsert, context: K8sContext}
                                  {type: k8s_context, op: delete, owner, id}
    meshery.controllers           {type: controller, op: upsert,
                                   item: MesheryControllersStatusListItem}
                                  {type: controller, op: delete, connectionID}
    meshery.cluster_resources     {type: cluster_object, op: upsert|delete,
                                   object: {cluster_id, kind, namespace, name}}
                                  {type: cluster_object, op: clear, cluster_id}
    meshery.configuration.<user>  {type: pattern|filter, op: upsert, pattern|filter: record}
                                  {type: pattern|filter, op: delete, user_id, id}
    meshery.perf_profiles         {type: perf_profile, op: upsert, profile: PerfProfile}
                                  {type: perf_profile, op: delete, user_id, id}
    meshery.perf_results.<prof>   {type: perf_result, op: append, seq, result: MesheryResult}
    meshery.meshmodel             {type: meshmodel, op: register,
                                   entry: {entity, model, version, name}}
    meshery.events.<user>         {type: event, op: append, event: Event}

Committing publishes first and applies second: a broker that refuses the
message (a NATS broker whose bounded queue is full during an outage) leaves
the model untouched, so no replica ever holds a change the others never get.
With a replicated bus (:mod:`._replication`) the bus takes over committing.

Owned records (K8s contexts, designs, filters, performance profiles and
their results) live in their owner's namespace, keyed ``(owner, id)``: an id
names the caller's own record or nothing, so another user's record always
looks missing (ids cannot be probed), and two users may use the same id (two
Meshery users connecting one cluster get the same context id). Applying a
change is then still a blind write, which replication needs; ownership holds
on every replica by construction, not by a check that could race. Lookups
made for a user take that user; ``owner=None`` means every owner (an
operator's view). Shared cluster state (controllers, cluster objects,
MeshModel) has no owner. Storage bounds are checked before committing
(:mod:`._quota`).
"""

from __future__ import annotations

import uuid
from collections import Counter, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Protocol

import orjson
import trio

from ...brokers._broker import Broker, MemoryBroker
from . import _quota as quota
from . import _records as records
from . import _topics as topics
from ._quota import StorageLimits
from ._timefmt import utc_now

Message = dict[str, Any]
#: An owned record's key: (owner, id).
Key = tuple[str, str]
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
        limits: StorageLimits | None = None,
    ) -> None:
        self.broker: Broker = broker if broker is not None else MemoryBroker()
        self.now = now
        self.new_id = new_id
        #: This Meshery instance (``Event.systemID``, ``meshery_instance_id``).
        self.system_id = system_id or new_id()
        self._event_history = event_history
        self._results_per_profile = results_per_profile
        #: The storage bounds, and what each user stores against them.
        self.limits = limits if limits is not None else StorageLimits()
        self.usage = quota.Usage()
        #: Users the model knows of (the simulator sends them events).
        self.users: set[str] = set()
        self._contexts: dict[Key, dict[str, Any]] = {}
        self._controllers: dict[tuple[str, str], dict[str, Any]] = {}
        self._objects: dict[str, dict[tuple[str, str, str], dict[str, str]]] = {}
        self._patterns: dict[Key, dict[str, Any]] = {}
        self._filters: dict[Key, dict[str, Any]] = {}
        self._profiles: dict[Key, dict[str, Any]] = {}
        self._results: dict[Key, deque[tuple[int, dict[str, Any]]]] = {}
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

    def _store(
        self, store: dict[Key, dict[str, Any]], kind: str, owner: str, record: dict[str, Any]
    ) -> None:
        """Put *record* under ``(owner, id)``, keeping the usage accounting in step."""
        key = (str(owner), str(record["id"]))
        self.usage.replace(key[0], kind, store.get(key), record)
        store[key] = record

    def _unstore(
        self, store: dict[Key, dict[str, Any]], kind: str, owner: str | None, item_id: Any
    ) -> list[Key]:
        """Remove *owner*'s record (every owner's when None); the keys removed."""
        keys = _keys(store, owner, item_id)
        for key in keys:
            self.usage.replace(key[0], kind, store.pop(key), None)
        return keys

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

    def _apply_pattern(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._store(self._patterns, "design", msg["pattern"]["user_id"], msg["pattern"])
        else:
            self._unstore(self._patterns, "design", msg.get("user_id"), msg["id"])

    def _apply_filter(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._store(self._filters, "filter", msg["filter"]["user_id"], msg["filter"])
        else:
            self._unstore(self._filters, "filter", msg.get("user_id"), msg["id"])

    def _apply_perf_profile(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._store(self._profiles, "profile", msg["profile"]["user_id"], msg["profile"])
            return
        for key in self._unstore(self._profiles, "profile", msg.get("user_id"), msg["id"]):
            for _, result in self._results.pop(key, ()):
                self.usage.replace(key[0], "result", result, None)

    def _apply_perf_result(self, _op: str, msg: Message) -> None:
        result = msg["result"]
        key = (str(result["user_id"]), str(result["performance_profile"]))
        runs = self._results.setdefault(key, deque())
        runs.append((msg["seq"], result))
        self.usage.replace(key[0], "result", None, result)
        while len(runs) > self._results_per_profile:
            self.usage.replace(key[0], "result", runs.popleft()[1], None)
        self._seq = max(self._seq, msg["seq"])

    def _apply_meshmodel(self, _op: str, msg: Message) -> None:
        entry = msg["entry"]
        self._meshmodel.add((entry["entity"], entry["model"], entry["version"], entry["name"]))

    def _apply_event(self, _op: str, msg: Message) -> None:
        """Append to the user's history, then drop its oldest events beyond the
        count and byte bounds (a log: an event is never refused for room)."""
        event = msg["event"]
        user = event["userID"]
        self.users.add(user)
        history = self._events.setdefault(user, deque())
        history.append(event)
        self.usage.replace(user, "event", None, event)
        room = self.limits.event_bytes
        while history and (
            len(history) > self._event_history
            or (room is not None and self.usage.bytes(user, "event") > room)
        ):
            self.usage.replace(user, "event", history.popleft(), None)

    # ---------------------------------------------------------------- limits

    def _check_object(self, kind: str, record: Any) -> int:
        """Refuse a record larger than ``limits.object_bytes``; its size."""
        size = quota.size_of(record)
        self.limits.check_object(kind, size)
        return size

    def _admit(
        self,
        owner: str,
        kind: str,
        record: Mapping[str, Any],
        previous: Mapping[str, Any] | None,
        *,
        freed: int = 0,
    ) -> None:
        """Refuse, before anything is committed, a record that breaks a storage
        limit: its size, the owner's count of that kind, the owner's bytes.
        *freed* is what the change removes besides *previous* (evicted results)."""
        size = self._check_object(kind, record)
        if previous is None and kind in quota.COUNTED:
            self.limits.check_count(kind, self.usage.count(owner, kind))
        growth = size - (quota.size_of(previous) if previous is not None else 0) - freed
        if growth > 0:  # shrinking is always allowed, even over a lowered limit
            self.limits.check_user_bytes(kind, self.usage.stored_bytes(owner) + growth)

    def stored_bytes(self, user_id: str) -> int:
        """What *user_id* stores against ``limits.user_bytes`` (JSON bytes)."""
        return self.usage.stored_bytes(user_id)

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
        self._check_object("event", event)
        self._commit(topics.events(user_id), {"type": "event", "op": "append", "event": event})
        return event

    def events_of(self, user_id: str) -> list[dict[str, Any]]:
        """The user's retained event history, oldest first."""
        return list(self._events.get(user_id, ()))

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

    def delete_context(self, context_id: str, owner: str | None = None) -> bool:
        """Remove *owner*'s context (every owner's when None), and its connection's
        controllers and cluster's objects once no context, anyone's, refers to them."""
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
            if cluster in self._objects and not any(
                c["kubernetes_server_id"] == cluster for c in rest
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
        when None) are accepted too. Cluster ids themselves are shared state."""
        clusters = set()
        for value in ids:
            context = self.context(value, owner)
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

    def save_pattern(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's designs."""
        previous = _mine(self._patterns, user_id, fields.get("id"))
        record = records.pattern(
            fields,
            previous=previous,
            pattern_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._admit(user_id, "design", record, previous)
        message = {"type": "pattern", "op": "upsert", "pattern": record}
        self._commit(topics.configuration(user_id), message)
        return record

    def delete_pattern(self, user_id: str, pattern_id: str) -> bool:
        if _mine(self._patterns, user_id, pattern_id) is None:
            return False
        message = {"type": "pattern", "op": "delete", "user_id": user_id, "id": pattern_id}
        self._commit(topics.configuration(user_id), message)
        return True

    def patterns_of(self, user_id: str | None) -> list[dict[str, Any]]:
        """The user's designs (everyone's when *user_id* is None)."""
        return [p for p in self._patterns.values() if user_id in (None, p["user_id"])]

    def save_filter(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's filters."""
        previous = _mine(self._filters, user_id, fields.get("id"))
        record = records.filter_(
            fields,
            previous=previous,
            filter_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._admit(user_id, "filter", record, previous)
        self._commit(
            topics.configuration(user_id), {"type": "filter", "op": "upsert", "filter": record}
        )
        return record

    def delete_filter(self, user_id: str, filter_id: str) -> bool:
        if _mine(self._filters, user_id, filter_id) is None:
            return False
        message = {"type": "filter", "op": "delete", "user_id": user_id, "id": filter_id}
        self._commit(topics.configuration(user_id), message)
        return True

    def filters_of(self, user_id: str | None) -> list[dict[str, Any]]:
        """The user's filters (everyone's when *user_id* is None)."""
        return [f for f in self._filters.values() if user_id in (None, f["user_id"])]

    # ------------------------------------------------------------ performance

    def save_profile(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's performance profiles."""
        previous = _mine(self._profiles, user_id, fields.get("id"))
        profile = records.perf_profile(
            fields,
            previous=previous,
            profile_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._admit(user_id, "profile", profile, previous)
        self._put_profile(profile)
        return profile

    def _put_profile(self, profile: dict[str, Any]) -> None:
        message = {"type": "perf_profile", "op": "upsert", "profile": profile}
        self._commit(topics.PERF_PROFILES, message)

    def delete_profile(self, user_id: str, profile_id: str) -> bool:
        """Delete one of the user's profiles and its results."""
        if _mine(self._profiles, user_id, profile_id) is None:
            return False
        message = {"type": "perf_profile", "op": "delete", "user_id": user_id, "id": profile_id}
        self._commit(topics.PERF_PROFILES, message)
        return True

    def profile(self, profile_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """*owner*'s profile with this id (any owner's when None)."""
        keys = _keys(self._profiles, owner, profile_id)
        return self._profiles[keys[0]] if keys else None

    def profiles(self, owner: str | None = None) -> list[dict[str, Any]]:
        """*owner*'s profiles (everyone's when None)."""
        return [p for (who, _), p in self._profiles.items() if owner in (None, who)]

    def record_result(
        self, user_id: str, profile_id: str, fields: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Store one load-test result of one of the user's profiles; the profile's
        run count and last run follow."""
        profile = _mine(self._profiles, user_id, profile_id)
        if profile is None:
            raise ValueError(f"no performance profile {profile_id}")
        now = self.now()
        result = records.perf_result(
            fields, result_id=self.new_id(), profile=profile, user_id=user_id, now=now
        )
        updated = {
            **profile,
            "total_results": (profile.get("total_results") or 0) + 1,
            "last_run": now,
            "updated_at": now,
        }
        runs = self._results.get((user_id, str(profile_id)))
        full = runs is not None and len(runs) >= self._results_per_profile
        evicted = quota.size_of(runs[0][1]) if runs and full else 0
        grown = quota.size_of(updated) - quota.size_of(profile)
        self._admit(user_id, "result", result, None, freed=evicted - grown)
        self._seq += 1
        message = {"type": "perf_result", "op": "append", "seq": self._seq, "result": result}
        self._commit(topics.perf_results(profile_id), message)
        self._put_profile(updated)
        return result

    def results_of(
        self, profile_id: str, upto_id: str | None = None, *, owner: str | None = None
    ) -> list[dict[str, Any]]:
        """*owner*'s profile's retained results (of every owner's profile with this id
        when None), oldest first; with *upto_id*, only those up to and including
        that result (none once it is no longer retained).

        Results are kept in the order they were applied, which is the shared
        log's order on every replica, so "as of this result" means the same
        everywhere (a per-origin sequence number would not).
        """
        runs = [
            result
            for key in _keys(self._results, owner, profile_id)
            for _, result in self._results[key]
        ]
        if upto_id is None:
            return runs
        for index, result in enumerate(runs):
            if result["meshery_id"] == upto_id:
                return runs[: index + 1]
        return []

    def all_results(self, owner: str | None = None) -> list[dict[str, Any]]:
        """*owner*'s results (everyone's when None)."""
        return [
            result
            for (who, _), runs in self._results.items()
            if owner in (None, who)
            for _, result in runs
        ]

    def result(self, result_id: str, owner: str | None = None) -> dict[str, Any] | None:
        """*owner*'s result with this id (any owner's when None)."""
        for result in self.all_results(owner):
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

    # ------------------------------------------------------------- snapshots

    def state_messages(self) -> list[Message]:
        """Messages that rebuild this model's whole state when applied to an empty
        one: what a snapshot of a replicated model holds (see ._snapshots)."""
        out: list[Message] = []
        upserts: list[tuple[str, str, Iterable[dict[str, Any]]]] = [
            ("k8s_context", "context", self._contexts.values()),
            ("controller", "item", self._controllers.values()),
            ("cluster_object", "object", (o for c in self._objects.values() for o in c.values())),
            ("pattern", "pattern", self._patterns.values()),
            ("filter", "filter", self._filters.values()),
            ("perf_profile", "profile", self._profiles.values()),
        ]
        for kind, field, current in upserts:
            out += [{"type": kind, "op": "upsert", field: record} for record in current]
        out += [
            {"type": "perf_result", "op": "append", "seq": seq, "result": result}
            for runs in self._results.values()
            for seq, result in runs
        ]
        fields = ("entity", "model", "version", "name")
        out += [
            {"type": "meshmodel", "op": "register", "entry": dict(zip(fields, entry, strict=True))}
            for entry in sorted(self._meshmodel)
        ]
        out += [
            {"type": "event", "op": "append", "event": event}
            for history in self._events.values()
            for event in history
        ]
        return out


def _keys(store: Mapping[Key, Any], owner: str | None, item_id: Any) -> list[Key]:
    """The keys of *owner*'s record with this id (of every owner's when None)."""
    if owner is not None:
        key = (str(owner), str(item_id))
        return [key] if key in store else []
    return [key for key in store if key[1] == str(item_id)]


def _mine(store: Mapping[Key, dict[str, Any]], user_id: str, item_id: Any) -> dict[str, Any] | None:
    """The user's own record with this id: another user's is never theirs to see."""
    return None if item_id is None else store.get((str(user_id), str(item_id)))
