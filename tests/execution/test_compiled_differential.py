"""Compiled plans give graphql-core's responses, byte for byte, on random documents.

Hypothesis writes subscription documents over a test schema with every
construct the compiler handles (aliases, merged fields, named and inline
fragments, __typename, @skip/@include with literals and variables, arguments
with defaults and variables, lists nested and nullable, non-null at every
level, enums, built-in and custom scalars, custom and default resolvers,
callables on the source) and events full of nulls, wrong types, missing keys,
exceptions and raising resolvers. The plan and graphql-core's executor must
encode the same response: data (key order included) and errors (message,
locations, path, extensions, in order).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from graphql import GraphQLError, build_schema, parse, validate
from graphql.execution.executor_throwing_on_incremental import ExecutorThrowingOnIncremental
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from meshsub_trio._app import _identity
from meshsub_trio._encoding import dumps
from meshsub_trio._execution._compiler import compile_plan

SDL = """
type Query { ok: Boolean }
enum Color { RED GREEN }
scalar Upper
type Item {
  n: Int
  s: String!
  f: Float
  b: Boolean
  id: ID
  color: Color
  upper: Upper
  tags: [String]
  strict: [Int!]!
  nested: [[Int]]
  boom: Int
  boomNN: Int!
  calc(x: Int = 3, y: String): String
  method: String
  child: Item
  req: Item!
  items: [Item]
  itemsNN: [Item!]
}
type Subscription { ev(arg: Int = 1): Item, evNN: Item! }
"""


def _upper(value: Any) -> Any:
    if isinstance(value, str):
        return value.upper()
    if isinstance(value, int):
        return None  # graphql-core: "to return non-nullable value" error
    raise GraphQLError(f"Upper cannot represent {value!r}")


def _calc(_source: Any, info: Any, **args: Any) -> str:
    return f"{sorted(args.items())}|{info.path.as_list()}|{info.parent_type.name}"


def _boom(_source: Any, _info: Any) -> Any:
    raise ValueError("boom")


def _boom_nn(_source: Any, _info: Any) -> Any:
    raise GraphQLError("nn failed", extensions={"code": "NN"})


def make_schema() -> Any:
    schema = build_schema(SDL)
    schema.type_map["Upper"].coerce_output_value = _upper  # type: ignore[attr-defined]
    item = schema.type_map["Item"]
    item.fields["calc"].resolve = _calc  # type: ignore[attr-defined]
    item.fields["boom"].resolve = _boom  # type: ignore[attr-defined]
    item.fields["boomNN"].resolve = _boom_nn  # type: ignore[attr-defined]
    schema.subscription_type.fields["evNN"].resolve = _identity  # type: ignore[union-attr]
    return schema


SCHEMA = make_schema()

LEAVES = [
    "n", "s", "f", "b", "id", "color", "upper", "tags", "strict", "nested",
    "boom", "boomNN", "method", "__typename",
]  # fmt: skip
OBJECTS = ["child", "req", "items", "itemsNN"]
DIRECTIVES = ["", "", "", "@skip(if: true)", "@include(if: false)", "@include(if: true)",
              "@skip(if: $v)", "@include(if: $v)"]  # fmt: skip
FRAGMENT = "fragment F on Item { fn: n fs: s t: __typename fc: calc }"


@st.composite
def selections(draw: Any, depth: int, used: set[str]) -> str:
    """A selection set on Item; *used* collects the variables and fragment it uses."""
    parts = []
    keys: set[str] = set()
    for _ in range(draw(st.integers(1, 7))):
        kind = draw(st.sampled_from(["leaf", "leaf", "calc", "object", "inline", "spread"]))
        directive = draw(st.sampled_from(DIRECTIVES))
        if "$v" in directive:
            used.add("v")
        if kind == "spread":
            used.add("F")
            parts.append(f"...F {directive}")
            continue
        if kind == "inline":
            condition = draw(st.sampled_from(["", "on Item"]))
            inner = draw(selections(depth + 1, used)) if depth < 3 else "n"
            parts.append(f"... {condition} {directive} {{ {inner} }}")
            continue
        if kind == "object" and depth >= 3:
            kind = "leaf"
        name = {"leaf": lambda: draw(st.sampled_from(LEAVES)), "calc": lambda: "calc",
                "object": lambda: draw(st.sampled_from(OBJECTS))}[kind]()  # fmt: skip
        alias = draw(st.sampled_from(["", "", "a1", "a2", "z"]))
        key = alias or name
        if key in keys:
            if draw(st.booleans()):
                continue
            alias, key = "", name  # repeat a field: merged when identical
        keys.add(key)
        prefix = f"{alias}: " if alias else ""
        args = ""
        if name == "calc":
            args = draw(st.sampled_from(["", "(x: 5)", '(y: "q")', "(x: $x)", "(x: $x, y: $y)"]))
            used.update(var for var in ("x", "y") if f"${var}" in args)
        body = f" {{ {draw(selections(depth + 1, used))} }}" if name in OBJECTS else ""
        parts.append(f"{prefix}{name}{args} {directive}{body}")
    return " ".join(parts)


@st.composite
def documents(draw: Any) -> tuple[str, dict[str, Any]]:
    used: set[str] = set()
    body = draw(selections(0, used))
    root = draw(st.sampled_from(["ev", "ev(arg: 7)", "e: evNN", "evNN"]))
    declared = {"v": "$v: Boolean!", "x": "$x: Int", "y": "$y: String = \"dflt\""}
    header = ", ".join(declared[name] for name in sorted(used) if name in declared)
    header = f"({header})" if header else ""
    text = f"subscription S{header} {{ {root} {{ {body} }} }}"
    if "F" in used:
        text += " " + FRAGMENT
    variables: dict[str, Any] = {}
    if "v" in used:
        variables["v"] = draw(st.booleans())
    for name in ("x", "y"):
        if name in used and draw(st.booleans()):
            variables[name] = draw(st.one_of(st.none(), st.integers(-5, 5)) if name == "x"
                                   else st.one_of(st.none(), st.text(max_size=3)))  # fmt: skip
    return text, variables


def _raiser(_info: Any, **_args: Any) -> Any:
    raise RuntimeError("callable failed")


SCALARS = st.one_of(
    st.none(),
    st.integers(-(2**40), 2**40),
    st.integers(-5, 5),
    st.text(max_size=4),
    st.sampled_from(["RED", "GREEN", "BLUE"]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just(ValueError("returned error")),
    st.just(GraphQLError("returned graphql error", extensions={"x": 1})),
    st.just(lambda _info, **args: f"called {sorted(args)}"),
    st.just(_raiser),
)

FIELDS = [name for name in LEAVES + OBJECTS + ["calc", "ev", "evNN"] if name != "__typename"]

VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.tuples(children, children),
        st.dictionaries(st.sampled_from(FIELDS), children, max_size=10),
        st.dictionaries(st.sampled_from(FIELDS), children, max_size=6).map(
            lambda fields: SimpleNamespace(**fields)
        ),
    ),
    max_leaves=25,
)


def outcome(result: Any) -> bytes:
    """The response as the server encodes it (errors unmasked)."""
    errors = [error.formatted for error in result.errors or ()]
    return dumps({"data": result.data, "errors": errors})


def both(text: str, variables: dict[str, Any], event: Any) -> tuple[bytes, bytes]:
    document = parse(text)
    executor = ExecutorThrowingOnIncremental.build(SCHEMA, document, None, "ctx", variables)
    assert not isinstance(executor, list), executor
    plan = compile_plan(executor)
    expected = outcome(executor.build_per_event_executor(event).execute_operation(False))
    return outcome(plan.run(event, "ctx", executor.async_helpers)), expected


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), VALUES)
def test_compiled_matches_graphql_core(doc: tuple[str, dict[str, Any]], event: Any) -> None:
    text, variables = doc
    assume(not validate(SCHEMA, parse(text)))
    compiled, expected = both(text, variables, event)
    assert compiled == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(VALUES, st.deferred(lambda: typed(SCHEMA.type_map["Item"]))))
def test_every_field_over_random_data(value: Any) -> None:
    """One document selecting everything, over data that is mostly the right shape."""
    text = """subscription { ev { ...All child { ...All items { ...All } }
        req { ...All } itemsNN { ...All } } }
      fragment All on Item { n s f b id color upper tags strict nested boom method
        calc calc2: calc(x: 1, y: "w") __typename }"""
    for event in ({"ev": value}, {"ev": {"child": value, "items": [value, None]}}, value):
        compiled, expected = both(text, {}, event)
        assert compiled == expected


def test_a_deep_valid_event_matches() -> None:
    """Proof that the random test reaches data, not only errors: a full event."""
    item = {"n": 1, "s": "x", "f": 1.5, "b": True, "id": 7, "color": "RED", "upper": "u",
            "tags": ["a", None], "strict": [1, 2], "nested": [[1], None, [None]],
            "method": lambda _info: "m"}  # fmt: skip
    event = {"ev": {**item, "child": item, "req": item, "items": [item, None], "itemsNN": [item]}}
    text = """subscription { ev { n s f b id color upper tags strict nested method
      child { n s } req { s } items { n } itemsNN { color } } }"""
    compiled, expected = both(text, {}, event)
    assert compiled == expected
    assert b'"errors":[]' in compiled and b'"method":"m"' in compiled


def test_null_propagates_to_the_nearest_nullable_parent() -> None:
    event = {"ev": {"child": {"req": {"s": None}}, "items": [{"s": None}, {"s": "ok"}]}}
    text = "subscription { ev { child { req { s } } itemsNN: items { s } boomNN n } }"
    compiled, expected = both(text, {}, event)
    assert compiled == expected
    assert b'"data":{"ev":null}' in compiled  # boomNN nulls ev


TRICKY = [
    None, 0, 1, -1, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**70, True, False, 1.0, 1.5,
    float("nan"), float("inf"), "", "3", "x", "RED", "BLUE", [], [1, None], (2,), {"a": 1},
    b"bytes", object(), ValueError("v"), lambda _info: 5,
]  # fmt: skip


def test_every_leaf_type_over_tricky_values() -> None:
    """Wrong types, boundaries and specials for every leaf (serialize errors included)."""
    names = [name for name in LEAVES if name not in ("boom", "boomNN", "__typename")]
    text = "subscription { ev { " + " ".join(names) + " } }"
    for value in TRICKY:
        event = {"ev": dict.fromkeys(names, value)}
        compiled, expected = both(text, {}, event)
        assert compiled == expected, value
        for name in names:  # each alone: a non-null error would hide the others
            compiled, expected = both(f"subscription {{ ev {{ {name} }} }}", {}, event)
            assert compiled == expected, (name, value)


WRONG = st.one_of(
    st.none(),
    st.integers(-(2**33), 2**33),
    st.text(max_size=3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.just(ValueError("returned error")),
    st.lists(st.integers(0, 3), max_size=2),
    st.just({"k": 1}),
)

RIGHT: dict[str, Any] = {
    "String": st.text(max_size=4),
    "ID": st.one_of(st.text(max_size=3), st.integers(0, 99)),
    "Int": st.integers(-(2**31), 2**31 - 1),
    "Float": st.floats(allow_nan=False, allow_infinity=False),
    "Boolean": st.booleans(),
    "Upper": st.text(max_size=3),
}


def typed(type_: Any, depth: int = 0, clean: bool = False) -> Any:
    """Values of a GraphQL output type: mostly right, now and then null or wrong
    (*clean*: always right, every field present)."""
    from graphql import GraphQLEnumType, GraphQLList, GraphQLNonNull, GraphQLObjectType

    if isinstance(type_, GraphQLNonNull):
        return typed(type_.of_type, depth, clean)
    if isinstance(type_, GraphQLList):
        right = st.lists(typed(type_.of_type, depth + 1, clean), max_size=3 if depth < 3 else 1)
    elif isinstance(type_, GraphQLObjectType):
        if depth > 4:
            return st.none()
        fields = {name: typed(field.type, depth + 1, clean) for name, field in type_.fields.items()}
        right = st.fixed_dictionaries(fields) if clean else st.fixed_dictionaries({}, optional=fields)
    elif isinstance(type_, GraphQLEnumType):
        right = st.sampled_from([*type_.values] + ([] if clean else ["BOGUS"]))
    else:
        right = RIGHT.get(type_.name, st.one_of(st.text(max_size=3), st.integers(0, 9),
                                                st.dictionaries(st.text(max_size=2), st.integers())))  # fmt: skip
    return right if clean else st.one_of(right, right, right, right, st.none(), WRONG)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents(), typed(SCHEMA.type_map["Item"]))
def test_compiled_matches_graphql_core_on_typed_data(
    doc: tuple[str, dict[str, Any]], item: Any
) -> None:
    text, variables = doc
    assume(not validate(SCHEMA, parse(text)))
    compiled, expected = both(text, variables, {"ev": item} if "ev(" in text or "ev {" in text else item)
    assert compiled == expected
