"""Wiring: schema, model, broker, auth, resolvers, streamers and the simulator."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio

from .._app import App
from .._broker import Broker, MemoryBroker
from ._auth import LOCAL_USER, Authenticator, TokenSource, User
from ._model import Model
from ._replication import ReplicatedBus
from ._resolvers import make_resolvers
from ._routes import make_routes
from ._schema import build_meshery_schema
from ._simulator import Simulator
from ._streamers import make_streamers


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

    @property
    def auth_mode(self) -> str:
        return self.authenticator.mode


def shares_bus(broker: Any) -> bool:
    """Whether *broker* is shared by several processes (a log broker that is not
    in-process), so that the model must be replicated over it."""
    if isinstance(broker, MemoryBroker | ReplicatedBus):
        return False
    return hasattr(broker, "subscribe_log") and hasattr(broker, "wait_state_change")


def _seeded_ids(seed: int) -> Callable[[], str]:
    rng = random.Random(f"meshery-ids:{seed}")
    return lambda: str(uuid.UUID(int=rng.getrandbits(128), version=4))


def create_app(
    *,
    broker: Broker | None = None,
    simulator: bool = True,
    rate: float = 1.0,
    seed: int | None = None,
    tokens: TokenSource | None = None,
    local_user: User | str = LOCAL_USER,
) -> MesheryApp:
    """Build Meshery's real-time API as an App. Cheap: nothing runs until lifespan.

    * ``broker``: where model changes are published (default: a new MemoryBroker).
      A broker shared by several processes (a connected ``NatsBroker``) is
      replicated over (:func:`shares_bus`; see :mod:`._replication`):
      every process applies every change in the shared log's order, and the
      app's lifespan runs the replicator and waits until this process caught
      up with the log before serving. Run the simulator on one process only.
    * ``simulator``/``rate``/``seed``: run the simulated cluster while served,
      ``rate`` times as fast; a seed makes its story (and generated ids) repeatable.
    * ``tokens``: token -> user id (or ``{"id", "user_name"}``), as a dict or a
      JSON file path; turns on token mode. Without it every caller is
      ``local_user`` (Meshery's local provider), which is only safe on loopback.

    Besides GraphQL it serves the plain HTTP routes of :mod:`._routes`
    (``/api/system/events``, ``/api/meshsub/publish``). Add user ids to the
    returned app's ``event_publishers`` to let those (service) users publish
    events to other users; everyone else publishes only to itself.
    """
    user = local_user if isinstance(local_user, User) else User(local_user, "meshery", "Local")
    authenticator = Authenticator(tokens, local_user=user)
    chosen_broker = broker if broker is not None else MemoryBroker()
    bus = ReplicatedBus(chosen_broker) if shares_bus(chosen_broker) else None
    # Seeded ids repeat on every process with that seed: with several processes
    # only the one telling the (seeded) story uses them.
    seeded = seed is not None and (bus is None or simulator)
    model = Model(bus or chosen_broker, **({"new_id": _seeded_ids(seed)} if seeded else {}))
    if bus is not None:
        bus.attach(model)
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
            if sim is None or driving:
                yield
                return
            driving = True
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(sim.run)
                    try:
                        yield
                    finally:
                        nursery.cancel_scope.cancel()
            finally:
                driving = False

    schema = build_meshery_schema()
    publishers: set[str] = set()
    app = MesheryApp(
        schema,
        resolvers=make_resolvers(model),
        streamers=make_streamers(model),
        authenticate=authenticator,
        lifespan=lifespan,
        http_routes=make_routes(model, authenticator, schema, publishers=publishers),
    )
    app.model = model
    app.broker = model.broker
    app.replication = bus
    app.authenticator = authenticator
    app.simulator = sim
    app.event_publishers = publishers
    return app
