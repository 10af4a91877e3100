"""The in-memory Meshery model: plain Python, no I/O, no Trio.

Every change is expressed as a JSON-ready message, applied to the model's own
state by :meth:`Model.apply` and then published on the message's topic. The
same message applied to an empty model elsewhere (a replica fed by a NATS
backplane, say) reproduces the change, so messages always carry the full new
record rather than a hint to go and look.

Message shapes (every message has ``type`` and ``op``; ``<user>`` and ``<prof>``
in topic names are ids escaped into one token each, :mod:`._tokens`)::

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
    meshery.perf_results.<user>.<prof>  {type: perf_result, op: append, seq, result: MesheryResult}
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

One module per record family (:mod:`._clusters`, :mod:`._designs`,
:mod:`._performance`, :mod:`._events`) over a shared core (:mod:`._core`);
:class:`Model` composes them, so callers still see one object. Taking a
replica's own change back reads and puts back records through
:mod:`._restore`, never the stores themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._clusters import ClusterRecords
from ._core import Committer, Key, Message
from ._designs import DesignRecords
from ._events import EventRecords
from ._performance import PerformanceRecords
from ._restore import RestorableRecords

__all__ = ["Committer", "Key", "Message", "Model"]


class Model(ClusterRecords, DesignRecords, PerformanceRecords, EventRecords, RestorableRecords):
    """Meshery's state: clusters, controllers, designs, perf data, MeshModel, events.

    All methods are synchronous and never block; subscribers learn about
    changes only through the broker. ``now`` and ``new_id`` are injectable so
    tests and the seeded simulator are reproducible.
    """

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
