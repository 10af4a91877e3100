"""The Meshery UI documents and the bench document: compiled = graphql-core, byte for byte.

Each of the eight UI subscriptions (with the UI's variables) is executed over
values Hypothesis draws from the schema's own types (mostly well-typed, with
nulls, wrong types and missing keys mixed in), through meshsub's subscription
resolver (the event is the field's value), and over the Meshery model's own
snapshots; the bench document over its events. Then through the engine:
compiled by default, graphql-core with ``compiled=False``, same payload bytes.
"""

from __future__ import annotations

import re
from datetime import UTC
from typing import Any

import pytest
import trio
from graphql import build_schema, parse
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from meshsub_trio import App
from meshsub_trio._execution import Engine
from meshsub_trio._execution._compiler import compile_plan
from meshsub_trio.meshery import create_app

from ..meshery.test_documents import UI_SUBSCRIPTIONS
from .test_compiled_differential import RIGHT, outcome, typed

RIGHT.update(
    Time=st.datetimes(timezones=st.just(UTC)),
    Map=st.dictionaries(st.text(max_size=3), st.integers(-9, 9), max_size=2),
    Any=st.one_of(st.integers(), st.text(max_size=3), st.none()),
)

MESHERY = create_app(simulator=False)
SCHEMA = MESHERY.schema

#: ``.example()`` draws the engine tests' samples outside ``@given``.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.NonInteractiveExampleWarning")

BENCH_SDL = """
type Query { ok: Boolean! }
type Event { id: Int! ts: Float! payload: String! }
type Subscription { events(topic: String!): Event! }
"""
BENCH_DOCUMENT = "subscription($topic: String!) { events(topic: $topic) { id ts payload } }"


def executor_for(schema: Any, text: str, variables: dict[str, Any]) -> Any:
    executor = ExecutorThrowingOnIncremental.build(schema, parse(text), None, None, variables)
    assert not isinstance(executor, list), executor
    return executor


def assert_same(executor: Any, event: Any) -> bytes:
    plan = compile_plan(executor)
    expected = outcome(executor.build_per_event_executor(event).execute_operation(False))
    assert outcome(plan.run(event, None, executor.async_helpers)) == expected
    return expected


def field_type(name: str) -> Any:
    """The type of the subscription field a UI document selects."""
    text, _ = UI_SUBSCRIPTIONS[name]
    operation = parse(text).definitions[0]
    field = operation.selection_set.selections[0]  # type: ignore[attr-defined]
    return SCHEMA.subscription_type.fields[field.name.value].type  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(UI_SUBSCRIPTIONS))
def test_ui_document_compiles(name: str) -> None:
    text, variables = UI_SUBSCRIPTIONS[name]
    assert compile_plan(executor_for(SCHEMA, text, variables)) is not None


@pytest.mark.parametrize("name", sorted(UI_SUBSCRIPTIONS))
def test_ui_document_over_typed_data(name: str) -> None:
    text, variables = UI_SUBSCRIPTIONS[name]
    executor = executor_for(SCHEMA, text, variables)

    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(typed(field_type(name)), typed(field_type(name), clean=True)))
    def check(value: Any) -> None:
        assert_same(executor, value)

    check()
    clean = typed(field_type(name), clean=True).example()
    assert b'"errors":[]' in assert_same(executor, clean)  # the data reaches past errors


BENCH = build_schema(BENCH_SDL)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "events": st.fixed_dictionaries(
                {},
                optional={
                    "id": st.one_of(st.integers(), st.text(max_size=2), st.none()),
                    "ts": st.one_of(st.floats(), st.integers(), st.none()),
                    "payload": st.one_of(st.text(max_size=5), st.integers(), st.none()),
                },
            )
        },
    )
)
@settings(max_examples=150, deadline=None)
def test_bench_document(event: dict[str, Any]) -> None:
    assert_same(executor_for(BENCH, BENCH_DOCUMENT, {"topic": "t"}), event)


def _engine_payloads(compiled: bool, name: str, values: list[Any]) -> list[bytes]:
    engine = Engine(MESHERY, compiled=compiled)
    text, variables = UI_SUBSCRIPTIONS[name]
    prepared = engine.prepare(text, variables, None, None, "operation 1")
    assert not isinstance(prepared, list)
    payloads = [engine.event_payload_now(prepared, value) for value in values]
    assert all(isinstance(payload, bytes) for payload in payloads)
    counters = engine.plans
    if compiled:
        assert (counters.compiled_events, counters.fallback_events) == (len(values), 0)
    else:
        assert counters.compiled_events == counters.fallback_events == 0
    # Masked errors carry a random log reference: equal up to it.
    return [re.sub(rb'"ref":"[0-9a-f]+"', b'"ref":""', payload) for payload in payloads]  # type: ignore[arg-type]


@pytest.mark.parametrize("name", sorted(UI_SUBSCRIPTIONS))
def test_engine_payloads_match_with_the_switch_off(name: str) -> None:
    values = typed(field_type(name))
    clean = typed(field_type(name), clean=True)
    samples = [values.example() for _ in range(5)] + [clean.example() for _ in range(2)]
    assert _engine_payloads(True, name, samples) == _engine_payloads(False, name, samples)


async def test_an_async_resolver_runs_in_the_plan() -> None:
    async def slow(_root: Any, _info: Any) -> int:
        await trio.sleep(0)
        return 1

    app = App(BENCH_SDL, resolvers={"Event": {"id": slow}})
    engine = Engine(app)
    prepared = engine.prepare(BENCH_DOCUMENT, {"topic": "t"}, None, None)
    assert not isinstance(prepared, list)
    result = engine.event_payload_now(prepared, {"events": {"id": 0, "ts": 1.0, "payload": "p"}})
    assert not isinstance(result, bytes)  # the plan's coroutine, to be awaited
    assert await result == b'{"data":{"events":{"id":1,"ts":1.0,"payload":"p"}}}'
    assert prepared.plan is not None
    assert (engine.plans.compiled_events, engine.plans.fallback_events) == (1, 0)


def test_plan_is_cached_per_document_and_variables() -> None:
    engine = Engine(App(BENCH_SDL))
    plans = []
    for topic in ("a", "a", "b"):
        prepared = engine.prepare(BENCH_DOCUMENT, {"topic": topic}, None, None)
        assert not isinstance(prepared, list)
        engine.event_payload_now(prepared, {"events": {"id": 1, "ts": 1.0, "payload": "p"}})
        plans.append(prepared.plan)
    assert plans[0] is plans[1] is not None
    assert plans[2] is not plans[0]
