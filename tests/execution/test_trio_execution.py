"""graphql-core under pure Trio: sibling async resolvers, async lists, cancellation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import trio
import trio.testing
from graphql import graphql
from graphql.execution import executor as graphql_executor
from graphql.pyutils import gather_with_cancel

from meshsub_trio import App, Context
from meshsub_trio._execution import Engine, Prepared, _trio_gather
from meshsub_trio._execution._trio_gather import GraphQLCoreIncompatible, trio_gather

SCHEMA = """
type Query {
  one: Int!
  two: Int!
  three: Int
  items: [Int!]!
  boom: Int!
  both: Pair
  deep: Deep
}
type Pair { a: Int!, b: Int! }
type Deep { deep: Deep, n: Int }
"""


def make_app(log: list[str], release: trio.Event | None = None) -> App:
    async def wait_then(value: int) -> int:
        if release is not None:
            await release.wait()
        await trio.sleep(0)
        return value

    async def one(_root: Any, _info: Any) -> int:
        return await wait_then(1)

    async def two(_root: Any, _info: Any) -> int:
        return await wait_then(2)

    async def three(_root: Any, _info: Any) -> int:
        try:
            await trio.sleep_forever()
        finally:
            log.append("three cancelled")
        return 3

    async def boom(_root: Any, _info: Any) -> int:
        await trio.sleep(0)
        raise ValueError("boom")

    def items(_root: Any, _info: Any) -> list[Any]:
        return [wait_then(n) for n in range(5)]

    return App(
        SCHEMA,
        resolvers={
            "Query": {
                "one": one,
                "two": two,
                "three": three,
                "items": items,
                "boom": boom,
                "both": lambda *_: {},
                "deep": lambda *_: {},
            },
            "Pair": {"a": one, "b": two},
        },
    )


async def run(engine: Engine, query: str) -> dict[str, Any]:
    prepared = engine.prepare(query, None, None, Context())
    assert isinstance(prepared, Prepared), prepared
    result = await engine.execute(prepared)
    return {"data": result.data, "errors": [e.message for e in result.errors or []]}


async def test_sibling_async_root_fields_run_concurrently() -> None:
    release = trio.Event()
    engine = Engine(make_app([], release))
    async with trio.open_nursery() as nursery:
        outcome: dict[str, Any] = {}

        async def go() -> None:
            outcome.update(await run(engine, "{ one two both { a b } }"))

        nursery.start_soon(go)
        await trio.testing.wait_all_tasks_blocked()
        release.set()  # all four resolvers were waiting at once
    assert outcome == {"data": {"one": 1, "two": 2, "both": {"a": 1, "b": 2}}, "errors": []}


async def test_async_list_items() -> None:
    outcome = await run(Engine(make_app([])), "{ items }")
    assert outcome == {"data": {"items": [0, 1, 2, 3, 4]}, "errors": []}


async def test_a_failing_non_null_sibling_cancels_the_others() -> None:
    log: list[str] = []
    outcome = await run(Engine(make_app(log)), "{ boom three }")
    assert outcome == {"data": None, "errors": ["boom"]}
    assert log == ["three cancelled"]


async def test_outer_cancellation_reaches_resolvers() -> None:
    log: list[str] = []
    engine = Engine(make_app(log))
    with trio.move_on_after(0.05) as scope:
        await run(engine, "{ one three }")
    assert scope.cancelled_caught
    assert log == ["three cancelled"]


async def test_trio_gather_raises_the_bare_first_exception() -> None:
    async def fail() -> None:
        raise KeyError("first")

    with pytest.raises(KeyError):
        await trio_gather(fail(), trio.sleep_forever())


def test_building_an_engine_installs_the_trio_gather() -> None:
    Engine(make_app([]))
    assert _trio_gather.installed()
    Engine(make_app([]))  # idempotent
    assert _trio_gather.installed()


def test_graphql_core_gather_has_the_shape_we_replace() -> None:
    assert _trio_gather.check(gather_with_cancel) is gather_with_cancel


def test_a_missing_gather_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(graphql_executor, _trio_gather.PATCHED)
    with pytest.raises(GraphQLCoreIncompatible, match="gather_with_cancel is missing"):
        _trio_gather.install()


def test_a_gather_with_another_signature_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def gather(awaitables: list[Any], *, cancel: bool = True) -> list[Any]:
        return []

    monkeypatch.setattr(graphql_executor, _trio_gather.PATCHED, gather)
    with pytest.raises(GraphQLCoreIncompatible, match="unexpected signature"):
        Engine(make_app([]))


def test_asyncio_users_of_graphql_core_still_work() -> None:
    app = App("type Query { a: Int, b: Int }")

    async def value(*_: Any) -> int:
        await asyncio.sleep(0)
        return 7

    result = asyncio.run(graphql(app.schema, "{ a b }", root_value={"a": value, "b": value}))
    assert result.data == {"a": 7, "b": 7}


def test_documents_are_parsed_once_and_errors_cached() -> None:
    engine = Engine(make_app([]))
    for _ in range(3):
        assert isinstance(engine.prepare("{ one }", None, None, None), Prepared)
        assert isinstance(engine.prepare("{ nope }", None, None, None), list)
    assert (engine.documents.misses, engine.documents.hits) == (2, 4)


def test_depth_limit() -> None:
    engine = Engine(make_app([]), max_depth=3)
    assert isinstance(engine.prepare("{ deep { deep { n } } }", None, None, None), Prepared)
    errors = engine.prepare("{ deep { deep { deep { n } } } }", None, None, None)
    assert isinstance(errors, list)
    assert "limit is 3" in errors[0].message
