"""App factories for ``meshsub-trio serve tests.client._apps:NAME`` subprocesses.

Meshery without the simulator (so the only events are the test's own), on
whatever broker the CLI hands over (``--broker nats://...``), or in memory.
"""

from __future__ import annotations

from typing import Any

from meshsub_trio.meshery import MesheryApp, create_app


def quiet_meshery(broker: Any = None) -> MesheryApp:
    """Meshery's API with an idle cluster."""
    if broker is None:
        return create_app(simulator=False)
    return create_app(broker=broker, simulator=False)
