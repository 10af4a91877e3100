"""Wiring: schema, model, broker, auth, resolvers, streamers and the simulator."""

from __future__ import annotations

import os
import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeGuard

import trio
from prometheus_client.core import Metric

from .._app import App
from ..brokers._broker import Broker, ConnectionState, LogBroker, MemoryBroker
from ._api._resolvers import make_resolvers
from ._api._schema import build_meshery_schema
from ._api._streamers import make_streamers
from ._auth import LOCAL_USER, Authenticator, TokenSource, User
from ._http._routes import make_routes
from ._http._sse_routes import SseOptions, make_sse_routes
from ._model._model import Model
from ._model._quota import StorageLimits
from ._replication._log_metrics import resume_log_families
from ._replication._replication import ReplicatedBus
from ._replication._resume_log import ResumeLogBroker
from ._replication._snapshots import snapshots_for
from ._simulator import Simulator
from ._storage._datadir import MEMORY
from ._storage._durable import attach, drain, open_store
from ._storage._store import Store
from ._storage._tables import Retention

if TYPE_CHECKING:
    from ..brokers._nats_log import LogStream

#: Meshery's GraphQL endpoint (HTTP and WebSocket) and its playground page,
#: where Meshery's UI and clients look for them.
GRAPHQL_PATH = "/api/system/graphql/query"
PLAYGROUND_PATH = "/api/system/graphql/playground"
#: Meshery server's port: what ``meshsub-trio serve`` binds when it serves this app.
DEFAULT_PORT = 9081
#: The JetStream stream the model is replicated over (``serve --broker nats://``):
#: every topic the model publishes is under ``meshery.`` (see ``_model/_topics.py``).
#: Deployments keep their data in it: never rename.
STREAM_NAME = "MESHERY"
STREAM_SUBJECTS = ("meshery.>",)


def log_stream(**tunables: Any) -> LogStream:
    """The :class:`LogStream` a ``NatsBroker`` shared by Meshery processes needs
    (``NatsBroker.connect(url, log=log_stream())``); *tunables* are its retention,
    storage and heartbeat. Needs the ``nats`` extra."""
    from ..brokers._nats_log import LogStream

    return LogStream(name=STREAM_NAME, subjects=STREAM_SUBJECTS, **tunables)


class MesheryApp(App):
    """An :class:`App` serving Meshery's API, with handles on what drives it.

    ``model`` is where hosts feed data from outside (the app's own HTTP
    routes call ``app.model.publish_event(user_id, {...})``); ``auth_mode``
    is ``"local"`` or ``"token"``, so a host can refuse to expose local mode
    beyond loopback.
    """

    model: Model
    broker: Broker
    #: The replication over a shared broker, or None (a single process).
    replication: ReplicatedBus | None
    authenticator: Authenticator
    simulator: Simulator | None
    #: User ids that may publish events to other users (read per request).
    event_publishers: set[str]
    #: The SSE routes' keep-alive period and ``retry:`` (read per request).
    sse: SseOptions
    #: The embedded database (``data_dir``), or None (``":memory:"``, or a shared bus).
    store: Store | None
    #: What resuming clients replay: the in-memory broker's log, or this
    #: replica's history on a shared bus (None: a broker of the host's).
    resume_log: ResumeLogBroker | None

    def metric_families(self) -> list[Metric]:
        """The app's own families for ``/metrics`` (``Metrics.add_source``)."""
        return resume_log_families(self.resume_log)

    @property
    def auth_mode(self) -> str:
        return self.authenticator.mode

    def close(self) -> None:
        """Write what is queued and close the database (releasing its lock)."""
        if self.store is not None:
            self.store.close()


def shares_bus(broker: Any) -> TypeGuard[LogBroker]:
    """Whether *broker* is shared by several processes (a log broker that is not
    in-process), so that the model must be replicated over it."""
    if isinstance(broker, MemoryBroker | ReplicatedBus):
        return False
    return hasattr(broker, "subscribe_log") and hasattr(broker, "wait_state_change")


def _check_stream(broker: Any) -> None:
    """Refuse a NATS broker whose JetStream log does not hold Meshery's topics."""
    log: Any = getattr(getattr(broker, "options", None), "log", None)
    covers = getattr(log, "covers", None)
    if callable(covers) and not all(covers(subject) for subject in STREAM_SUBJECTS):
        raise ValueError(
            f"the broker's log (stream {log.name!r} over {list(log.subjects)}) does not hold "
            f"Meshery's topics {list(STREAM_SUBJECTS)}: connect it with "
            "log=meshsub_trio.meshery.log_stream()"
        )


def _seeded_ids(seed: int, starts: int = 0) -> Callable[[], str]:
    # A server restarted on its database gets ids it never handed out before:
    # the first run's ids again would overwrite what that run created.
    rng = random.Random(f"meshery-ids:{seed}" + (f":{starts}" if starts else ""))
    return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))


def create_app(
    *,
    broker: Broker | None = None,
    simulator: bool = True,
    rate: float = 1.0,
    seed: int | None = None,
    tokens: TokenSource | None = None,
    local_user: User | str = LOCAL_USER,
    data_dir: str | os.PathLike[str] = MEMORY,
    durability: str = "full",
    limits: StorageLimits | None = None,
) -> MesheryApp:
    """Build Meshery's real-time API as an App. Nothing runs until lifespan.

    * ``broker``: where model changes are published (default: a new MemoryBroker).
      A broker shared by several processes (a connected ``NatsBroker``) is
      replicated over (:func:`shares_bus`; see :mod:`._replication`):
      every process applies every change in the shared log's order, and the
      app's lifespan runs the replicator and waits until this process caught
      up with the log before serving. Run the simulator on one process only.
      A ``NatsBroker``'s log must be Meshery's stream (``log=log_stream()``).
    * ``simulator``/``rate``/``seed``: run the simulated cluster while served,
      ``rate`` times as fast; a seed makes its story (and generated ids) repeatable.
    * ``data_dir``: a directory whose database (:mod:`._store`) keeps designs,
      filters, K8s contexts, perf profiles and results, MeshModel entries and
      events across restarts, read here (a :class:`StoreError` if it cannot
      be used); ``":memory:"`` (the default) keeps nothing. ``durability``:
      ``"full"`` (fsync every commit: survives power loss) or ``"normal"``
      (survives a crash of the process). Unused with a shared broker, whose
      log is the durable state. ``app.close()`` releases the database.
    * ``limits``: storage bounds (:class:`StorageLimits`: bytes per stored
      object, stored bytes and records per user, event history bytes per user);
      a change over one is refused (413 on REST, ``STORAGE_LIMIT`` in GraphQL)
      and stores nothing. The defaults are far above what Meshery users store.
    * ``tokens``: token -> user id (or ``{"id", "user_name"}``), as a dict or a
      JSON file path; turns on token mode. Without it every caller is
      ``local_user`` (Meshery's local provider), which is only safe on loopback.

    Besides GraphQL it serves the plain HTTP routes of :mod:`._routes`
    (``/api/system/events``, ``/api/meshsub/publish``). Add user ids to the
    returned app's ``event_publishers`` to let those (service) users publish
    events to other users; everyone else publishes only to itself. The SSE
    routes' keep-alive period and ``retry:`` are the returned app's ``sse``
    (:class:`SseOptions`, read at each request).
    """
    user = local_user if isinstance(local_user, User) else User(local_user, "meshery", "Local")
    authenticator = Authenticator(tokens, local_user=user)
    limits = limits if limits is not None else StorageLimits()
    # Our own in-memory broker bounds its resume log in bytes too (see _resume_log).
    chosen_broker = (
        broker if broker is not None else ResumeLogBroker(log_bytes=limits.resume_log_bytes)
    )
    bus = None
    if shares_bus(chosen_broker):
        _check_stream(chosen_broker)
        # Each replica keeps its own resume history, as fair as the in-memory
        # log and as big: clients resume from it, not from the stream alone.
        bus = ReplicatedBus(
            chosen_broker,
            snapshots=snapshots_for(chosen_broker),
            history_bytes=limits.resume_log_bytes,
        )
    retention = Retention()
    store = (
        open_store(data_dir, chosen_broker, durability=durability, retention=retention)
        if bus is None
        else None
    )
    # Seeded ids repeat on every process with that seed: with several processes
    # only the one telling the (seeded) story uses them.
    seeded = seed is not None and (bus is None or simulator)
    starts = store.starts if store is not None else 0
    model = Model(
        bus or chosen_broker,
        system_id=store.stored.meta.get("system_id") if store is not None else None,
        event_history=retention.events_per_user,
        results_per_profile=retention.results_per_profile,
        limits=limits,
        **({"new_id": _seeded_ids(seed, starts)} if seeded and seed is not None else {}),
    )
    if bus is not None:
        bus.attach(model)
    if store is not None:
        attach(model, store)
    if isinstance(chosen_broker, ResumeLogBroker):
        chosen_broker.adopt()  # what a database restored into its log counts too
    for known in authenticator.users():
        model.add_user(known.id)
    sim = Simulator(model, owner=user.id, rate=rate, seed=seed) if simulator else None

    driving = False

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        # Several hosts may serve one app (the module-level ``app``, say): the
        # first to enter runs the replicator and the simulator, later ones
        # share their activity.
        nonlocal driving
        async with AsyncExitStack() as stack:
            if bus is not None:
                await stack.enter_async_context(bus.running())
            if store is not None:
                stack.push_async_callback(drain, store)
            if sim is None or driving:
                yield
                return
            driving = True
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(sim.run)  # its first steps are in before we serve
                    try:
                        yield
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                driving = False

    schema = build_meshery_schema()
    publishers: set[str] = set()
    sse = SseOptions()

    def may_feed_cluster(user_id: str) -> bool:
        """Shared cluster state: any caller in local mode, service accounts in token
        mode. They also see every connection's controllers; others their own."""
        return authenticator.mode == "local" or user_id in publishers

    app = MesheryApp(
        schema,
        resolvers=make_resolvers(model, may_feed_cluster),
        streamers=make_streamers(model, may_feed_cluster),
        authenticate=authenticator,
        lifespan=lifespan,
        http_routes={
            **make_routes(
                model,
                authenticator,
                schema,
                publishers=publishers,
                may_feed_cluster=may_feed_cluster,
            ),
            **make_sse_routes(model, sse, may_feed_cluster),
        },
        graphql_paths=(GRAPHQL_PATH,),
        playground_paths=(PLAYGROUND_PATH,),
        readiness=_link_readiness(chosen_broker) if shares_bus(chosen_broker) else None,
    )
    app.model = model
    app.broker = model.broker
    app.replication = bus
    app.authenticator = authenticator
    app.simulator = sim
    app.event_publishers = publishers
    app.sse = sse
    app.store = store
    app.resume_log = (
        bus.history.log
        if bus is not None
        else chosen_broker
        if isinstance(chosen_broker, ResumeLogBroker)
        else None
    )
    return app


def _link_readiness(broker: LogBroker) -> Callable[[], str | None]:
    """Not ready while the shared broker is not connected: changes are refused
    (``BROKER_UNAVAILABLE``) and streams are paused until it is back."""

    def readiness() -> str | None:
        state = broker.state
        return None if state is ConnectionState.CONNECTED else f"broker {state.value}"

    return readiness
