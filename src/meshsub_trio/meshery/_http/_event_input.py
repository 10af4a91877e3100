"""The events endpoint's inputs: a posted event's fields, and the history's query.

Apart from the routes because both are pure checks of client input (no model,
no I/O), and :class:`RouteError` is how every route reports such a mistake.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from ..._decimal import decimal
from ..._encoding import JSONDecodeError, loads
from .._model._records import SEVERITIES

DEFAULT_PAGE_SIZE = 25
MAX_PAGE_SIZE = 1000

#: Event fields a client may set, with meshkit's snake_case spellings as aliases.
_EVENT_TEXT = {
    "description": "description",
    "category": "category",
    "action": "action",
    "status": "status",
    "actedUpon": "actedUpon",
    "acted_upon": "actedUpon",
    "operationID": "operationID",
    "operation_id": "operationID",
    "createdAt": "createdAt",
    "created_at": "createdAt",
}
#: Who an event is for: either spelling, never both with different values.
EVENT_TARGET = ("user_id", "userID")
_EVENT_KEYS = ("severity", "metadata", *_EVENT_TEXT, *EVENT_TARGET)


class RouteError(Exception):
    """A client mistake: becomes ``{"errors": [{"message": ...}]}`` with *status*."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _text_field(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise RouteError(400, f"{key} must be a string, got {type(value).__name__}")
    return value


def event_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """Check a posted event and map it to :meth:`Model.publish_event` fields."""
    unknown = sorted(set(body) - set(_EVENT_KEYS))
    if unknown:
        raise RouteError(
            400, f"unknown event field(s) {', '.join(unknown)}; allowed: {', '.join(_EVENT_KEYS)}"
        )
    severity = body.get("severity")
    if severity not in SEVERITIES:
        hint = " (meshkit's success is not a Meshery Severity; use informational)"
        raise RouteError(
            400,
            f"severity must be one of {', '.join(SEVERITIES)}; got {severity!r}"
            + (hint if severity == "success" else ""),
        )
    fields: dict[str, Any] = {"severity": severity}
    for key, name in _EVENT_TEXT.items():
        value = _text_field(body, key)
        if value is not None:
            if name in fields:
                raise RouteError(400, f"{key} repeats {name}: send one spelling")
            fields[name] = value
    if not (fields.get("description") or "").strip():
        raise RouteError(400, "description must be a non-empty string")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise RouteError(400, "metadata must be a JSON object")
    fields["metadata"] = metadata
    return fields


def _choices(query: Mapping[str, str], key: str, allowed: Collection[str] | None) -> set[str]:
    """Meshery sends filters as JSON arrays (``["error"]``); a comma list works too."""
    raw = query.get(key, "").strip()
    if not raw:
        return set()
    values: Any
    if raw.startswith("["):
        try:
            values = loads(raw)
        except JSONDecodeError:
            values = None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise RouteError(400, f"{key} must be a JSON array of strings or a comma list")
    else:
        values = [part.strip() for part in raw.split(",") if part.strip()]
    chosen = set(values)
    if allowed is not None and not chosen <= set(allowed):
        bad = ", ".join(sorted(chosen - set(allowed)))
        raise RouteError(400, f"unknown {key} {bad}; use any of {', '.join(allowed)}")
    return chosen


def _whole(query: Mapping[str, str], key: str, default: int, *, low: int, high: int) -> int:
    raw = query.get(key, "").strip()
    if not raw:
        return default
    number = decimal(raw)
    if number is None or not low <= number <= high:
        shown = raw if len(raw) <= 40 else raw[:40] + "..."
        raise RouteError(400, f"{key} must be a whole number from {low} to {high}, got {shown!r}")
    return number


def events_page(events: list[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """Filter, order (newest first) and page a user's events like Meshery's REST."""
    page = _whole(query, "page", 0, low=0, high=1_000_000_000)
    size_text = query.get("pagesize", "").strip().lower()
    size = (
        None
        if size_text == "all"
        else _whole(query, "pagesize", DEFAULT_PAGE_SIZE, low=1, high=MAX_PAGE_SIZE)
    )
    order = query.get("order", "desc").strip().lower() or "desc"
    if order not in ("asc", "desc"):
        raise RouteError(400, f"order must be asc or desc, got {order!r}")
    severities = _choices(query, "severity", SEVERITIES)
    categories = _choices(query, "category", None)
    actions = _choices(query, "action", None)
    status = query.get("status", "").strip()
    search = query.get("search", "").strip().casefold()

    def keep(event: Mapping[str, Any]) -> bool:
        return (
            (not severities or event["severity"] in severities)
            and (not categories or event["category"] in categories)
            and (not actions or event["action"] in actions)
            and (not status or event["status"] == status)
            and (not search or search in event["description"].casefold())
        )

    matching = [event for event in events if keep(event)]
    if order == "desc":
        matching.reverse()  # history is kept oldest first
    start = 0 if size is None else page * size
    chosen = matching if size is None else matching[start : start + size]
    if size is None and page:
        chosen = []
    counts: dict[str, int] = {}
    for event in events:
        counts[event["severity"]] = counts.get(event["severity"], 0) + 1
    return {
        "events": chosen,
        "page": page,
        "page_size": len(matching) if size is None else size,
        "total_count": len(matching),
        "count_by_severity_level": [
            {"severity": name, "count": counts[name]} for name in SEVERITIES if name in counts
        ],
    }
