"""What a connection has to send: queued frames and members with pending events.

Two kinds of work wait here for the connection's writer. Frames (control
messages, single results, per-operation events) sit in a bounded queue:
producers wait for room, which is backpressure on that connection only.
Shared-stream deliveries never wait: each member keeps its own bounded buffer
with its overflow policy, and only says "I have something" here.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import trio


class Drainable(Protocol):
    def drain_into(self, frames: list[bytes]) -> None:
        """Append this member's pending frames."""


class Outbox:
    """One connection's pending output, drained by its single writer."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._frames: deque[tuple[Any, bytes]] = deque()
        self._ready: dict[Drainable, None] = {}
        self._room = trio.lowlevel.ParkingLot()
        self._work = trio.lowlevel.ParkingLot()
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
            await self._room.park()
        if self.closed:
            raise trio.ClosedResourceError("connection closing")
        self._frames.append((owner, frame))
        self._work.unpark_all()

    def mark_ready(self, member: Drainable) -> None:
        self._ready[member] = None
        self._work.unpark_all()

    def wake(self) -> None:
        """Something else needs the writer (e.g. bytes left unsent)."""
        self._work.unpark_all()

    @property
    def has_work(self) -> bool:
        return bool(self._frames or self._ready)

    async def wait(self) -> None:
        """Park the writer until there is work (or the outbox closes)."""
        if not self.has_work and not self.closed:
            await self._work.park()

    def take_frames(self) -> list[tuple[Any, bytes]]:
        frames = list(self._frames)
        self._frames.clear()
        self._room.unpark_all()
        return frames

    def take_ready(self) -> list[Drainable]:
        ready = list(self._ready)
        self._ready.clear()
        return ready

    def close(self) -> None:
        """No more puts; the writer finishes what is queued."""
        self.closed = True
        self._room.unpark_all()
        self._work.unpark_all()
