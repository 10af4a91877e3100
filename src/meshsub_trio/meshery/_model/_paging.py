"""Meshery's ``PageFilter``: paging, search, order and date filters, checked strictly.

Meshery passes ``page``/``pageSize`` as strings and forwards them to its
provider unchecked; here a bad value is a clear GraphQL error instead of an
empty or surprising page. Pages are 0-based, as the Meshery UI sends them.
``pageSize: "all"`` (Meshery's REST idiom) returns every item.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from graphql import GraphQLError

from ._timefmt import parse_time

MAX_PAGE_SIZE = 1000
MAX_PAGE = 1_000_000_000
_DIGITS = re.compile(r"\d+")


class BadUserInput(GraphQLError):
    """A GraphQL error the client caused; carries ``extensions.code``."""

    def __init__(self, message: str) -> None:
        super().__init__(message, extensions={"code": "BAD_USER_INPUT"})


@dataclass(frozen=True)
class PageRequest:
    """A validated ``PageFilter``."""

    page: int = 0
    #: None means every item (``pageSize: "all"``).
    page_size: int | None = 25
    search: str = ""
    order_by: str = "updated_at"
    descending: bool = True
    visibility: frozenset[str] = frozenset()
    created_from: datetime | None = None
    created_to: datetime | None = None
    updated_after: datetime | None = None


def _count(value: Any, name: str, *, minimum: int, maximum: int) -> int:
    text = str(value).strip() if value is not None else ""
    if not _DIGITS.fullmatch(text):
        raise BadUserInput(f"{name} must be a non-negative whole number string, got {value!r}")
    number = int(text) if len(text) <= 18 else 10**18
    if not minimum <= number <= maximum:
        raise BadUserInput(f"{name} must be between {minimum} and {maximum}, got {value!r}")
    return number


def _order(value: Any, fields: Sequence[str], default: str) -> tuple[str, bool]:
    text = " ".join(str(value or "").split()) or default
    parts = text.split(" ")
    field, direction = parts[0], (parts[1].lower() if len(parts) > 1 else "asc")
    if len(parts) > 2 or direction not in ("asc", "desc"):
        raise BadUserInput(f'order must look like "name asc" or "created_at desc", got {value!r}')
    if field not in fields:
        raise BadUserInput(f"cannot order by {field!r}; use one of: {', '.join(fields)}")
    return field, direction == "desc"


def _moment(selector: Mapping[str, Any], key: str, *, end_of_day: bool = False) -> datetime | None:
    value = selector.get(key)
    if value is None or not str(value).strip():
        return None
    try:
        return parse_time(str(value), end_of_day=end_of_day)
    except ValueError:
        raise BadUserInput(
            f"{key} must be an RFC 3339 timestamp or a YYYY-MM-DD date, got {value!r}"
        ) from None


def parse_page_filter(
    selector: Mapping[str, Any] | None,
    *,
    order_fields: Sequence[str],
    default_order: str = "updated_at desc",
) -> PageRequest:
    """Validate a ``PageFilter`` dict; null ``search``/``order`` mean "none"/default."""
    selector = selector or {}
    size_text = str(selector.get("pageSize", "25")).strip().lower()
    page_size = (
        None
        if size_text == "all"
        else _count(selector.get("pageSize", "25"), "pageSize", minimum=1, maximum=MAX_PAGE_SIZE)
    )
    order_by, descending = _order(selector.get("order"), order_fields, default_order)
    return PageRequest(
        page=_count(selector.get("page", "0"), "page", minimum=0, maximum=MAX_PAGE),
        page_size=page_size,
        search=str(selector.get("search") or "").strip().casefold(),
        order_by=order_by,
        descending=descending,
        visibility=frozenset(selector.get("visibility") or ()),
        created_from=_moment(selector, "from"),
        created_to=_moment(selector, "to", end_of_day=True),
        updated_after=_moment(selector, "updated_after"),
    )


def _when(record: Mapping[str, Any], key: str) -> datetime | None:
    value = record.get(key)
    try:
        return parse_time(value) if value else None
    except ValueError:
        return None


def _keep(record: Mapping[str, Any], request: PageRequest, search_fields: Sequence[str]) -> bool:
    if request.search and not any(
        request.search in str(record.get(field) or "").casefold() for field in search_fields
    ):
        return False
    if request.visibility and record.get("visibility") not in request.visibility:
        return False
    created = _when(record, "created_at")
    if request.created_from and (created is None or created < request.created_from):
        return False
    if request.created_to and (created is None or created > request.created_to):
        return False
    updated = _when(record, "updated_at")
    return not (request.updated_after and (updated is None or updated <= request.updated_after))


def paginate(
    records: Sequence[Mapping[str, Any]],
    request: PageRequest,
    *,
    id_field: str = "id",
    search_fields: Sequence[str] = ("name",),
) -> tuple[list[dict[str, Any]], int]:
    """Filter, order and slice; returns ``(page_items, total_matching)``.

    Ties (and nulls, which always sort last) are broken by id, so a page is
    the same every time it is rendered from the same state.
    """
    matching = [record for record in records if _keep(record, request, search_fields)]
    matching.sort(key=lambda r: str(r.get(id_field) or ""))
    present = [r for r in matching if r.get(request.order_by) is not None]
    absent = [r for r in matching if r.get(request.order_by) is None]

    def key(record: Mapping[str, Any]) -> Any:
        value = record[request.order_by]
        return value.casefold() if isinstance(value, str) else value

    present.sort(key=key, reverse=request.descending)
    ordered = present + absent
    if request.page_size is None:
        chosen = ordered if request.page == 0 else []
    else:
        start = request.page * request.page_size
        chosen = ordered[start : start + request.page_size]
    return [dict(record) for record in chosen], len(ordered)


def page_envelope(request: PageRequest, total: int) -> dict[str, int]:
    """The ``page``/``page_size``/``total_count`` fields every Meshery page carries."""
    size = total if request.page_size is None else request.page_size
    return {"page": request.page, "page_size": size, "total_count": total}
