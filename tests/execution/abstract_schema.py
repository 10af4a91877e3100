"""A test schema with every abstract-type construct, and documents and data over it.

Interfaces (one with a custom ``resolve_type`` that can answer wrongly or
raise, one left to graphql-core's default: ``__typename``, then
``is_type_of``), unions, object types with ``is_type_of``, abstract lists
with non-null items, and resolvers that may be sync or async.
"""

from __future__ import annotations

from typing import Any

import trio
from graphql import (
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLUnionType,
    build_schema,
    is_leaf_type,
)
from hypothesis import strategies as st

SDL = """
interface Node { id: ID! }
interface Named { name: String }
type Dog implements Node & Named { id: ID! name: String barks: Boolean friends: [Named] best: Node! }
type Cat implements Node & Named { id: ID! name: String lives: Int enemy: Pet }
type Robot implements Node { id: ID! model: String owner: Named }
union Pet = Dog | Cat
union Thing = Dog | Robot
type Query {
  node: Node
  named: [Named]
  pets: [Pet!]
  thing: Thing
  things: [Thing]!
  petNN: Pet!
  nodes: [Node!]!
}
type Mutation { touch(n: Int!): Node, first: Named, second: Pet }
"""


def _node_type(value: Any, _info: Any, _type: Any) -> Any:
    """Node's resolver: the value's ``kind`` key, whatever it holds (wrong ones too)."""
    kind = value.get("kind", "Dog") if isinstance(value, dict) else None
    if kind == "raise":
        raise GraphQLError("no type for you", extensions={"t": 1})
    if kind == "async":
        return _later("Cat")
    return kind


def _thing_type(value: Any, _info: Any, _type: Any) -> Any:
    if isinstance(value, dict) and "model" in value:
        return "Robot"
    if isinstance(value, dict) and value.get("__typename") == "boom":
        raise ValueError("thing type failed")
    return "Dog" if isinstance(value, dict) else None


async def _later(value: Any) -> Any:
    """*value* after a checkpoint: a resolver that really suspends."""
    await trio.sleep(0)
    if isinstance(value, Exception):
        raise value
    return value


def _is_cat(value: Any, _info: Any) -> bool:
    return isinstance(value, dict) and "lives" in value


def _is_robot(value: Any, _info: Any) -> bool:
    if isinstance(value, dict) and value.get("model") == "raise":
        raise RuntimeError("is_type_of failed")
    if isinstance(value, dict) and value.get("model") == "async":
        return _later(True)
    return isinstance(value, dict) and "model" in value


def make_schema() -> Any:
    schema = build_schema(SDL)
    node = schema.type_map["Node"]
    thing = schema.type_map["Thing"]
    assert isinstance(node, GraphQLInterfaceType) and isinstance(thing, GraphQLUnionType)
    node.resolve_type = _node_type
    thing.resolve_type = _thing_type
    schema.type_map["Cat"].is_type_of = _is_cat  # type: ignore[attr-defined]
    schema.type_map["Robot"].is_type_of = _is_robot  # type: ignore[attr-defined]
    return schema


SCHEMA = make_schema()

FRAGMENTS = {
    "FD": "fragment FD on Dog { id name barks }",
    "FN": "fragment FN on Named { name __typename }",
    "FP": "fragment FP on Pet { __typename ... on Cat { lives } }",
    "FT": "fragment FT on Thing { ... on Robot { model } ... on Node { id } }",
}
#: The fragments each composite type may spread (their conditions overlap).
SPREADS = {
    "Dog": ["FD", "FN", "FP", "FT"], "Cat": ["FN", "FP"], "Robot": ["FT"],
    "Node": ["FD", "FN", "FP", "FT"], "Named": ["FD", "FN", "FP", "FT"],
    "Pet": ["FD", "FN", "FP", "FT"], "Thing": ["FD", "FN", "FP", "FT"],
}  # fmt: skip
CONDITIONS = {
    "Dog": ["Dog", "Node", "Named", "Pet", "Thing"], "Cat": ["Cat", "Node", "Named", "Pet"],
    "Robot": ["Robot", "Node", "Thing"], "Node": ["Dog", "Cat", "Robot", "Named", "Pet"],
    "Named": ["Dog", "Cat", "Node", "Pet"], "Pet": ["Dog", "Cat", "Named", "Node"],
    "Thing": ["Dog", "Robot", "Node"],
}  # fmt: skip


def _named_type(type_: Any) -> Any:
    while hasattr(type_, "of_type"):
        type_ = type_.of_type
    return type_


@st.composite
def selections(draw: Any, type_name: str, depth: int, used: set[str]) -> str:
    """A selection set on *type_name*; *used* collects the fragments it spreads."""
    composite = SCHEMA.type_map[type_name]
    fields = [*list(getattr(composite, "fields", {})), "__typename"]
    parts = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["field", "field", "inline", "spread"]))
        if kind == "spread":
            name = draw(st.sampled_from(SPREADS[type_name]))
            used.add(name)
            parts.append(f"...{name}")
        elif kind == "inline" and depth < 3:
            condition = draw(st.sampled_from(CONDITIONS[type_name]))
            inner = draw(selections(condition, depth + 1, used))
            parts.append(f"... on {condition} {{ {inner} }}")
        else:
            name = draw(st.sampled_from(fields))
            alias = draw(st.sampled_from(["", "", "a: "]))
            if name == "__typename":
                parts.append(f"{alias}__typename")
                continue
            field_type = _named_type(composite.fields[name].type)  # type: ignore[attr-defined]
            body = ""
            if not is_leaf_type(field_type):
                if depth >= 3:
                    body = " { __typename }"
                else:
                    body = f" {{ {draw(selections(field_type.name, depth + 1, used))} }}"
            parts.append(f"{alias}{name}{body}")
    return " ".join(parts)


@st.composite
def documents(draw: Any, operation: str = "query") -> str:
    used: set[str] = set()
    root = SCHEMA.query_type if operation == "query" else SCHEMA.mutation_type
    assert root is not None
    parts = []
    for _ in range(draw(st.integers(1, 3))):
        name = draw(st.sampled_from(list(root.fields)))
        args = "(n: 1)" if name == "touch" else ""
        inner = draw(selections(_named_type(root.fields[name].type).name, 1, used))
        parts.append(f"{draw(st.sampled_from(['', 'x: ', 'y: ']))}{name}{args} {{ {inner} }}")
    text = f"{operation} {{ {' '.join(parts)} }}"
    return " ".join([text, *(FRAGMENTS[name] for name in sorted(used))])


TYPENAMES = st.sampled_from(["Dog", "Cat", "Robot", "Nope", "Named", "Pet", "boom", 5, None])
KINDS = st.sampled_from(["Dog", "Cat", "Robot", "Nope", "Named", "raise", "async", 7, None])
LEAVES = st.one_of(st.none(), st.text(max_size=3), st.integers(-3, 3), st.booleans())


def values(depth: int = 0) -> Any:
    """Objects of the schema's types, right and wrong: ``__typename``, ``kind``
    (Node's resolver), ``lives`` and ``model`` (``is_type_of``), missing keys."""
    children = st.none() if depth > 2 else st.deferred(lambda: values(depth + 1))
    keys = {
        "__typename": TYPENAMES, "kind": KINDS, "id": LEAVES, "name": LEAVES,
        "barks": LEAVES, "lives": LEAVES, "model": st.one_of(LEAVES, st.sampled_from(["raise", "async"])),
        "friends": st.one_of(st.none(), st.lists(children, max_size=2)),
        "best": children, "enemy": children, "owner": children,
    }  # fmt: skip
    objects = st.fixed_dictionaries({}, optional=keys)
    return st.one_of(objects, objects, objects, LEAVES, st.just(ValueError("returned")))


def roots() -> Any:
    lists = st.lists(values(), max_size=3)
    return st.fixed_dictionaries(
        {},
        optional={
            "node": values(), "named": st.one_of(lists, LEAVES), "pets": lists,
            "thing": values(), "things": st.one_of(lists, st.none()), "petNN": values(),
            "nodes": lists, "touch": values(), "first": values(), "second": values(),
        },
    )  # fmt: skip


class Later:
    """A value the data gives through an async resolver (or as an awaitable item)."""

    def __init__(self, value: Any) -> None:
        self.value = value


def asynchronous(data: Any) -> Any:
    """*data* with some values marked :class:`Later` (drawn by Hypothesis)."""
    return _marked(data)


def _marked(data: Any) -> Any:
    if isinstance(data, dict):
        items = {key: _marked(value) for key, value in data.items()}
        return st.fixed_dictionaries(items).flatmap(_maybe_later)
    if isinstance(data, list):
        return st.tuples(*(_marked(item) for item in data)).map(list).flatmap(_maybe_later)
    return _maybe_later(data)


def _maybe_later(value: Any) -> Any:
    return st.sampled_from([value, value, Later(value)])


class Awaitable:
    """An awaitable list item that can be awaited again (fields may repeat)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Any:
        return _later(self.value).__await__()


def materialize(data: Any, item: bool = False) -> Any:
    """Fresh data for one execution: a Later field becomes an async callable the
    default resolver calls, a Later list item an :class:`Awaitable`."""
    if isinstance(data, Later):
        inner = materialize(data.value)
        if item:
            return Awaitable(inner)
        return lambda _info, **_args: _later(inner)
    if isinstance(data, dict):
        return {key: materialize(value) for key, value in data.items()}
    if isinstance(data, list):
        return [materialize(value, item=True) for value in data]
    return data
