"""PageFilter: strings checked strictly, search, order, date and visibility filters."""

from __future__ import annotations

from typing import Any

import pytest

from meshsub_trio.meshery import BadUserInput
from meshsub_trio.meshery._model._paging import (
    MAX_PAGE_SIZE,
    PageRequest,
    page_envelope,
    paginate,
    parse_page_filter,
)

FIELDS = ("name", "created_at", "updated_at", "qps")


def parse(**selector: Any) -> PageRequest:
    return parse_page_filter(selector, order_fields=FIELDS)


RECORDS = [
    {"id": "1", "name": "Alpha", "created_at": "2024-05-01T10:00:00.000000Z",
     "updated_at": "2024-05-03T00:00:00.000000Z", "qps": 5, "visibility": "private"},
    {"id": "2", "name": "beta", "created_at": "2024-05-02T10:00:00.000000Z",
     "updated_at": "2024-05-02T00:00:00.000000Z", "qps": None, "visibility": "public"},
    {"id": "3", "name": "Gamma alpha", "created_at": "2024-05-03T10:00:00.000000Z",
     "updated_at": "2024-05-01T00:00:00.000000Z", "qps": 1, "visibility": "published"},
]  # fmt: skip


def names(request: PageRequest) -> list[str]:
    return [r["name"] for r in paginate(RECORDS, request)[0]]


def test_defaults_and_null_search_and_order() -> None:
    request = parse(page="0", pageSize="10", search=None, order=None)
    assert request == PageRequest(page=0, page_size=10)
    assert names(request) == ["Alpha", "beta", "Gamma alpha"]  # updated_at desc


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ({"page": "one", "pageSize": "10"}, "page must be a non-negative whole number"),
        ({"page": "-1", "pageSize": "10"}, "page must be a non-negative whole number"),
        ({"page": "1.5", "pageSize": "10"}, "page must be"),
        ({"page": "", "pageSize": "10"}, "page must be"),
        ({"page": "9" * 5000, "pageSize": "10"}, "page must be between"),
        ({"page": "0", "pageSize": "0"}, "pageSize must be between 1 and"),
        ({"page": "0", "pageSize": str(MAX_PAGE_SIZE + 1)}, "pageSize must be between 1 and"),
        ({"page": "0", "pageSize": "ten"}, "pageSize must be a non-negative whole number"),
        ({"page": "0", "pageSize": "5", "order": "name up"}, "order must look like"),
        ({"page": "0", "pageSize": "5", "order": "name asc extra"}, "order must look like"),
        ({"page": "0", "pageSize": "5", "order": "secret asc"}, "cannot order by 'secret'"),
        ({"page": "0", "pageSize": "5", "from": "last week"}, "from must be an RFC 3339"),
        ({"page": "0", "pageSize": "5", "to": "2024-13-01"}, "to must be an RFC 3339"),
        ({"page": "0", "pageSize": "5", "updated_after": "2024-05-01T10:00"}, "updated_after"),
    ],
)
def test_bad_values_are_clear_errors(selector: dict[str, Any], message: str) -> None:
    with pytest.raises(BadUserInput) as caught:
        parse_page_filter(selector, order_fields=FIELDS)
    assert message in caught.value.message
    assert caught.value.extensions == {"code": "BAD_USER_INPUT"}


def test_pages_are_zero_based_slices() -> None:
    assert names(parse(page="0", pageSize="2", order="name asc")) == ["Alpha", "beta"]
    assert names(parse(page="1", pageSize="2", order="name asc")) == ["Gamma alpha"]
    assert names(parse(page="7", pageSize="2")) == []
    items, total = paginate(RECORDS, parse(page="7", pageSize="2"))
    assert (items, total) == ([], 3)
    assert page_envelope(parse(page="1", pageSize="2"), total) == {
        "page": 1, "page_size": 2, "total_count": 3,
    }  # fmt: skip


def test_page_size_all_returns_everything() -> None:
    request = parse(page="0", pageSize="ALL")
    assert request.page_size is None
    assert len(names(request)) == 3
    assert page_envelope(request, 3)["page_size"] == 3
    assert names(parse(page="1", pageSize="all")) == []


def test_whitespace_around_numbers_is_tolerated() -> None:
    assert parse(page=" 2 ", pageSize=" 5").page == 2


def test_search_is_a_case_insensitive_substring() -> None:
    assert names(parse(page="0", pageSize="10", search="ALPHA", order="name asc")) == [
        "Alpha",
        "Gamma alpha",
    ]
    assert names(parse(page="0", pageSize="10", search="  ")) == ["Alpha", "beta", "Gamma alpha"]
    items, total = paginate(RECORDS, parse(page="0", pageSize="1", search="a"))
    assert total == 3 and len(items) == 1


@pytest.mark.parametrize(
    ("order", "expected"),
    [
        ("name asc", ["Alpha", "beta", "Gamma alpha"]),  # case-insensitive
        ("name desc", ["Gamma alpha", "beta", "Alpha"]),
        ("name", ["Alpha", "beta", "Gamma alpha"]),
        ("NAME   DESC", None),  # field names are exact; directions are not
        ("created_at DESC", ["Gamma alpha", "beta", "Alpha"]),
        ("qps asc", ["Gamma alpha", "Alpha", "beta"]),  # nulls last
        ("qps desc", ["Alpha", "Gamma alpha", "beta"]),  # nulls last either way
    ],
)
def test_order(order: str, expected: list[str] | None) -> None:
    if expected is None:
        with pytest.raises(BadUserInput):
            parse(page="0", pageSize="10", order=order)
        return
    assert names(parse(page="0", pageSize="10", order=order)) == expected


def test_ties_are_broken_by_id_so_pages_are_stable() -> None:
    same = [{"id": str(n), "name": "same"} for n in (3, 1, 2)]
    request = parse(page="0", pageSize="10", order="name asc")
    assert [r["id"] for r in paginate(same, request)[0]] == ["1", "2", "3"]


def test_date_and_visibility_filters() -> None:
    assert names(parse(page="0", pageSize="9", order="name asc", **{"from": "2024-05-02"})) == [
        "beta",
        "Gamma alpha",
    ]
    assert names(parse(page="0", pageSize="9", order="name asc", to="2024-05-02")) == [
        "Alpha",
        "beta",
    ]
    after = parse(page="0", pageSize="9", order="name asc", updated_after="2024-05-01T12:00:00Z")
    assert names(after) == ["Alpha", "beta"]
    public = parse(page="0", pageSize="9", order="name asc", visibility=["public", "published"])
    assert names(public) == ["beta", "Gamma alpha"]


def test_pages_are_copies() -> None:
    items, _ = paginate(RECORDS, parse(page="0", pageSize="1"))
    items[0]["name"] = "changed"
    assert RECORDS[0]["name"] == "Alpha"
