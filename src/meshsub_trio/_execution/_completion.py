"""Compiled value completion: graphql-core's ``complete_value``, specialised per type.

Each output type position of the document becomes one closure: non-null
checks, lists (also async iterables and awaitable items), scalars and enums,
objects (with ``is_type_of``) and abstract types (``resolve_type`` and the
checks of ``ensure_valid_runtime_type``, each possible type's selection set
compiled once). A closure returns the completed value, or a pending
coroutine when something had to be awaited (see ``_pending``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLUnionType,
    is_object_type,
)
from graphql.execution.collect_fields import FieldDetails, collect_subfields
from graphql.execution.executor import Executor, default_type_resolver
from graphql.pyutils import Undefined, inspect, is_iterable
from graphql.type import GraphQLResolveInfo

from ._leaves import leaf, quick, unchanged
from ._pending import (
    async_items,
    awaited_completion,
    checked_later,
    close_all,
    item_failer,
    later,
    pending_indices,
    settle_items,
    typed_later,
)
from ._plan import PENDING, PLAIN, LazyPath, ObjectFn, Run, ValueFn

#: Builds the info of the field a value belongs to, from the value's path.
InfoFn = Callable[[LazyPath, Run], GraphQLResolveInfo[Any]]


class Unsupported(Exception):
    """The document uses something the compiler leaves to graphql-core."""


class Completion:
    """The value-completion half of the compiler (the field half builds on it)."""

    def __init__(self, executor: Executor[Any]) -> None:
        self.executor = executor
        self.schema = executor.schema
        #: Compiled selection sets by (object type, field nodes): the same
        #: selection under several possible types is compiled once per type.
        self._selections: dict[tuple[str, tuple[int, ...]], ObjectFn] = {}

    def _object(
        self, parent: GraphQLObjectType, grouped: Mapping[str, list[FieldDetails]]
    ) -> ObjectFn:
        raise NotImplementedError  # pragma: no cover - the compiler provides it

    def _complete(
        self,
        return_type: GraphQLOutputType,
        details: list[FieldDetails],
        parent_name: str,
        field_name: str,
        info: InfoFn,
    ) -> ValueFn:
        """Completion of a value of *return_type* (graphql-core's ``complete_value``)."""
        null_message = f"Cannot return null for non-nullable field {parent_name}.{field_name}."
        if isinstance(return_type, GraphQLNonNull):
            inner_type = return_type.of_type
            if isinstance(inner_type, GraphQLScalarType | GraphQLEnumType):
                return leaf(inner_type, null_message)
            if isinstance(inner_type, GraphQLList):
                inner = self._list(inner_type, details, parent_name, field_name, info)
            else:
                inner = self._composite(inner_type, details, parent_name, field_name, info)

            def complete_non_null(value: Any, path: LazyPath, run: Run) -> Any:
                # Every completion of a list, object or abstract value gives
                # None for None or Undefined only, and a response map, a list
                # or a pending value otherwise: checked first, it is the same.
                if value is None or value is Undefined:
                    raise TypeError(null_message)
                if isinstance(value, Exception):
                    raise value
                return inner(value, path, run)  # pending or not: graphql-core checks no further

            return complete_non_null
        if isinstance(return_type, GraphQLScalarType | GraphQLEnumType):
            return leaf(return_type, None)
        if isinstance(return_type, GraphQLList):
            return self._list(return_type, details, parent_name, field_name, info)
        run_object = self._composite(return_type, details, parent_name, field_name, info)

        def complete_object(value: Any, path: LazyPath, run: Run) -> Any:
            if value is None or value is Undefined:
                return None
            if isinstance(value, Exception):
                raise value
            return run_object(value, path, run)

        return complete_object

    def _composite(
        self,
        return_type: GraphQLOutputType,
        details: list[FieldDetails],
        parent_name: str,
        field_name: str,
        info: InfoFn,
    ) -> ObjectFn:
        """An object or abstract value's completion, given it is neither null
        nor an exception."""
        if isinstance(return_type, GraphQLObjectType):
            return self._object_value(return_type, details, info)
        if isinstance(return_type, GraphQLInterfaceType | GraphQLUnionType):
            return self._abstract(return_type, details, parent_name, field_name, info)
        raise Unsupported(f"output type {return_type}")  # pragma: no cover - no other type

    def _selection(self, object_type: GraphQLObjectType, details: list[FieldDetails]) -> ObjectFn:
        """The compiled sub-selection of *details* on *object_type* (memoised)."""
        key = (object_type.name, tuple(id(detail.node) for detail in details))
        found = self._selections.get(key)
        if found is not None:
            return found
        executor = self.executor
        grouped = collect_subfields(
            self.schema,
            executor.fragments,
            executor.variable_values,
            executor.operation,
            object_type,
            details,
            executor.hide_suggestions,
        )
        if grouped.new_defer_usages:
            raise Unsupported("@defer")
        run_object = self._selections[key] = self._object(object_type, grouped.grouped_field_set)
        return run_object

    def _object_value(
        self, object_type: GraphQLObjectType, details: list[FieldDetails], info: InfoFn
    ) -> ObjectFn:
        """An object's completion: ``is_type_of`` first when the type has one."""
        run_object = self._selection(object_type, details)
        is_type_of = object_type.is_type_of
        if is_type_of is None:
            return run_object
        nodes = [detail.node for detail in details]
        is_awaitable = self.executor.is_awaitable

        def invalid(value: Any) -> GraphQLError:
            message = f"Expected value of type '{object_type}' but got: {inspect(value)}."
            return GraphQLError(message, nodes)

        def checked_object(value: Any, path: LazyPath, run: Run) -> Any:
            verdict = is_type_of(value, info(path, run))
            if type(verdict) is not bool and is_awaitable(verdict):
                run.pending = True
                return checked_later(verdict, invalid, run_object, value, path, run)
            if not verdict:
                raise invalid(value)
            return run_object(value, path, run)

        return checked_object

    def _abstract(
        self,
        abstract_type: GraphQLInterfaceType | GraphQLUnionType,
        details: list[FieldDetails],
        parent_name: str,
        field_name: str,
        info: InfoFn,
    ) -> ObjectFn:
        """An interface or union value: ``complete_abstract_value``."""
        schema = self.schema
        objects = {
            possible.name: self._object_value(possible, details, info)
            for possible in schema.get_possible_types(abstract_type)
        }
        resolve_type = abstract_type.resolve_type or self.executor.type_resolver
        by_typename = resolve_type is default_type_resolver
        is_awaitable = self.executor.is_awaitable
        nodes = [detail.node for detail in details]
        where = f"for field '{parent_name}.{field_name}'"

        def runtime(name: Any, value: Any) -> ObjectFn:
            """The object type *name* names, checked (``ensure_valid_runtime_type``)."""
            if type(name) is str and name in objects:
                return objects[name]
            start = f"Abstract type '{abstract_type}' must resolve to an Object type at runtime"
            if name is None:
                message = (
                    f"{start} {where}. Either the '{abstract_type}' type should provide"
                    " a 'resolve_type' function or each possible type should provide"
                    " an 'is_type_of' function."
                )
            elif not isinstance(name, str):
                message = (
                    f"{start} {where} with value {inspect(value)}, received"
                    f" '{inspect(name)}', which is not a valid Object type name."
                )
            elif (found := schema.get_type(name)) is None:
                message = (
                    f"Abstract type '{abstract_type}' was resolved to a type"
                    f" '{name}' that does not exist inside the schema."
                )
            elif not is_object_type(found):
                message = (
                    f"Abstract type '{abstract_type}' was resolved to a non-object type '{name}'."
                )
            elif found.name in objects:  # a str subclass naming a possible type
                return objects[found.name]
            else:
                message = (
                    f"Runtime Object type '{found}' is not a possible type for '{abstract_type}'."
                )
            raise GraphQLError(message, nodes)

        def finish(name: Any, value: Any, path: LazyPath, run: Run) -> Any:
            return runtime(name, value)(value, path, run)

        def complete_abstract(value: Any, path: LazyPath, run: Run) -> Any:
            name: Any = None
            if by_typename and type(value) is dict:
                name = value.get("__typename")
            if type(name) is not str:
                name = resolve_type(value, info(path, run), abstract_type)
                if type(name) not in PLAIN and is_awaitable(name):
                    run.pending = True
                    return typed_later(name, finish, value, path, run)
            return runtime(name, value)(value, path, run)

        return complete_abstract

    def _list(
        self,
        return_type: GraphQLList[Any],
        details: list[FieldDetails],
        parent_name: str,
        field_name: str,
        info: InfoFn,
    ) -> ValueFn:
        item_type = return_type.of_type
        complete_item = self._complete(item_type, details, parent_name, field_name, info)
        leaf_items = quick(item_type)  # leaf items are never pending once completed
        fast, exact = leaf_items or (None, False)
        nodes = [detail.node for detail in details]
        item_fail = item_failer(nodes, isinstance(item_type, GraphQLNonNull))
        is_awaitable = self.executor.is_awaitable
        is_async_iterable = self.executor.is_async_iterable
        not_iterable = (
            f"Expected Iterable, but did not find one for field '{parent_name}.{field_name}'."
        )

        def complete_list(value: Any, path: LazyPath, run: Run) -> Any:
            if value is None or value is Undefined:
                return None
            if isinstance(value, Exception):
                raise value
            kind = type(value)
            if kind is not list and kind is not tuple:
                if is_async_iterable(value):
                    run.pending = True
                    iterator = value.__aiter__()
                    return async_items(
                        iterator, complete_item, item_fail, is_awaitable, nodes, path, run
                    )
                if not is_iterable(value):
                    raise GraphQLError(not_iterable)
            completed: list[Any] = []
            append = completed.append
            items = iter(value)
            try:
                if leaf_items is not None:
                    for index, item in enumerate(items):
                        kind = type(item)
                        if kind is fast and (exact or unchanged(item)):
                            append(item)
                        elif kind not in PLAIN and is_awaitable(item):
                            append(later(item, complete_item, item_fail, (path, index, None), run))
                        else:
                            try:
                                append(complete_item(item, None, run))
                            except Exception as raw:
                                item_fail(raw, (path, index, None), run)
                                append(None)
                else:
                    for index, item in enumerate(items):
                        item_path = (path, index, None)
                        if type(item) not in PLAIN and is_awaitable(item):
                            append(later(item, complete_item, item_fail, item_path, run))
                            continue
                        try:
                            done = complete_item(item, item_path, run)
                        except Exception as raw:
                            item_fail(raw, item_path, run)
                            done = None
                        else:
                            if type(done) is PENDING:
                                done = awaited_completion(done, item_fail, item_path, run)
                        append(done)
            except Exception:
                if run.pending:
                    close_all(completed)
                close_all(_drained(items, is_awaitable))
                raise
            if run.pending:
                indices = pending_indices(completed)
                if indices:
                    return settle_items(completed, indices)
            return completed

        return complete_list


def _drained(items: Any, is_awaitable: Callable[[Any], bool]) -> list[Any]:
    """The awaitables left in an abandoned iterator (graphql-core drains it too)."""
    left: list[Any] = []
    with suppress(Exception):  # graphql-core ignores these as well
        left.extend(item for item in items if is_awaitable(item))
    return left
