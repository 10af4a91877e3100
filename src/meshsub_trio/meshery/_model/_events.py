"""Users and their event history (a bounded log per user)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from . import _records as records
from . import _topics as topics
from ._core import Message, ModelCore


class EventRecords(ModelCore):
    """Known users and the events sent to them."""

    def _apply_event(self, _op: str, msg: Message) -> None:
        """Append to the user's history, then drop its oldest events beyond the
        count and byte bounds (a log: an event is never refused for room)."""
        event = msg["event"]
        user = event["userID"]
        self.users.add(user)
        history = self._events.setdefault(user, deque())
        history.append(event)
        self.usage.replace(user, "event", None, event)
        room = self.limits.event_bytes
        while history and (
            len(history) > self._event_history
            or (room is not None and self.usage.bytes(user, "event") > room)
        ):
            self.usage.replace(user, "event", history.popleft(), None)

    # ----------------------------------------------------------------- users

    def add_user(self, user_id: str) -> None:
        """Make a user known (so the simulator greets them with events)."""
        self.users.add(user_id)

    # ---------------------------------------------------------------- events

    def publish_event(self, user_id: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Record an event for *user_id* and push it to their ``subscribeEvents``."""
        event = records.event(
            fields,
            event_id=self.new_id(),
            user_id=user_id,
            system_id=self.system_id,
            now=self.now(),
        )
        self._check_object("event", event)
        self._commit(topics.events(user_id), {"type": "event", "op": "append", "event": event})
        return event

    def events_of(self, user_id: str) -> list[dict[str, Any]]:
        """The user's retained event history, oldest first."""
        return list(self._events.get(user_id, ()))
