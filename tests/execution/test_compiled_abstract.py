"""Interfaces, unions, ``resolve_type`` and ``is_type_of``: compiled = graphql-core.

Hypothesis writes query documents over ``abstract_schema`` (inline fragments
with type conditions, fragments on interfaces and unions, __typename at every
level) and root values full of wrong type names, resolvers that raise,
answers that are not types, missing ``is_type_of`` keys; the compiled plan
and graphql-core must encode the same response, byte for byte.
"""

from __future__ import annotations

from typing import Any

from graphql import ExecutionResult, parse, validate
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from hypothesis import HealthCheck, assume, given, settings

from meshsub_trio._execution._compiler import compile_plan

from .abstract_schema import SCHEMA, documents, roots
from .test_compiled_differential import outcome


def both(text: str, root: Any, variables: dict[str, Any] | None = None) -> tuple[bytes, bytes]:
    executor = ExecutorThrowingOnIncremental.build(SCHEMA, parse(text), root, "ctx", variables)
    assert not isinstance(executor, list), executor
    plan = compile_plan(executor)
    compiled: Any = plan.run(root, "ctx", executor.async_helpers)
    expected: Any = executor.execute_operation()
    if isinstance(compiled, ExecutionResult) and isinstance(expected, ExecutionResult):
        return outcome(compiled), outcome(expected)
    # An async resolve_type or is_type_of: both run under Trio instead.
    for result in (compiled, expected):
        if not isinstance(result, ExecutionResult):
            result.close()
    from .test_compiled_operations import both_async

    return both_async(text, root)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), roots())
def test_abstract_types_match_graphql_core(text: str, root: Any) -> None:
    assume(not validate(SCHEMA, parse(text)))
    compiled, expected = both(text, root)
    assert compiled == expected


def test_the_random_test_reaches_data() -> None:
    """Every abstract construct on well-typed data gives data, not only errors."""
    dog = {"__typename": "Dog", "kind": "Dog", "id": "d", "name": "Rex", "barks": True}
    cat = {"kind": "Cat", "id": "c", "name": "Tom", "lives": 9}  # Cat by is_type_of
    robot = {"id": "r", "model": "T1", "owner": cat}  # Thing's resolver; Robot's is_type_of
    dog["best"] = cat
    dog["friends"] = [cat, dog.copy()]
    root = {"node": cat, "named": [dog, cat], "pets": [dog, cat], "thing": robot,
            "things": [dog, robot], "petNN": cat, "nodes": [dog, cat, robot]}  # fmt: skip
    text = """query { node { id __typename ... on Cat { lives } ...FN }
      named { __typename ...FD ... on Cat { lives } }
      pets { ...FP ... on Dog { friends { name ... on Dog { best { id } } } } }
      thing { ...FT ... on Robot { owner { name } } } things { __typename }
      petNN { ... on Named { name } } nodes { id } }
      fragment FN on Named { name __typename } fragment FD on Dog { id name barks }
      fragment FP on Pet { __typename ... on Cat { lives } }
      fragment FT on Thing { ... on Robot { model } ... on Node { id } }"""
    compiled, expected = both(text, root)
    assert compiled == expected
    assert b'"errors":[]' in compiled and b'"lives":9' in compiled and b'"model":"T1"' in compiled


WRONG_TYPES = [
    ({"kind": None}, "must resolve to an Object type at runtime for field 'Query.node'. Either"),
    ({"kind": 7}, "received '7', which is not a valid Object type name"),
    ({"kind": "Nope"}, "resolved to a type 'Nope' that does not exist inside the schema"),
    ({"kind": "Named"}, "resolved to a non-object type 'Named'"),
    ({"kind": "raise"}, "no type for you"),
    ({"kind": "Cat"}, "Expected value of type 'Cat' but got: {'kind': 'Cat'}."),
]


def test_each_wrong_runtime_type_is_graphql_cores_error() -> None:
    for value, message in WRONG_TYPES:
        compiled, expected = both("{ node { id } }", {"node": value})
        assert compiled == expected
        assert message.encode() in compiled, (value, compiled)
    compiled, expected = both("{ thing { __typename } }", {"thing": {"model": "raise"}})
    assert compiled == expected and b"is_type_of failed" in compiled
    compiled, expected = both("{ named { name } }", {"named": [{"__typename": "Robot"}]})
    assert compiled == expected
    assert b"Runtime Object type 'Robot' is not a possible type for 'Named'." in compiled


def test_non_null_abstract_items_null_the_list() -> None:
    root = {"pets": [{"__typename": "Dog", "name": "a"}, {"__typename": "Nope"}], "petNN": None}
    compiled, expected = both("{ pets { __typename } x: pets { __typename } }", root)
    assert compiled == expected and b'"pets":null' in compiled
    compiled, expected = both("{ petNN { __typename } node { id } }", root)
    assert compiled == expected and b'"data":null' in compiled
