"""What a compiled plan needs while it runs: per-run state, cheap paths, pending values.

A compiled plan (see ``_compiler``) runs the closures built for one document
and set of variables. Response paths are kept as plain tuples
``(prev, key, typename)`` (a tuple costs a tenth of graphql-core's ``Path``)
and turned into lists or ``Path`` objects only when an error or a resolver
needs one.

Work that must be awaited (an async resolver, an awaitable list item,
``resolve_type`` or ``is_type_of``) makes the closure return a coroutine of
the plan's own (see ``_pending``) in place of the value, and sets the run's
``pending`` flag. Objects and lists look for pending values among what they
built (``type(value) is PENDING``) only once that flag is set, and settle
them the way graphql-core does: a synchronous run pays one attribute read
per object or list for the asynchronous machinery.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from types import CoroutineType
from typing import Any

from graphql import ExecutionResult, GraphQLError
from graphql.pyutils import Path

#: A response path: None at the root, else (parent path, key, parent type name).
LazyPath = tuple[Any, str | int, str | None] | None

#: Runs one object's selection set: (source, object path, run) -> response map.
ObjectFn = Callable[[Any, LazyPath, "Run"], Any]

#: Resolves and completes one field, or completes one value: (value, path, run).
ValueFn = Callable[[Any, LazyPath, "Run"], Any]

#: Turns a raw exception at a path into a located error: raised, or recorded.
FailFn = Callable[[Exception, LazyPath, "Run"], None]

#: Types whose values are neither awaitable nor callable: skip graphql-core's
#: slower check (and the default resolver's call). Exact types only, each
#: immutable (no ``__await__`` can be added), with no instance ``__dict__``.
PLAIN: frozenset[type] = frozenset(
    {str, int, float, bool, type(None), dict, list, tuple}
    | {datetime, date, time, timedelta, Decimal, bytes, frozenset, set}
)

#: The type of a value still being computed: only the plan's own coroutines
#: reach a parent (every awaitable from application code is wrapped first).
PENDING = CoroutineType


class Run:
    """The state of one execution: the errors so far and what resolvers see."""

    __slots__ = ("context", "errors", "helpers", "pending", "root")

    def __init__(self, root: Any, context: Any, helpers: Any) -> None:
        self.root = root
        self.context = context
        self.helpers = helpers
        self.errors: list[GraphQLError] = []
        #: Whether anything had to be awaited so far: set by whoever first
        #: wraps an application awaitable (``_pending.later`` and friends).
        self.pending = False


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


def field_path(path: LazyPath) -> LazyPath:
    """The path of the field a (list item) path is in: graphql-core gives
    ``resolve_type`` and ``is_type_of`` the field's info, item or not."""
    while path is not None and type(path[1]) is int:
        path = path[0]
    return path


class Plan:
    """A compiled operation: its root selection set over a root value."""

    __slots__ = ("root",)

    def __init__(self, root: ObjectFn) -> None:
        self.root = root

    def run(
        self, root_value: Any, context: Any, helpers: Any
    ) -> ExecutionResult | Coroutine[Any, Any, ExecutionResult]:
        """graphql-core's result with *root_value* as root: at once when no
        resolver needs awaiting, else a coroutine (awaited under Trio or asyncio)."""
        run = Run(root_value, context, helpers)
        try:
            data = self.root(root_value, None, run)
        except GraphQLError as error:  # a null propagated to the root
            run.errors.append(error)
            data = None
        if type(data) is PENDING:
            return _finish_later(data, run)
        return ExecutionResult(data, run.errors or None)


async def _finish_later(pending: Coroutine[Any, Any, Any], run: Run) -> ExecutionResult:
    try:
        data = await pending
    except GraphQLError as error:
        run.errors.append(error)
        data = None
    return ExecutionResult(data, run.errors or None)
