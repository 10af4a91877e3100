"""What every host shares while serving one app: engine, metrics, live connections."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import trio

from .._app import App, Context
from .._config import Config
from .._execution import Engine
from .._metrics import Metrics
from ._cohort import Cohorts
from ._connection import Connection
from ._keepalive import KeepAliveWheel

if TYPE_CHECKING:
    from .._transports._socket import MessageSocket
    from .._wire import ProtocolMachine


class Stoppable(Protocol):
    """A live HTTP stream or long-poll: server shutdown ends it."""

    def shutdown(self) -> None: ...


class ServerState:
    """One served app: built once per server, shared by its connections."""

    def __init__(self, app: App, config: Config, metrics: Metrics | None = None) -> None:
        self.app = app
        #: *config* with the app's own endpoint and playground paths added.
        self.config = config.serving(app.graphql_paths, app.playground_paths)
        self.engine = Engine(
            app,
            max_depth=config.max_depth,
            max_fields=config.max_fields,
            max_cost=config.max_cost,
            max_tokens=config.max_tokens,
            cache_bytes=config.document_cache_bytes,
            compiled=config.compiled_execution,
        )
        self.metrics = metrics or Metrics()
        self.metrics.compiled = self.engine.plans
        app_metrics = getattr(app, "metric_families", None)
        if callable(app_metrics):  # an app's own counters (Meshery: its resume log)
            self.metrics.add_source(app_metrics)
        self.cohorts = Cohorts(self.engine, linger=config.cohort_linger, metrics=self.metrics)
        self.connections: set[Connection] = set()
        #: Operations and app event streams over HTTP (SSE): ended by shutdown.
        #: Live HTTP streams and long-polls: each ends on :meth:`shutdown`.
        self.http_streams: set[Stoppable] = set()
        #: Connections still waiting for ``connection_init``, when a watchdog
        #: task enforces ``init_timeout`` for all of them (None: each its own).
        self.awaiting_init: set[Connection] | None = None
        #: Every connection's keep-alive, while :meth:`running` (None otherwise).
        self.keepalive: KeepAliveWheel | None = None
        self.shutting_down = False

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The server-wide tasks (cohorts, the init watchdog, the graphql-sse relay
        to the other processes), for as long as it serves."""
        from .._transports._sse_desk import relay_running

        async with self.cohorts.running(), relay_running(self), trio.open_nursery() as nursery:
            if self.config.init_timeout > 0:
                self.awaiting_init = set()
                nursery.start_soon(self._watch_init)
            if self.config.keepalive > 0:
                self.keepalive = KeepAliveWheel(self.config.keepalive, self.config.pong_deadline)
                nursery.start_soon(self.keepalive.run)
            try:
                yield
            finally:
                self.awaiting_init = None
                self.keepalive = None
                nursery.cancel_scope.cancel()

    async def _watch_init(self) -> None:
        """Close (4408) the connections whose ``connection_init`` is overdue.

        One task for every connection, checking ten times per timeout (at most
        every 0.1 s), instead of a deadline armed and cleared per connection:
        a timeout may fire up to that period late.
        """
        period = min(0.1, self.config.init_timeout / 10)
        while True:
            await trio.sleep(period)
            awaiting = self.awaiting_init
            if not awaiting:
                continue
            now = trio.current_time()
            for connection in [c for c in awaiting if c.init_deadline <= now]:
                awaiting.discard(connection)
                connection.init_timed_out()

    async def run_connection(
        self, socket: MessageSocket, machine: ProtocolMachine, context: Context
    ) -> None:
        """Drive one WebSocket connection to its end (all cleanups done)."""
        connection = Connection(socket, machine, state=self, context=context)
        self.connections.add(connection)
        try:
            if self.shutting_down:
                connection.shutdown()
            await connection.run()
        finally:
            self.connections.discard(connection)

    def shutdown(self) -> None:
        """Close every connection with 1001; new ones are closed as they arrive."""
        self.shutting_down = True
        for connection in tuple(self.connections):
            connection.shutdown()
        for stream in tuple(self.http_streams):
            stream.shutdown()
