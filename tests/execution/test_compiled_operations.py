"""Queries and mutations on compiled plans, async resolvers included: = graphql-core.

Async data (fields through async resolvers, awaitable list items, async
``resolve_type`` and ``is_type_of``) runs under Trio through the engine's
gather; with siblings really concurrent, the order of their errors is Trio's
to choose (for graphql-core as well), so data is compared byte for byte and
errors as a sorted list. A mutation's root fields run one after the other.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest
import trio
from graphql import parse, validate
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshsub_trio import App, Context
from meshsub_trio._encoding import dumps
from meshsub_trio._execution import Engine, Prepared
from meshsub_trio._execution._compiler import compile_plan
from meshsub_trio._execution._trio_gather import install
from meshsub_trio.meshery import LOCAL_USER, create_app

from ..meshery.test_documents import UI_QUERIES
from .abstract_schema import SCHEMA, asynchronous, documents, materialize, roots

install()

#: Trio's scheduler shuffles each batch of tasks with this generator (private).
_scheduler_random = trio._core._run._r  # type: ignore[attr-defined]


def sorted_outcome(result: Any) -> bytes:
    """Data as encoded; errors sorted (concurrent siblings fail in any order)."""
    errors = sorted(dumps(error.formatted) for error in result.errors or ())
    return dumps({"data": result.data, "errors": [orjson.loads(e) for e in errors]})


def both_async(text: str, marked: Any) -> tuple[bytes, bytes]:
    """The compiled and graphql-core results of *text* over fresh copies of
    *marked*, each in its own Trio run from the same scheduler state: which of
    two failing non-null siblings fails first is Trio's choice, so both runs
    get the same choices (Trio's scheduler randomness, seeded by Hypothesis)."""
    state = _scheduler_random.getstate()
    results = []
    for compiled in (True, False):
        _scheduler_random.setstate(state)
        results.append(trio.run(_one_run, text, marked, compiled))
    return results[0], results[1]


async def _one_run(text: str, marked: Any, compiled: bool) -> bytes:
    if True:
        root = materialize(marked)
        executor = ExecutorThrowingOnIncremental.build(SCHEMA, parse(text), root, "ctx")
        assert not isinstance(executor, list), executor
        if compiled:
            result: Any = compile_plan(executor).run(root, "ctx", executor.async_helpers)
        else:
            result = executor.execute_operation()
        if not hasattr(result, "data"):
            result = await result
        return sorted_outcome(result)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data(), documents())
def test_async_queries_match_graphql_core(data: Any, text: str) -> None:
    assume(not validate(SCHEMA, parse(text)))
    marked = data.draw(roots().flatmap(asynchronous))
    compiled, expected = both_async(text, marked)
    assert compiled == expected


@settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.data(), documents("mutation"))
def test_async_mutations_match_graphql_core(data: Any, text: str) -> None:
    assume(not validate(SCHEMA, parse(text)))
    marked = data.draw(roots().flatmap(asynchronous))
    compiled, expected = both_async(text, marked)
    assert compiled == expected


async def test_one_async_path_keeps_graphql_cores_error_order() -> None:
    """With one pending branch at a time the order is fixed: compared exactly."""
    from .abstract_schema import Later

    marked = {
        "named": [Later({"__typename": "Dog", "name": Later(5), "friends": [None, Later(1)]})],
        "node": {"kind": "async", "lives": Later(ValueError("late")), "id": "n"},
    }
    text = "{ named { name ... on Dog { friends { name } } } node { ... on Cat { lives } id } }"
    outcomes = []
    for compiled in (True, False):
        root = materialize(marked)
        executor = ExecutorThrowingOnIncremental.build(SCHEMA, parse(text), root, "ctx")
        assert not isinstance(executor, list)
        result: Any = (
            compile_plan(executor).run(root, "ctx", executor.async_helpers)
            if compiled
            else executor.execute_operation()
        )
        result = await result
        outcomes.append(
            dumps({"data": result.data, "errors": [e.formatted for e in result.errors]})
        )
    assert outcomes[0] == outcomes[1]
    assert b"late" in outcomes[0] and b'"data":{"named"' in outcomes[0]


SERIAL_SDL = """
type Query { a: Int b: Int c: Int }
type Mutation { a: Int b: Int c: Int }
"""


def _logging_app(log: list[str]) -> App:
    def step(name: str) -> Any:
        async def resolve(_root: Any, _info: Any) -> int:
            log.append(f"start {name}")
            for _ in range(3):
                await trio.sleep(0)
            log.append(f"end {name}")
            return len(log)

        return resolve

    resolvers = {kind: {name: step(name) for name in "abc"} for kind in ("Query", "Mutation")}
    return App(SERIAL_SDL, resolvers=resolvers)


@pytest.mark.parametrize("compiled", [True, False])
async def test_mutation_root_fields_run_one_after_the_other(compiled: bool) -> None:
    log: list[str] = []
    engine = Engine(_logging_app(log), compiled=compiled)
    prepared = engine.prepare("mutation { a b c }", None, None, None)
    assert isinstance(prepared, Prepared)
    result = await engine.execute(prepared)
    assert result.data == {"a": 2, "b": 4, "c": 6}
    assert log == ["start a", "end a", "start b", "end b", "start c", "end c"]
    assert engine.plans.compiled_events == int(compiled)
    log.clear()
    prepared = engine.prepare("query { a b c }", None, None, None)
    assert isinstance(prepared, Prepared)
    await engine.execute(prepared)  # a query's root fields run concurrently
    assert log[:3] == ["start a", "start b", "start c"] or log[:3] != log[::2]


def _masked(payload: bytes) -> bytes:
    return re.sub(rb'"ref":"[0-9a-f]+"', b'"ref":""', payload)


UI_VARIABLES = {
    "selector": {"page": "0", "pageSize": "10"},
    "profileID": "p",
    "connectionID": "c",
    "ids": ["a"],
    "input": {"targetStatus": "ENABLED", "contextID": "c"},
}


async def _ui_payloads(compiled: bool) -> list[bytes]:
    engine = Engine(create_app(simulator=False), compiled=compiled)
    payloads = []
    for text in UI_QUERIES:
        operation = parse(text).definitions[0]
        names = {v.variable.name.value for v in operation.variable_definitions}  # type: ignore[attr-defined]
        variables = {name: UI_VARIABLES.get(name) for name in names}
        if "Summary" in text:
            variables["selector"] = {"type": "components"}
        prepared = await engine.prepare_async(text, variables, None, Context(auth=LOCAL_USER))
        assert isinstance(prepared, Prepared), prepared
        result = await engine.execute(prepared)
        payloads.append(_masked(dumps({"data": result.data, "errors": result.errors and [
            e.formatted for e in result.errors]})))  # fmt: skip
    counters = engine.plans
    if compiled:
        assert (counters.compiled_events, counters.fallback_events) == (len(UI_QUERIES), 0)
    return payloads


async def test_meshery_ui_queries_match_with_the_switch_off() -> None:
    assert await _ui_payloads(True) == await _ui_payloads(False)


async def test_introspection_falls_back_and_is_counted() -> None:
    engine = Engine(App(SERIAL_SDL))
    for _ in range(2):
        prepared = await engine.prepare_async(
            "{ __schema { queryType { name } } }", None, None, None
        )
        assert isinstance(prepared, Prepared)
        result = await engine.execute(prepared)
        assert result.data == {"__schema": {"queryType": {"name": "Query"}}}
    counters = engine.plans
    assert (counters.compiled_events, counters.fallback_events, counters.refused) == (0, 2, 1)
