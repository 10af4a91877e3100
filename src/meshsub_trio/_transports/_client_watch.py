"""How an HTTP stream learns that its client has gone or stopped reading.

A streaming response hears from its client only through ASGI's
``http.disconnect``; a client that stays connected but stops reading says
nothing at all, and shows only as a write that does not finish. Where the
host's send can be cancelled the write gives up at its deadline by itself;
hypercorn's cannot (it shields the socket write), so the stream's watcher
task wakes at the deadline of the write in progress instead.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def until_disconnect(receive: Receive) -> None:
    """Return when the ASGI server reports ``http.disconnect``: the only way an
    HTTP stream learns its client left while nothing is being written."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientWatch:
    """The deadline of the write in progress, and the watcher's wait that it wakes."""

    def __init__(self) -> None:
        #: When the write in progress is late (inf: none is in progress).
        self.deadline = math.inf
        self._wait = trio.CancelScope()

    def arm(self, deadline: float) -> None:
        """A write started that must finish by *deadline* (inf: it finished)."""
        self.deadline = deadline
        self._wait.deadline = deadline

    async def gone_or_stalled(self, receive: Receive) -> str:
        """Wait until the client leaves (``"disconnect"``) or a write is still
        unfinished at its deadline (``"stalled"``)."""
        while True:
            with trio.CancelScope(deadline=self.deadline) as self._wait:
                await until_disconnect(receive)
                return "disconnect"
            if trio.current_time() >= self.deadline:
                return "stalled"
