"""A cluster that comes alive: the activity behind every Meshery subscription.

The simulator is a discrete-event schedule run by one Trio task: each step is
a plain function that changes the model and may schedule more steps. One
task and one seeded ``random.Random`` make a run reproducible: the same seed
yields the same changes in the same order (wall-clock timestamps aside),
whatever else the Trio scheduler is doing. ``rate`` scales speed: at 2.0 the
same story plays out twice as fast.

A restarted simulator continues the story told before (the model loaded
it from the database, or a replica caught up with the shared log): it
recognises its clusters, profile, design and filter by name and owner and
reuses them instead of creating them again; live state (controllers,
cluster objects, pods) is reported afresh, as a real cluster would. It
draws the same random numbers either way, so a seeded story stays the same.

When the model is replicated, run the simulator on ONE process only: each
run tells its own story. A step whose change the shared broker refuses (its
bounded queue is full during an outage) is logged, counted and skipped; the
story goes on with the next step. So is a step over a storage limit (the
owner's designs filled its quota, say).

Whose objects: the clusters are discovered, so every known user gets its own
K8s context for each (the same context id in each user's namespace, as
Meshery registers a discovered cluster for each user); events go to every
known user. Designs, filters, performance profiles and their results are
personal artifacts in Meshery, so they are the owner's (the local user: in
token mode, whoever's token maps to its id), never shared.

One module (over 400 lines) on purpose: the steps schedule one another, so
the story reads top to bottom in one place.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from ._model._model import Model
from ._model._quota import StorageLimitExceeded
from ._model._records import SEVERITIES
from ._replication._replication import BrokerUnavailable

log = logging.getLogger("meshsub_trio.meshery.simulator")

Step = Callable[[], object]  # what a step returns is ignored

#: Controller rollout: (delay after the cluster appears, controller, status, version).
_ROLLOUT = (
    (0.2, "OPERATOR", "DEPLOYING", ""),
    (0.4, "BROKER", "DEPLOYING", ""),
    (0.6, "MESHSYNC", "DEPLOYING", ""),
    (1.0, "OPERATOR", "DEPLOYED", "v0.8.3"),
    (1.2, "BROKER", "DEPLOYED", "2.10.18"),
    (1.4, "MESHSYNC", "DEPLOYED", "v0.8.2"),
    (1.8, "OPERATOR", "RUNNING", "v0.8.3"),
    (2.0, "BROKER", "CONNECTED", "2.10.18"),
    (2.2, "MESHSYNC", "RUNNING", "v0.8.2"),
)

#: Cluster-scoped objects every simulated cluster has.
_CLUSTER_SCOPED = (
    ("ClusterRole", ("admin", "edit", "view", "meshery-operator")),
    ("CustomResourceDefinition", ("brokers.meshery.io", "meshsyncs.meshery.io")),
    ("StorageClass", ("standard",)),
)

#: Applications per namespace: (namespace, deployment, replicas).
_APPS = (
    ("kube-system", "coredns", 2),
    ("meshery", "meshery", 1),
    ("meshery", "meshery-operator", 1),
    ("meshery", "meshsync", 1),
    ("istio-system", "istiod", 1),
    ("default", "productpage", 1),
    ("default", "reviews", 3),
    ("default", "ratings", 1),
    ("default", "details", 1),
)

_MESHMODELS = (
    ("components", "kubernetes", "v1.29.0", "Deployment"),
    ("components", "kubernetes", "v1.30.0", "Deployment"),
    ("components", "kubernetes", "v1.30.0", "Service"),
    ("components", "istio-base", "1.22.0", "VirtualService"),
    ("relationships", "kubernetes", "v1.30.0", "hierarchical-parent"),
    ("components", "cert-manager", "v1.14.5", "Certificate"),
    ("relationships", "istio-base", "1.22.0", "edge-network"),
    ("components", "istio-base", "1.23.1", "Gateway"),
    ("relationships", "kubernetes", "v1.29.0", "edge-binding"),
    ("components", "prometheus", "2.52.0", "ServiceMonitor"),
    ("relationships", "cert-manager", "v1.14.5", "edge-reference"),
    ("components", "linkerd", "2.15.0", "ServiceProfile"),
)


@dataclass
class _Cluster:
    context_id: str
    cluster_id: str
    connection_id: str
    name: str
    namespaces: tuple[str, ...]
    nodes: tuple[str, ...]
    pods: dict[tuple[str, str], list[str]] = field(default_factory=dict)


_CLUSTERS = (
    ("kind-meshery", "https://127.0.0.1:6443", "v1.30.2", "in_cluster", 0.0),
    ("minikube", "https://192.168.49.2:8443", "v1.29.4", "out_cluster", 8.0),
)


class Simulator:
    """Runs the schedule against *model* on behalf of the local user *owner*."""

    def __init__(
        self, model: Model, *, owner: str, rate: float = 1.0, seed: int | None = None
    ) -> None:
        if not rate > 0:
            raise ValueError("rate must be positive")
        self.model = model
        self.owner = owner
        self.rate = rate
        self._rng = random.Random(seed)
        self._queue: list[tuple[float, int, Step]] = []
        self._order = itertools.count()
        #: Simulated seconds since the start (before dividing by ``rate``).
        self.clock = 0.0
        self.steps_run = 0
        self._clusters: list[_Cluster] = []
        self._profile_id: str | None = None
        self._pattern_id: str | None = None
        self._severity = itertools.cycle(SEVERITIES[::-1])
        self._meshmodels = iter(_MESHMODELS)
        self._started = False
        self._load_tests = 0
        self._running = False
        #: Steps skipped because the broker refused their change.
        self.steps_refused = 0

    # ------------------------------------------------------------- scheduling

    def _at(self, delay: float, step: Step) -> None:
        heapq.heappush(self._queue, (self.clock + delay, next(self._order), step))

    def _every(self, first: float, period: float, step: Step) -> None:
        """Run *step* after *first* s, then about every *period* s (jittered)."""

        def tick() -> None:
            step()
            self._at(period * self._rng.uniform(0.7, 1.3), tick)

        self._at(first, tick)

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        model = self.model
        model.add_user(self.owner)
        for name, server, version, kind, delay in _CLUSTERS:
            spec = (name, server, version, kind)
            self._at(delay, functools.partial(self._cluster_up, *spec))
        self._at(0.1, lambda: self._register_meshmodels(5))
        # At once: a client asking right after start finds a profile to use.
        self._at(0.0, self._create_profile)
        self._at(0.7, self._save_design)
        self._at(1.5, self._save_filter)
        self._every(1.0, 1.5, self._emit_event)
        self._every(2.5, 1.0, self._churn)
        self._every(3.0, 5.0, self._load_test)
        self._every(4.0, 4.0, lambda: self._register_meshmodels(1))
        self._every(20.0, 20.0, self._save_design)

    def advance(self, seconds: float) -> int:
        """Run every step due in the next *seconds* simulated seconds, without Trio.

        Returns how many steps ran. Lets tests check the story deterministically.
        """
        self._start()
        until = self.clock + seconds
        ran = 0
        while self._queue and self._queue[0][0] <= until:
            due, _, step = heapq.heappop(self._queue)
            self.clock = due
            step()
            ran += 1
            self.steps_run += 1
        self.clock = until
        return ran

    @property
    def running(self) -> bool:
        return self._running

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the schedule in real (or Trio-mocked) time until cancelled.

        Steps due at once (the first cluster, the first profile) run before
        ``task_status.started()``, so a server that awaits ``nursery.start``
        serves them from its first request. Running again later resumes where
        the story stopped; running twice at once is refused, since both runs
        would consume one schedule.
        """
        if self._running:
            raise RuntimeError("this simulator is already running")
        self._running = True
        try:
            self._start()
            origin = trio.current_time() - self.clock / self.rate
            while self._queue and self._queue[0][0] <= self.clock:
                _, _, step = heapq.heappop(self._queue)
                self._step(step)
            task_status.started()
            while self._queue:
                due, _, step = heapq.heappop(self._queue)
                await trio.sleep_until(origin + due / self.rate)
                self.clock = due
                self._step(step)
        finally:
            self._running = False

    def _step(self, step: Callable[[], object]) -> None:
        try:
            step()
        except (BrokerUnavailable, StorageLimitExceeded) as error:
            self.steps_refused += 1
            log.warning("simulator step skipped: %s", error)
        self.steps_run += 1

    # ------------------------------------------------------------------ steps

    def _id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _suffix(self, length: int) -> str:
        return "".join(self._rng.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(length))

    def _known(self, records: list[dict[str, Any]], name: str, **fields: str) -> dict[str, Any]:
        """The owner's record named *name* (and matching *fields*) from an earlier run, or {}."""
        for record in records:
            owner = record.get("user_id", record.get("owner"))
            matches = all(record.get(key) == value for key, value in fields.items())
            if record.get("name") == name and owner == self.owner and matches:
                return record
        return {}

    def _cluster_up(self, name: str, server: str, version: str, kind: str) -> None:
        context_id, cluster_id, connection_id = self._id(), self._id(), self._id()
        known = self._known(self.model.contexts(), name, server=server)
        if known:
            context_id = known["id"]
            cluster_id = known["kubernetes_server_id"]
            connection_id = known["connection_id"]
        namespaces = ("default", "kube-system", "meshery", "istio-system")
        cluster = _Cluster(
            context_id=context_id,
            cluster_id=cluster_id,
            connection_id=connection_id,
            name=name,
            namespaces=namespaces,
            nodes=tuple(f"{name}-node-{i}" for i in range(1 + len(self._clusters))),
        )
        self._clusters.append(cluster)
        for user in sorted(self.model.users | {self.owner}):  # see the module doc
            self.model.upsert_context(
                {
                    "id": context_id,
                    "name": name,
                    "server": server,
                    "version": version,
                    "deployment_type": kind,
                    "kubernetes_server_id": cluster.cluster_id,
                    "connection_id": cluster.connection_id,
                },
                owner=user,
            )
        self._event("informational", f"Kubernetes context {name} connected", "connection")
        for delay, controller, status, ctl_version in _ROLLOUT:
            self._at(
                delay,
                functools.partial(
                    self.model.set_controller_status,
                    cluster.connection_id,
                    controller,
                    status,
                    ctl_version,
                ),
            )
        self._at(2.3, lambda: self._discover(cluster))

    def _discover(self, cluster: _Cluster) -> None:
        """MeshSync's first sync: namespaces, nodes, cluster-scoped objects."""
        add = self.model.add_object
        for namespace in cluster.namespaces:
            add(cluster.cluster_id, "Namespace", "", namespace)
            add(cluster.cluster_id, "ServiceAccount", namespace, "default")
            add(cluster.cluster_id, "ConfigMap", namespace, "kube-root-ca.crt")
        for node in cluster.nodes:
            add(cluster.cluster_id, "Node", "", node)
        for kind, names in _CLUSTER_SCOPED:
            for name in names:
                add(cluster.cluster_id, kind, "", name)
        for index, (namespace, app, replicas) in enumerate(_APPS):
            deploy = functools.partial(self._deploy, cluster, namespace, app, replicas)
            self._at(0.3 * (index + 1), deploy)

    def _deploy(self, cluster: _Cluster, namespace: str, app: str, replicas: int) -> None:
        add = self.model.add_object
        add(cluster.cluster_id, "Deployment", namespace, app)
        replica_set = f"{app}-{self._suffix(10)}"
        add(cluster.cluster_id, "ReplicaSet", namespace, replica_set)
        add(cluster.cluster_id, "Service", namespace, app)
        cluster.pods[(namespace, app)] = []
        for _ in range(replicas):
            self._add_pod(cluster, namespace, app, replica_set)

    def _add_pod(self, cluster: _Cluster, namespace: str, app: str, prefix: str = "") -> None:
        pod = f"{prefix or app}-{self._suffix(5)}"
        cluster.pods[(namespace, app)].append(pod)
        self.model.add_object(cluster.cluster_id, "Pod", namespace, pod)

    def _churn(self) -> None:
        """A pod restarts, or a deployment scales by one (1..4 replicas)."""
        running = [(c, key) for c in self._clusters for key in sorted(c.pods)]
        if not running:
            return
        cluster, (namespace, app) = self._rng.choice(running)
        pods = cluster.pods[(namespace, app)]
        action = self._rng.choice(("restart", "scale-up", "scale-down"))
        if action != "scale-up" and pods and (action == "restart" or len(pods) > 1):
            gone = pods.pop(self._rng.randrange(len(pods)))
            self.model.delete_object(cluster.cluster_id, "Pod", namespace, gone)
            if action == "scale-down":
                return
        if len(pods) < 4:
            self._add_pod(cluster, namespace, app)

    def _event(self, severity: str, description: str, category: str) -> None:
        users = sorted(self.model.users | {self.owner})
        for user_id in users:
            self.model.publish_event(
                user_id,
                {
                    "severity": severity,
                    "description": description,
                    "category": category,
                    "action": "update",
                    "status": "unread",
                    "actedUpon": self._clusters[0].context_id if self._clusters else None,
                    "metadata": {"simulated": True, "clock": round(self.clock, 3)},
                },
            )

    def _emit_event(self) -> None:
        """Cycle through every severity, so a subscriber sees each within ~10 s."""
        severity = next(self._severity)
        cluster = self._clusters[0].name if self._clusters else "the cluster"
        text = {
            "debug": f"MeshSync resynced {cluster} in {self._rng.randint(40, 900)} ms",
            "informational": f"MeshSync is watching {cluster}",
            "warning": f"Pod in {cluster} restarted {self._rng.randint(2, 9)} times",
            "error": f"Failed to pull an image in {cluster}",
            "critical": f"A node of {cluster} is NotReady",
            "alert": f"A certificate in {cluster} expires in 2 days",
            "emergency": f"The API server of {cluster} stopped answering",
        }[severity]
        self._event(severity, text, "kubernetes")

    def _register_meshmodels(self, count: int) -> None:
        for entity, model, version, name in itertools.islice(self._meshmodels, count):
            self.model.register_meshmodel(entity, model, version, name)

    def _create_profile(self) -> None:
        self._profile_id = self._id()
        known = self._known(self.model.profiles(), "bookinfo productpage soak")
        if known:
            self._profile_id = known["id"]
            self._load_tests = known.get("total_results") or 0
            return
        self.model.save_profile(
            self.owner,
            {
                "id": self._profile_id,
                "name": "bookinfo productpage soak",
                "endpoints": ["http://productpage.default.svc:9080/productpage"],
                "concurrent_request": 8,
                "qps": 50,
                "duration": "30s",
                "load_generators": ["fortio"],
                "service_mesh": "istio",
            },
        )

    def _load_test(self) -> None:
        if self._profile_id is None:
            return
        self._load_tests += 1
        p50 = round(self._rng.uniform(2.0, 9.0), 3)
        self.model.record_result(
            self.owner,
            self._profile_id,
            {
                "name": f"soak run {self._load_tests}",
                "mesh": "istio",
                "runner_results": {
                    "RunType": "HTTP",
                    "RequestedQPS": "50",
                    "ActualQPS": round(self._rng.uniform(45.0, 50.0), 2),
                    "NumThreads": 8,
                    "DurationHistogram": {
                        "Count": self._rng.randint(1400, 1500),
                        "Percentiles": [
                            {"Percentile": 50, "Value": p50 / 1000},
                            {"Percentile": 99, "Value": round(p50 * 3.1, 3) / 1000},
                        ],
                    },
                },
            },
        )
        self._event("informational", "Load test of bookinfo productpage finished", "performance")

    def _save_design(self) -> None:
        replicas = self._rng.randint(1, 4)
        fresh = self._id() if self._pattern_id is None else None
        known = self._known(self.model.patterns_of(self.owner), "bookinfo")
        self._pattern_id = self._pattern_id or known.get("id") or fresh
        self.model.save_pattern(
            self.owner,
            {
                "id": self._pattern_id,
                "name": "bookinfo",
                "pattern_file": (
                    "name: bookinfo\nservices:\n  reviews:\n    type: Deployment\n"
                    f"    settings:\n      replicas: {replicas}\n"
                ),
                "type": "Deployment",
            },
        )

    def _save_filter(self) -> None:
        filter_id = self._id()
        if self._known(self.model.filters_of(self.owner), "http-auth"):
            return
        self.model.save_filter(
            self.owner,
            {
                "id": filter_id,
                "name": "http-auth",
                "filter_file": "(module)",
                "filter_resource": "wasm",
            },
        )
