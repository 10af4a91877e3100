"""What a connection has to send: queued frames and members with pending events.

Two kinds of work wait here for the connection's writer. Frames (control
messages, single results, per-operation events) sit in a bounded queue:
producers wait for room, which is backpressure on that connection only.
Shared-stream deliveries never wait: each member keeps its own bounded buffer
with its overflow policy, and only says "I have something" here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio


class Drainable(Protocol):
    def drain_into(self, frames: list[bytes]) -> None:
        """Append this member's pending frames."""


class Outbox:
    """One connection's pending output, drained by its single writer."""

    __slots__ = ("_frames", "_ready", "_room", "capacity", "closed", "on_work")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # A list, not a deque: the writer always takes everything at once, and
        # an empty list costs a tenth of an empty deque on every idle connection.
        self._frames: list[tuple[Any, bytes]] = []
        self._ready: dict[Drainable, None] = {}
        self._room: trio.lowlevel.ParkingLot | None = None  # made when a producer waits
        #: Called whenever there is work for the writer (which may not be running).
        self.on_work: Callable[[], None] = lambda: None
        self.closed = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def idle(self) -> bool:
        """Nothing queued: a new frame may skip the queue without reordering."""
        return not self._frames

    async def put(self, owner: Any, frame: bytes) -> None:
        """Queue *frame* (for *owner*, an operation or None); wait while full."""
        while len(self._frames) >= self.capacity and not self.closed:
            if self._room is None:
                self._room = trio.lowlevel.ParkingLot()
            await self._room.park()
        if self.closed:
            raise trio.ClosedResourceError("connection closing")
        self._frames.append((owner, frame))
        self.on_work()

    def mark_ready(self, member: Drainable) -> None:
        self._ready[member] = None
        self.on_work()

    def wake(self) -> None:
        """Something else needs the writer (e.g. bytes left unsent)."""
        self.on_work()

    @property
    def has_work(self) -> bool:
        return bool(self._frames or self._ready)

    def take_frames(self) -> list[tuple[Any, bytes]]:
        frames, self._frames = self._frames, []
        if self._room is not None:
            self._room.unpark_all()
        return frames

    def take_ready(self) -> list[Drainable]:
        ready = list(self._ready)
        self._ready.clear()
        return ready

    def close(self) -> None:
        """No more puts; the writer finishes what is queued."""
        self.closed = True
        if self._room is not None:
            self._room.unpark_all()
        self.on_work()
