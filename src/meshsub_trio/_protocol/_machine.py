"""State shared by both protocol machines: the table of live operation ids."""

from __future__ import annotations


class OperationTable:
    """The ids of a connection's live operations, with an optional cap."""

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
