"""Timestamps as Meshery sends them: RFC 3339, UTC, fixed width.

Fixed-width microseconds keep the strings sortable as plain text, so the model
can order and filter by ``created_at`` without parsing every record.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta


def format_time(moment: datetime) -> str:
    """``2024-05-01T12:00:00.000000Z``: RFC 3339 in UTC (naive means UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    m = moment.astimezone(UTC)
    # What strftime("%Y-%m-%dT%H:%M:%S.%fZ") writes (the year unpadded, as
    # glibc does), at a third of its cost: events carry three of these.
    return (
        f"{m.year}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}"
        f".{m.microsecond:06d}Z"
    )


def utc_now() -> str:
    return format_time(datetime.now(UTC))


def parse_time(text: str, *, end_of_day: bool = False) -> datetime:
    """Parse RFC 3339 or a bare ``YYYY-MM-DD`` date; raise ValueError otherwise.

    A bare date means its first instant, or with *end_of_day* its last one,
    so ``to: "2024-05-01"`` includes all of that day.
    """
    text = text.strip()
    if len(text) == 10:
        day = date.fromisoformat(text)
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        return start + timedelta(days=1, microseconds=-1) if end_of_day else start
    if "T" not in text and "t" not in text:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    moment = datetime.fromisoformat(text.replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError(f"RFC 3339 timestamp needs a time zone: {text!r}")
    return moment.astimezone(UTC)
