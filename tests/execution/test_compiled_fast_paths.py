"""The synchronous fast paths of compiled plans, byte for byte against graphql-core.

Values the plan never asks ``is_awaitable`` or ``callable`` about (datetimes,
Decimals, bytes, sets: ``_plan.PLAIN``), enums found in graphql-core's own
table of names, leaf fields and lists whose values come back unchanged, and
the same fields when a value is a callable or an awaitable after all.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import pytest
import trio
from graphql import GraphQLEnumType, build_schema, parse
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from graphql.pyutils import is_awaitable

from meshsub_trio._execution._compiler import compile_plan
from meshsub_trio._execution._trio_gather import install
from tests.execution.test_compiled_differential import outcome
from tests.execution.test_compiled_operations import sorted_outcome

SDL = """
type Query { ok: Boolean }
enum Mood { HAPPY SAD ODD }
enum Plain { A B }
scalar Stamp
type Thing {
  s: String
  sNN: String!
  n: Int
  f: Float
  b: Boolean
  mood: Mood
  moodNN: Mood!
  plain: Plain
  plainNN: Plain!
  stamp: Stamp
  stamps: [Stamp]
  strings: [String]
  stringsNN: [String!]
  moods: [Mood]
  thing: Thing
}
type Subscription { ev: Thing }
"""


def _stamp(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date | time | timedelta | Decimal):
        return str(value)
    raise ValueError(f"Stamp cannot represent {value!r}")


def make_schema() -> Any:
    schema = build_schema(SDL)
    mood = schema.type_map["Mood"]
    assert isinstance(mood, GraphQLEnumType)
    # Internal values: a str naming another member, an int, and True (equal to 1).
    mood.values["HAPPY"].value = "SAD"
    mood.values["SAD"].value = 1
    mood.values["ODD"].value = True
    schema.type_map["Stamp"].coerce_output_value = _stamp  # type: ignore[attr-defined]
    return schema


SCHEMA = make_schema()
DOCUMENT = """subscription { ev { s sNN n f b mood moodNN plain plainNN stamp stamps
  strings stringsNN moods thing { s mood stamp } } }"""
FIELDS = ["s", "n", "f", "b", "mood", "plain", "stamp", "stamps", "strings", "moods"]
NON_NULL = ["sNN", "moodNN", "plainNN", "stringsNN"]

NOW = datetime(2026, 12, 2, 18, 0, tzinfo=UTC)
VALUES: list[Any] = [
    NOW, NOW.date(), NOW.time(), timedelta(seconds=3), Decimal("1.5"), b"x", {1}, frozenset(),
    "SAD", "HAPPY", "A", "B", "C", "", 1, True, 0, 1.0, 2**40, None, [NOW, None, "x", 1],
    ("A", "SAD"), {"k": NOW}, ValueError("v"), lambda _info: NOW, lambda _info: "A",
]  # fmt: skip


class Source:
    """A non-mapping source: attributes, read by the default resolver."""

    def __init__(self, value: Any) -> None:
        for name in [*FIELDS, *NON_NULL]:
            setattr(self, name, value)
        self.thing = {"s": value, "mood": value, "stamp": value}


def both(text: str, event: Any) -> tuple[bytes, bytes]:
    executor = ExecutorThrowingOnIncremental.build(SCHEMA, parse(text), None, None, {})
    assert not isinstance(executor, list), executor
    plan = compile_plan(executor)
    expected = outcome(executor.build_per_event_executor(event).execute_operation(False))
    return outcome(plan.run(event, None, executor.async_helpers)), expected


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_each_field_over_a_value(value: Any) -> None:
    for name in [*FIELDS, *NON_NULL]:
        event = {"ev": {name: value, "thing": {"s": value, "mood": value, "stamp": value}}}
        for text in (f"subscription {{ ev {{ {name} }} }}", DOCUMENT):
            compiled, expected = both(text, event)
            assert compiled == expected, (name, value)
    compiled, expected = both(DOCUMENT, {"ev": Source(value)})
    assert compiled == expected, value


class Items:
    """An iterable that is neither a list nor a tuple (iterated once per run)."""

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def __iter__(self) -> Any:
        return iter(self.items)


def test_lists_of_leaves_item_by_item() -> None:
    items = [*VALUES, *VALUES]
    for name in ("stamps", "strings", "stringsNN", "moods"):
        for value in (items, tuple(items), Items(items), {"a": 1}, "abc"):
            compiled, expected = both(f"subscription {{ ev {{ {name} }} }}", {"ev": {name: value}})
            assert compiled == expected, (name, value)


def test_an_enum_whose_coercion_is_replaced_is_always_asked() -> None:
    schema = build_schema(SDL)
    plain = schema.type_map["Plain"]
    plain.coerce_output_value = lambda value: f"<{value}>"  # type: ignore[attr-defined]
    text = "subscription { ev { plain plainNN } }"
    executor = ExecutorThrowingOnIncremental.build(schema, parse(text), None, None, {})
    assert not isinstance(executor, list)
    event = {"ev": {"plain": "A", "plainNN": "B"}}
    expected = outcome(executor.build_per_event_executor(event).execute_operation(False))
    compiled = outcome(compile_plan(executor).run(event, None, executor.async_helpers))
    assert compiled == expected
    assert b'"plain":"<A>"' in compiled


async def _later(value: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return value


def test_awaitables_among_fast_values() -> None:
    """A coroutine where a leaf, an item or an object is expected: the plan
    turns asynchronous there and still matches graphql-core (errors sorted:
    concurrent siblings fail in any order)."""
    install()
    expected = trio.run(_async_outcome, DOCUMENT, False)
    assert trio.run(_async_outcome, DOCUMENT, True) == expected
    assert b'"data":{"ev":null}' in expected  # moodNN's error nulls ev
    text = DOCUMENT.replace("moodNN", "")
    expected = trio.run(_async_outcome, text, False)
    assert trio.run(_async_outcome, text, True) == expected
    assert b'"stamps":["2026-12-02T18:00:00+00:00"' in expected


async def _async_outcome(text: str, compiled: bool) -> bytes:
    executor = ExecutorThrowingOnIncremental.build(SCHEMA, parse(text), None, None, {})
    assert not isinstance(executor, list)
    # moodNN's error cancels its pending siblings: no other error may race it.
    failing = "moodNN" in text
    moods = {"moodNN": _later("nope")} if failing else {}
    event = {
        "ev": {
            "s": _later("x"),
            "sNN": "y",
            "plainNN": "A",
            "stringsNN": ("z", _later("w")),
            "mood": "SAD",
            **moods,
            "stamps": [NOW, _later(NOW), None],
            "strings": ["a", _later("b"), _later("c" if failing else ValueError("c"))],
            "moods": (_later("SAD"), "HAPPY"),
            "thing": _later({"s": "t", "mood": "SAD", "stamp": NOW}),
        }
    }
    if compiled:
        result: Any = compile_plan(executor).run(event, None, executor.async_helpers)
    else:
        result = executor.build_per_event_executor(event).execute_operation(False)
    assert is_awaitable(result)
    return sorted_outcome(await result)
