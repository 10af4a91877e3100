"""Wiring: schema, model, broker, auth, resolvers, streamers and the simulator."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import trio

from .._app import App
from .._broker import Broker, MemoryBroker
from ._auth import LOCAL_USER, Authenticator, TokenSource, User
from ._model import Model
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
    authenticator: Authenticator
    simulator: Simulator | None
    #: User ids that may publish events to other users (read per request).
    event_publishers: set[str]

    @property
    def auth_mode(self) -> str:
        return self.authenticator.mode


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
    model = Model(chosen_broker, **({"new_id": _seeded_ids(seed)} if seed is not None else {}))
    for known in authenticator.users():
        model.add_user(known.id)
    sim = Simulator(model, owner=user.id, rate=rate, seed=seed) if simulator else None

    driving = False

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        # Several hosts may serve one app (the module-level ``app``, say): the
        # first to enter runs the simulator, later ones share its activity.
        nonlocal driving
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
    app.broker = chosen_broker
    app.authenticator = authenticator
    app.simulator = sim
    app.event_publishers = publishers
    return app
