"""The linear limits (depth, fields, cost) and the documents they must let through."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path
from typing import Any

import pytest
from graphql import GraphQLSchema, build_schema, get_introspection_query, parse

from meshsub_trio._execution._documents import DocumentCache
from meshsub_trio._execution._limits import CEILING, Limits, check_limits
from meshsub_trio.examples.countdown import app as countdown_app
from meshsub_trio.meshery import create_app

from ..meshery.test_documents import UI_SUBSCRIPTIONS
from ..meshery.test_e2e_documents import UI_DOCUMENTS

SCHEMA = build_schema(
    """
    type Query {
      user: User
      users(first: Int, after: String): [User!]!
      paged(limit: Int = 3): [User]
      tags: [String!]!
    }
    type User { id: ID! name: String friends(first: Int): [User!]! best: User }
    """
)

NO_LIMITS = Limits(max_depth=None, max_fields=None, max_cost=None)


def measure(query: str, schema: GraphQLSchema = SCHEMA) -> tuple[int, int, int]:
    """(depth, fields, cost) of the only operation in *query*, read back from the
    errors that limits of zero produce."""
    limits = Limits(max_depth=0, max_fields=0, max_cost=0)
    messages = [error.message for error in check_limits(schema, parse(query), limits)]
    assert len(messages) == 3, messages
    depth, fields, cost = (int(m.split(" ")[3]) for m in messages)
    return depth, fields, cost


def exponential(levels: int, leaf: str = "__typename") -> str:
    """Each fragment spreads the next twice: 2**levels fields in under 1 KB."""
    parts = ["{ ...F0 }"]
    for i in range(levels):
        parts.append(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}")
    parts.append(f"fragment F{levels} on Query {{ {leaf} }}")
    return " ".join(parts)


def test_depth_fields_and_cost_of_plain_fields() -> None:
    assert measure("{ user { id name } }") == (2, 3, 3)
    assert measure("{ a: user { id } b: user { id } }") == (2, 4, 4)


def test_a_list_multiplies_what_it_holds_by_its_size_argument() -> None:
    # users(first: 5): 1 + 5 * (id + name) = 11
    assert measure("{ users(first: 5) { id name } }")[2] == 11
    # nested: 1 + 5 * (1 + 4 * 1) = 26
    assert measure("{ users(first: 5) { friends(first: 4) { id } } }")[2] == 26


def test_without_a_literal_size_a_list_counts_the_default_or_the_schema_default() -> None:
    assert measure("{ users { id } }")[2] == 1 + 10
    assert measure("query($n: Int) { users(first: $n) { id } }")[2] == 1 + 10
    assert measure("{ paged { id } }")[2] == 1 + 3  # limit: Int = 3
    assert measure("{ tags }")[2] == 1  # a list of scalars costs its field only


def test_fragments_are_expanded_where_they_are_spread() -> None:
    query = "{ users(first: 2) { ...U } user { ...U } } fragment U on User { id best { id } }"
    # users: 1 + 2 * 3 = 7; user: 1 + 3 = 4
    assert measure(query) == (3, 8, 11)


def test_inline_fragments_count_their_fields() -> None:
    assert measure("{ user { ... on User { id } ... { name } } }") == (2, 3, 3)


def test_exponential_fragments_are_counted_in_linear_time() -> None:
    document = parse(exponential(60))
    started = time.perf_counter()
    errors = check_limits(countdown_app.schema, document, Limits())
    elapsed = time.perf_counter() - started
    assert elapsed < 0.05, f"{elapsed:.3f} s"
    assert [e.message for e in errors] == [
        f"Operation 'anonymous' selects more than {CEILING} fields; "
        "the limit is 2000 (max_fields).",
        f"Operation 'anonymous' costs more than {CEILING} (each field 1, times the sizes "
        "of the lists above it); the limit is 100000 (max_cost).",
    ]


def test_exact_counts_through_fragments() -> None:
    assert measure(exponential(10), countdown_app.schema) == (1, 1024, 1024)


def test_huge_size_arguments_saturate() -> None:
    digits = "9" * 5000  # int() would refuse to convert this many digits
    query = f"{{ users(first: {digits}) {{ friends(first: {digits}) {{ id }} }} }}"
    errors = check_limits(SCHEMA, parse(query), Limits())
    assert [e.message.split(" (")[0] for e in errors] == [
        f"Operation 'anonymous' costs more than {CEILING}"
    ]
    assert measure("{ users(first: -3) { id } }")[2] == 1


def test_a_long_fragment_chain_needs_no_deep_recursion() -> None:
    n = 5000  # deeper than Python's recursion limit
    parts = ["{ ...F0 }"]
    parts += [f"fragment F{i} on Query {{ ...F{i + 1} }}" for i in range(n)]
    parts.append(f"fragment F{n} on Query {{ user {{ id }} }}")
    assert measure(" ".join(parts)) == (2, 2, 2)


def test_invalid_documents_are_left_to_graphql_core() -> None:
    """Unknown fields, types and fragments and cycles count as they can; no crash."""
    queries = [
        "{ nope { deeper } user { alsoNope } }",
        "{ ...Missing user { id } }",
        "{ ...A } fragment A on Nope { x }",
        "{ ...A } fragment A on Query { user { id } ...B } fragment B on Query { ...A }",
        "{ ... on Nope { user { id } } }",
    ]
    for query in queries:
        assert check_limits(SCHEMA, parse(query), NO_LIMITS) == []
        assert check_limits(SCHEMA, parse(query), Limits()) == []


def test_each_operation_is_checked_and_named() -> None:
    query = (
        "query Small { user { id } } query Big { users(first: 100) { friends(first: 100) { id } } }"
    )
    errors = check_limits(SCHEMA, parse(query), Limits(max_cost=1000))
    assert [e.message for e in errors] == [
        "Operation 'Big' costs 10101 (each field 1, times the sizes of the lists above it); "
        "the limit is 1000 (max_cost)."
    ]
    assert errors[0].locations is not None


def test_depth_message_keeps_its_wording() -> None:
    errors = check_limits(SCHEMA, parse("query D { user { best { id } } }"), Limits(max_depth=2))
    assert [e.message for e in errors] == ["Operation 'D' is 3 levels deep; the limit is 2."]


# ---- the documents real clients send must pass the defaults -------------------


def introspection_queries() -> list[str]:
    everything = {
        "descriptions": True,
        "specified_by_url": True,
        "directive_is_repeatable": True,
        "schema_description": True,
        "input_value_deprecation": True,
    }
    return [get_introspection_query(), get_introspection_query(**everything)]


def bench_workload() -> Any:
    """scripts/bench/workload.py (not a package): its schema and documents."""
    path = Path(__file__).parents[2] / "scripts" / "bench" / "workload.py"
    spec = importlib.util.spec_from_file_location("bench_workload", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("schema_name", ["countdown", "meshery"])
def test_graphiql_introspection_passes_the_defaults(schema_name: str) -> None:
    schema = countdown_app.schema if schema_name == "countdown" else create_app().schema
    cache = DocumentCache(schema, limits=Limits(), max_tokens=2_000)
    for query in introspection_queries():
        document = cache.prepare(query)
        assert document.errors == () and document.node is not None


def test_meshery_ui_documents_pass_the_defaults() -> None:
    cache = DocumentCache(create_app().schema, limits=Limits(), max_tokens=2_000)
    queries = [doc.query for doc in UI_DOCUMENTS.values()]
    queries += [query for query, _variables in UI_SUBSCRIPTIONS.values()]
    for query in queries:
        document = cache.prepare(query)
        assert document.errors == (), (query, document.errors)


def test_bench_documents_pass_the_defaults() -> None:
    workload = bench_workload()
    cache = DocumentCache(build_schema(workload.SDL), limits=Limits(), max_tokens=2_000)
    for query in (workload.SUBSCRIPTION, workload.PUBLISH):
        assert cache.prepare(query).errors == ()
