"""Designs (patterns) and filters: records each user owns and edits."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import _records as records
from . import _topics as topics
from ._core import Message, ModelCore, _mine


class DesignRecords(ModelCore):
    """The users' designs and filters, published on their configuration topic."""

    def _apply_pattern(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._store(self._patterns, "design", msg["pattern"]["user_id"], msg["pattern"])
        else:
            self._unstore(self._patterns, "design", msg.get("user_id"), msg["id"])

    def _apply_filter(self, op: str, msg: Message) -> None:
        if op == "upsert":
            self._store(self._filters, "filter", msg["filter"]["user_id"], msg["filter"])
        else:
            self._unstore(self._filters, "filter", msg.get("user_id"), msg["id"])

    # ------------------------------------------------------ patterns, filters

    def save_pattern(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's designs."""
        previous = _mine(self._patterns, user_id, fields.get("id"))
        record = records.pattern(
            fields,
            previous=previous,
            pattern_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._admit(user_id, "design", record, previous)
        message = {"type": "pattern", "op": "upsert", "pattern": record}
        self._commit(topics.configuration(user_id), message)
        return record

    def delete_pattern(self, user_id: str, pattern_id: str) -> bool:
        if _mine(self._patterns, user_id, pattern_id) is None:
            return False
        message = {"type": "pattern", "op": "delete", "user_id": user_id, "id": pattern_id}
        self._commit(topics.configuration(user_id), message)
        return True

    def patterns_of(self, user_id: str | None) -> list[dict[str, Any]]:
        """The user's designs (everyone's when *user_id* is None)."""
        return [p for p in self._patterns.values() if user_id in (None, p["user_id"])]

    def save_filter(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update one of the user's filters."""
        previous = _mine(self._filters, user_id, fields.get("id"))
        record = records.filter_(
            fields,
            previous=previous,
            filter_id=str(fields.get("id") or self.new_id()),
            user_id=user_id,
            now=self.now(),
        )
        self._admit(user_id, "filter", record, previous)
        self._commit(
            topics.configuration(user_id), {"type": "filter", "op": "upsert", "filter": record}
        )
        return record

    def delete_filter(self, user_id: str, filter_id: str) -> bool:
        if _mine(self._filters, user_id, filter_id) is None:
            return False
        message = {"type": "filter", "op": "delete", "user_id": user_id, "id": filter_id}
        self._commit(topics.configuration(user_id), message)
        return True

    def filters_of(self, user_id: str | None) -> list[dict[str, Any]]:
        """The user's filters (everyone's when *user_id* is None)."""
        return [f for f in self._filters.values() if user_id in (None, f["user_id"])]
