"""The BROKER controllers mirror this process's live link to the shared bus.

Why a local overlay and not a replicated change: the link is a fact about
*this* process. During an outage nothing can be published anyway, and if it
could, one process's outage would overwrite what every other (connected)
process reports. So each process sets ``Model.broker_status`` (every BROKER
controller then reads as that status, in queries and subscriptions alike)
and wakes its own controller-status subscribers directly, without a round
trip through the bus; they see it as an ordinary single-controller delta.

Statuses: ``CONNECTED`` while the link is up; ``UNKOWN`` (Meshery's own
spelling) while it is down or reconnecting: the broker may be deployed and
merely unreachable, so ``NOTDEPLOYED`` would claim more than we know.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ...brokers._broker import ConnectionState
from .._model._model import Model

CONNECTED = "CONNECTED"
DISCONNECTED = "UNKOWN"


def link_status(state: ConnectionState) -> str:
    return CONNECTED if state is ConnectionState.CONNECTED else DISCONNECTED


async def mirror_link(broker: Any, model: Model, notify: Callable[[], None]) -> None:
    """Keep ``model.broker_status`` equal to *broker*'s link state until cancelled."""
    seen: ConnectionState = broker.state
    while True:
        status = link_status(seen)
        if model.broker_status != status:
            model.broker_status = status
            notify()
        if seen is ConnectionState.CLOSED:
            return
        seen = await broker.wait_state_change(seen)
