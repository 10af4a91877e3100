"""What a compiled plan needs while it runs: per-event state, cheap paths, bail-outs.

A compiled plan (see ``_compiler``) runs the closures built for one document
and set of variables. Response paths are kept as plain tuples
``(prev, key, typename)`` (a tuple costs a tenth of graphql-core's ``Path``)
and turned into lists or ``Path`` objects only when an error or a resolver
needs one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from graphql import ExecutionResult, GraphQLError
from graphql.pyutils import Path

#: A response path: None at the root, else (parent path, key, parent type name).
LazyPath = tuple[Any, str | int, str | None] | None

#: Runs one object's selection set: (source, object path, run) -> response map.
ObjectFn = Callable[[Any, LazyPath, "Run"], dict[str, Any]]

#: Resolves and completes one field, or completes one value: (value, path, run).
ValueFn = Callable[[Any, LazyPath, "Run"], Any]

#: Types whose values are never awaitable: skip graphql-core's slower check.
PLAIN: frozenset[type] = frozenset({str, int, float, bool, type(None), dict, list, tuple})


class Bail(BaseException):
    """A resolver gave an awaitable or an async iterable: the plan runs only
    synchronous work, so graphql-core executes this event instead. A
    BaseException, so the field error handlers of the plan let it through."""


def bail(value: Any) -> Bail:
    """The Bail for *value*, closing it first if it is a coroutine nobody will await."""
    close = getattr(value, "close", None)
    if close is not None and hasattr(value, "cr_frame"):
        close()
    return Bail()


class Run:
    """The state of one execution: the errors so far and what resolvers see."""

    __slots__ = ("context", "errors", "helpers", "root")

    def __init__(self, root: Any, context: Any, helpers: Any) -> None:
        self.root = root
        self.context = context
        self.helpers = helpers
        self.errors: list[GraphQLError] = []


def as_list(path: LazyPath) -> list[str | int]:
    """The keys of *path*, root first (graphql-core's ``Path.as_list``)."""
    keys: list[str | int] = []
    while path is not None:
        path, key, _ = path
        keys.append(key)
    keys.reverse()
    return keys


def to_path(path: LazyPath) -> Path | None:
    """*path* as graphql-core's linked ``Path``, for a resolver's info."""
    links = []
    while path is not None:
        links.append(path)
        path = path[0]
    result: Path | None = None
    for _, key, typename in reversed(links):
        result = Path(result, key, typename)
    return result


class Plan:
    """A compiled subscription selection: run once per event, synchronously."""

    __slots__ = ("root",)

    def __init__(self, root: ObjectFn) -> None:
        self.root = root

    def run(self, event: Any, context: Any, helpers: Any) -> ExecutionResult:
        """graphql-core's result for *event* as root value; raises Bail when a
        resolver needs awaiting."""
        run = Run(event, context, helpers)
        try:
            data: dict[str, Any] | None = self.root(event, None, run)
        except GraphQLError as error:  # a null propagated to the root
            run.errors.append(error)
            data = None
        return ExecutionResult(data, run.errors or None)
