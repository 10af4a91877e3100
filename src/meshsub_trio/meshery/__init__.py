"""Meshery's real-time GraphQL API, live: ``meshsub_trio.meshery:app``.

The schema is Meshery's "snapshot A" field for field, plus mutations that feed
the in-memory model; a seeded simulator makes a cluster come alive while the
app is served. Plain HTTP routes beside GraphQL let scripts publish and read
events (``/api/system/events``, Meshery-style) and apply model changes
(``/api/meshsub/publish``); see :mod:`._routes`.

Given a broker shared by several processes (``create_app(broker=nats)``),
the model is replicated over it (:class:`ReplicatedBus`): every process
serves the same state and events, and event cursors resume on any of them.
That broker's JetStream log is Meshery's stream (``log=log_stream()``:
``MESHERY`` over ``meshery.>``).

What the core does not know about Meshery lives here: its endpoint and
playground paths (``GRAPHQL_PATH``, ``PLAYGROUND_PATH``, declared by the app
itself), its port (``DEFAULT_PORT``, what ``meshsub-trio serve`` binds when
serving it) and its stream (``STREAM_NAME``, ``STREAM_SUBJECTS``).

``create_app(data_dir=DIR)`` keeps the model in an embedded SQLite database
there (``default_data_dir()`` is where ``meshsub-trio serve`` keeps it): a
restart serves the same designs, filters, contexts, profiles, results and
events, and event cursors stay valid. A database that cannot be used raises
a :class:`StoreError` at once.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._api._schema import schema_sdl
from ._app import (
    DEFAULT_PORT,
    GRAPHQL_PATH,
    PLAYGROUND_PATH,
    STREAM_NAME,
    STREAM_SUBJECTS,
    MesheryApp,
    create_app,
    log_stream,
)
from ._auth import LOCAL_USER, LOCAL_USER_ID, Authenticator, User
from ._model import _topics as topics
from ._model._model import Model
from ._model._paging import BadUserInput
from ._model._quota import StorageLimitExceeded, StorageLimits
from ._replication._replication import BrokerUnavailable, ReplicatedBus
from ._simulator import Simulator
from ._storage._datadir import default_data_dir
from ._storage._store_errors import (
    StoreCorrupt,
    StoreError,
    StoreLocked,
    StoreTooNew,
    StoreUnavailable,
    StoreUnreadable,
)

__all__ = [
    "DEFAULT_PORT",
    "GRAPHQL_PATH",
    "LOCAL_USER",
    "LOCAL_USER_ID",
    "PLAYGROUND_PATH",
    "STREAM_NAME",
    "STREAM_SUBJECTS",
    "Authenticator",
    "BadUserInput",
    "BrokerUnavailable",
    "MesheryApp",
    "Model",
    "ReplicatedBus",
    "Simulator",
    "StorageLimitExceeded",
    "StorageLimits",
    "StoreCorrupt",
    "StoreError",
    "StoreLocked",
    "StoreTooNew",
    "StoreUnavailable",
    "StoreUnreadable",
    "User",
    "app",
    "create_app",
    "default_data_dir",
    "log_stream",
    "schema_sdl",
    "topics",
]

if TYPE_CHECKING:
    #: A ready app with defaults (local mode, simulator on at rate 1).
    app: MesheryApp


def __getattr__(name: str) -> Any:
    """``app`` is built on first use, not on import: importing the package for
    its types or ``create_app`` costs no schema build and no model."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    built = create_app()
    globals()["app"] = built
    return built
