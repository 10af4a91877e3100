"""What both protocol machines share: live operation ids, closing, envelopes."""

from __future__ import annotations

from typing import ClassVar

from .._encoding import dumps
from ._events import Close, CloseCode, Event, clip_reason


class OperationTable:
    """The ids of a connection's live operations, with an optional cap."""

    __slots__ = ("_ids", "limit")

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._ids: set[str] = set()

    def __contains__(self, op_id: str) -> bool:
        return op_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def has_room(self) -> bool:
        return self.limit is None or len(self._ids) < self.limit

    def add(self, op_id: str) -> None:
        self._ids.add(op_id)

    def discard(self, op_id: str) -> bool:
        """Forget *op_id*; return whether it was live."""
        if op_id in self._ids:
            self._ids.remove(op_id)
            return True
        return False


class MachineBase:
    """The state and outbound envelopes common to both GraphQL WebSocket protocols."""

    __slots__ = ("acknowledged", "closed", "init_received", "operations")

    #: The message type that carries a result (``next`` or ``data``).
    result_type: ClassVar[bytes]

    def __init__(self, *, max_operations: int | None = 100) -> None:
        self.operations = OperationTable(max_operations)
        self.init_received = False
        self.acknowledged = False
        self.closed = False

    def init_timed_out(self) -> list[Event]:
        """The init deadline passed: close 4408 unless ``connection_init`` came."""
        if self.init_received or self.closed:
            return []
        return self._close(CloseCode.INIT_TIMEOUT, "Connection initialisation timeout")

    def _close(self, code: int, reason: str) -> list[Event]:
        self.closed = True
        return [Close(code, clip_reason(reason))]

    def next(self, op_id: str, payload: bytes) -> bytes | None:
        """A result frame around the pre-encoded *payload*, if *op_id* is live."""
        if op_id not in self.operations:
            return None
        return b'{"id":%b,"type":"%b","payload":%b}' % (dumps(op_id), self.result_type, payload)

    def complete(self, op_id: str) -> bytes | None:
        """The ``complete`` frame, once; None if *op_id* already ended."""
        if not self.operations.discard(op_id):
            return None
        return complete_frame(op_id)


def complete_frame(op_id: str) -> bytes:
    return b'{"id":%b,"type":"complete"}' % dumps(op_id)
