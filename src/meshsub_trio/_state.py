"""What every host shares while serving one app: engine, metrics, live connections."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._app import App, Context
from ._cohort import Cohorts
from ._config import Config
from ._connection import Connection
from ._execution import Engine
from ._metrics import Metrics

if TYPE_CHECKING:
    from ._protocol import ProtocolMachine
    from ._transports._socket import MessageSocket


class ServerState:
    """One served app: built once per server, shared by its connections."""

    def __init__(self, app: App, config: Config, metrics: Metrics | None = None) -> None:
        self.app = app
        self.config = config
        self.engine = Engine(app, max_depth=config.max_depth)
        self.metrics = metrics or Metrics()
        self.cohorts = Cohorts(self.engine, linger=config.cohort_linger)
        self.connections: set[Connection] = set()
        self.shutting_down = False

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
