"""Compile a subscription's selection set into closures that give graphql-core's result.

graphql-core re-walks the document for every event: it collects fields,
builds a resolve info and a ``Path`` per field, and dispatches on the type of
every value (40-60 us for a small document). A subscription runs the same
selection set, with the same variables, for every event, so that walk is done
once here: graphql-core's own ``collect_fields`` / ``collect_subfields`` group
the fields (fragments, aliases, @skip/@include evaluated with the variables),
arguments are coerced once, and each field becomes a closure specialised on
its resolver and its type. Per event only the resolvers and the value
completion run, with graphql-core's semantics and error messages (see the
differential tests).

What is not compiled raises :class:`Unsupported` and the document runs on
graphql-core: abstract types, ``is_type_of``, middleware, abort signals,
hooks, @defer/@stream, fragment arguments, disabled error propagation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLError,
    GraphQLField,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
    OperationType,
    located_error,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.executor import Executor, default_field_resolver
from graphql.execution.values import get_argument_values
from graphql.language import DirectiveNode, FieldNode, Visitor, visit
from graphql.pyutils import Undefined, inspect, is_iterable
from graphql.type import GraphQLResolveInfo
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

from .._app import _identity
from ._plan import PLAIN, LazyPath, ObjectFn, Plan, Run, ValueFn, as_list, bail, to_path

MAX_INT = 2_147_483_647
MIN_INT = -2_147_483_648


class Unsupported(Exception):
    """The document uses something the compiler leaves to graphql-core."""


def compile_plan(executor: Executor[Any]) -> Plan:
    """The plan for *executor*'s subscription with its variables (raises Unsupported)."""
    return _Compiler(executor).plan()


class _FindIncremental(Visitor):
    """Spots @defer and @stream, which the plan does not deliver."""

    found = False

    def enter_directive(self, node: DirectiveNode, *_args: Any) -> None:
        if node.name.value in ("defer", "stream"):
            self.found = True


class _Compiler:
    """Builds the closures of one executor's operation (document + variables)."""

    def __init__(self, executor: Executor[Any]) -> None:
        self.executor = executor
        self.schema = executor.schema

    def plan(self) -> Plan:
        executor = self.executor
        operation = executor.operation
        if operation.operation is not OperationType.SUBSCRIPTION:
            raise Unsupported("not a subscription")
        if executor.middleware_manager is not None:
            raise Unsupported("middleware")
        if executor.abort_signal is not None or executor.hooks is not None:
            raise Unsupported("abort signal or hooks")
        if not executor.error_propagation:
            raise Unsupported("error propagation disabled")
        finder = _FindIncremental()
        visit(operation, finder)
        for fragment in executor.fragment_definitions.values():
            visit(fragment, finder)
        if finder.found:
            raise Unsupported("@defer/@stream")
        root_type = self.schema.subscription_type
        if root_type is None:
            raise Unsupported("no subscription type")
        collected = collect_fields(
            self.schema,
            executor.fragments,
            executor.variable_values,
            root_type,
            operation,
            executor.hide_suggestions,
        )
        if collected.new_defer_usages:
            raise Unsupported("@defer")
        return Plan(self._object(root_type, collected.grouped_field_set))

    # -- selection sets --------------------------------------------------------

    def _object(
        self, parent: GraphQLObjectType, grouped: Mapping[str, list[FieldDetails]]
    ) -> ObjectFn:
        if parent.is_type_of is not None:
            raise Unsupported("is_type_of")
        fields: list[tuple[str, ValueFn]] = []
        for key, details in grouped.items():
            field = self._field(parent, key, details)
            if field is not None:
                fields.append((key, field))
        plan = tuple(fields)

        def run_object(source: Any, path: LazyPath, run: Run) -> dict[str, Any]:
            result = {}
            for key, field in plan:
                result[key] = field(source, path, run)
            return result

        return run_object

    def _field(
        self, parent: GraphQLObjectType, key: str, details: list[FieldDetails]
    ) -> ValueFn | None:
        for detail in details:
            if detail.defer_usage is not None or detail.fragment_variable_values is not None:
                raise Unsupported("deferred field or fragment arguments")
        node = details[0].node
        name = node.name.value
        definition = self.schema.get_field(parent, name)
        if definition is None:
            return None  # graphql-core leaves it out of the response as well
        if definition is SchemaMetaFieldDef or definition is TypeMetaFieldDef:
            raise Unsupported("introspection")
        parent_name = parent.name
        if definition is TypeNameMetaFieldDef:
            return lambda _source, _path, _run: parent_name
        nodes = [detail.node for detail in details]
        return_type = definition.type
        complete = self._complete(return_type, details, parent_name, name)
        args = self._arguments(definition, node)
        nonnull = isinstance(return_type, GraphQLNonNull)
        is_awaitable = self.executor.is_awaitable
        make_info = self._info_maker(definition, nodes, parent)
        resolve = definition.resolve or self.executor.field_resolver

        def fail(raw: Exception, path: LazyPath, run: Run) -> None:
            error = located_error(raw, nodes, as_list(path))
            if nonnull:
                raise error
            run.errors.append(error)

        if args is None:  # coercing the arguments fails: the field is an error each time
            executor = self.executor

            def failing_field(source: Any, path: LazyPath, run: Run) -> Any:
                field_path = (path, key, parent_name)
                try:
                    get_argument_values(
                        definition, node, executor.variable_values, None, executor.hide_suggestions
                    )
                except Exception as raw:
                    fail(raw, field_path, run)
                    return None
                raise AssertionError("arguments coerced on a second try")  # pragma: no cover

            return failing_field

        if resolve is _identity:  # meshsub's subscription field: the event itself

            def identity_field(source: Any, path: LazyPath, run: Run) -> Any:
                field_path = (path, key, parent_name)
                try:
                    if type(source) not in PLAIN and is_awaitable(source):
                        raise bail(source)
                    return complete(source, field_path, run)
                except Exception as raw:
                    fail(raw, field_path, run)
                    return None

            return identity_field

        if resolve is default_field_resolver:

            def default_field(source: Any, path: LazyPath, run: Run) -> Any:
                field_path = (path, key, parent_name)
                try:
                    if type(source) is dict or isinstance(source, Mapping):
                        value = source.get(name)
                    else:
                        value = getattr(source, name, None)
                    if callable(value):
                        value = value(make_info(field_path, run), **args)
                    if type(value) not in PLAIN and is_awaitable(value):
                        raise bail(value)
                    return complete(value, field_path, run)
                except Exception as raw:
                    fail(raw, field_path, run)
                    return None

            return default_field

        def custom_field(source: Any, path: LazyPath, run: Run) -> Any:
            field_path = (path, key, parent_name)
            try:
                value = resolve(source, make_info(field_path, run), **args)
                if type(value) not in PLAIN and is_awaitable(value):
                    raise bail(value)
                return complete(value, field_path, run)
            except Exception as raw:
                fail(raw, field_path, run)
                return None

        return custom_field

    def _arguments(self, definition: GraphQLField, node: FieldNode) -> dict[str, Any] | None:
        """The field's coerced arguments (fixed: the variables are), None if they fail."""
        if not definition.args and not node.arguments:
            return {}
        executor = self.executor
        try:
            return get_argument_values(
                definition, node, executor.variable_values, None, executor.hide_suggestions
            )
        except Exception:
            return None

    def _info_maker(
        self, definition: GraphQLField, nodes: list[FieldNode], parent: GraphQLObjectType
    ) -> Callable[[LazyPath, Run], GraphQLResolveInfo[Any]]:
        executor = self.executor
        name = nodes[0].name.value
        return_type = definition.type
        schema = self.schema
        fragments = executor.fragment_definitions
        operation = executor.operation
        variables = executor.variable_values
        is_awaitable = executor.is_awaitable

        def make_info(path: LazyPath, run: Run) -> GraphQLResolveInfo[Any]:
            return GraphQLResolveInfo(
                name,
                nodes,
                return_type,
                parent,
                to_path(path),  # type: ignore[arg-type]
                schema,
                fragments,
                run.root,
                operation,
                variables,
                run.context,
                is_awaitable,
                None,
                run.helpers,
            )

        return make_info

    # -- value completion ------------------------------------------------------

    def _complete(
        self,
        return_type: GraphQLOutputType,
        details: list[FieldDetails],
        parent_name: str,
        field_name: str,
    ) -> ValueFn:
        """Completion of a value of *return_type* (graphql-core's ``complete_value``)."""
        null_message = f"Cannot return null for non-nullable field {parent_name}.{field_name}."
        if isinstance(return_type, GraphQLNonNull):
            inner_type = return_type.of_type
            if isinstance(inner_type, GraphQLScalarType | GraphQLEnumType):
                return _leaf(inner_type, null_message)
            inner = self._complete(inner_type, details, parent_name, field_name)

            def complete_non_null(value: Any, path: LazyPath, run: Run) -> Any:
                if isinstance(value, Exception):
                    raise value
                completed = inner(value, path, run)
                if completed is None:
                    raise TypeError(null_message)
                return completed

            return complete_non_null
        if isinstance(return_type, GraphQLScalarType | GraphQLEnumType):
            return _leaf(return_type, None)
        if isinstance(return_type, GraphQLList):
            return self._list(return_type, details, parent_name, field_name)
        if isinstance(return_type, GraphQLObjectType):
            grouped = collect_subfields(
                self.schema,
                self.executor.fragments,
                self.executor.variable_values,
                self.executor.operation,
                return_type,
                details,
                self.executor.hide_suggestions,
            )
            if grouped.new_defer_usages:
                raise Unsupported("@defer")
            run_object = self._object(return_type, grouped.grouped_field_set)

            def complete_object(value: Any, path: LazyPath, run: Run) -> Any:
                if value is None or value is Undefined:
                    return None
                if isinstance(value, Exception):
                    raise value
                return run_object(value, path, run)

            return complete_object
        raise Unsupported(f"abstract type {return_type}")

    def _list(
        self,
        return_type: GraphQLList[Any],
        details: list[FieldDetails],
        parent_name: str,
        field_name: str,
    ) -> ValueFn:
        item_type = return_type.of_type
        complete_item = self._complete(item_type, details, parent_name, field_name)
        item_nonnull = isinstance(item_type, GraphQLNonNull)
        nodes = [detail.node for detail in details]
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
                    raise bail(value)
                if not is_iterable(value):
                    raise GraphQLError(not_iterable)
            completed: list[Any] = []
            append = completed.append
            for index, item in enumerate(value):
                item_path = (path, index, None)
                if type(item) not in PLAIN and is_awaitable(item):
                    raise bail(item)
                try:
                    append(complete_item(item, item_path, run))
                except Exception as raw:
                    error = located_error(raw, nodes, as_list(item_path))
                    if item_nonnull:
                        raise error from raw
                    run.errors.append(error)
                    append(None)
            return completed

        return complete_list


def _leaf(leaf_type: GraphQLScalarType | GraphQLEnumType, null_message: str | None) -> ValueFn:
    """Completion of a scalar or enum; non-null when *null_message* is given.

    The built-in scalars return their commonest value as it is (what their
    ``coerce_output_value`` does for it) without the call."""
    coerce = leaf_type.coerce_output_value
    fast: Any = _FAST_TYPES.get(leaf_type)
    exact = fast is str or fast is bool  # any value of the type comes back unchanged

    def coerced(value: Any) -> Any:
        result = coerce(value)
        if result is Undefined or result is None:
            raise TypeError(
                f"Expected `{inspect(leaf_type)}.coerce_output_value({inspect(value)})`"
                f" to return non-nullable value, returned: {inspect(result)}"
            )
        return result

    if null_message is None:

        def complete_leaf(value: Any, _path: LazyPath, _run: Run) -> Any:
            if type(value) is fast and (exact or _unchanged(value)):
                return value
            if value is None or value is Undefined:
                return None
            if isinstance(value, Exception):
                raise value
            return coerced(value)

        return complete_leaf

    def complete_non_null_leaf(value: Any, _path: LazyPath, _run: Run) -> Any:
        if type(value) is fast and (exact or _unchanged(value)):
            return value
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            raise TypeError(null_message)
        return coerced(value)

    return complete_non_null_leaf


#: The built-in scalars, and the one type each returns unchanged (Int and
#: Float: when within 32 bits or finite, see ``_unchanged``).
_FAST_TYPES: dict[Any, type] = {
    GraphQLString: str,
    GraphQLID: str,
    GraphQLBoolean: bool,
    GraphQLInt: int,
    GraphQLFloat: float,
}


def _unchanged(value: int | float) -> bool:
    """Whether Int/Float coercion returns *value* itself: a 32-bit int, a finite float."""
    if type(value) is int:
        return MIN_INT <= value <= MAX_INT
    return value - value == 0  # False for inf and nan
