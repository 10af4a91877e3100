"""Compile an operation into closures that give graphql-core's result.

graphql-core re-walks the document for every execution: it collects fields,
builds a resolve info and a ``Path`` per field, and dispatches on the type of
every value (40-60 us for a small document). A subscription runs the same
selection set, with the same variables, for every event, and a query or
mutation document is sent again and again, so that walk is done once here:
graphql-core's own ``collect_fields`` / ``collect_subfields`` group the
fields (fragments, aliases, type conditions, @skip/@include evaluated with
the variables), arguments are coerced once, and each field becomes a closure
specialised on its resolver and its type. Per execution only the resolvers
and the value completion (``_completion``) run, with graphql-core's
semantics and error messages (see the differential tests). Async resolvers
make the run asynchronous from that field up (``_pending``); a mutation's
root fields run one after the other.

What is not compiled raises :class:`Unsupported` and the document runs on
graphql-core: introspection, middleware, abort signals, hooks,
@defer/@stream, fragment arguments, disabled error propagation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from graphql import GraphQLField, GraphQLObjectType, OperationType, located_error
from graphql.execution.collect_fields import FieldDetails, collect_fields
from graphql.execution.executor import Executor, default_field_resolver
from graphql.execution.values import get_argument_values
from graphql.language import DirectiveNode, FieldNode, Visitor, visit
from graphql.type import GraphQLNonNull, GraphQLResolveInfo
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

from .._app import _identity
from ._completion import Completion, InfoFn, Unsupported
from ._leaves import quick, unchanged
from ._pending import (
    awaited_completion,
    close_all,
    later,
    pending_keys,
    serial_rest,
    settle_fields,
)
from ._plan import (
    PENDING,
    PLAIN,
    FailFn,
    LazyPath,
    ObjectFn,
    Plan,
    Run,
    ValueFn,
    as_list,
    field_path,
    to_path,
)

__all__ = ["Unsupported", "compile_plan"]


def compile_plan(executor: Executor[Any]) -> Plan:
    """The plan for *executor*'s operation with its variables (raises Unsupported)."""
    return _Compiler(executor).plan()


class _FindIncremental(Visitor):
    """Spots @defer and @stream, which the plan does not deliver."""

    found = False

    def enter_directive(self, node: DirectiveNode, *_args: Any) -> None:
        if node.name.value in ("defer", "stream"):
            self.found = True


class _Compiler(Completion):
    """Builds the closures of one executor's operation (document + variables)."""

    def plan(self) -> Plan:
        executor = self.executor
        operation = executor.operation
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
        root_type = self.schema.get_root_type(operation.operation)
        if root_type is None:
            raise Unsupported(f"no {operation.operation.value} type")
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
        grouped = collected.grouped_field_set
        if operation.operation is OperationType.MUTATION:
            return Plan(self._serial(root_type, grouped))
        return Plan(self._object(root_type, grouped))

    # -- selection sets --------------------------------------------------------

    def _fields(
        self, parent: GraphQLObjectType, grouped: Mapping[str, list[FieldDetails]]
    ) -> tuple[tuple[str, ValueFn], ...]:
        fields: list[tuple[str, ValueFn]] = []
        for key, details in grouped.items():
            field = self._field(parent, key, details)
            if field is not None:
                fields.append((key, field))
        return tuple(fields)

    def _object(
        self, parent: GraphQLObjectType, grouped: Mapping[str, list[FieldDetails]]
    ) -> ObjectFn:
        """Sibling fields, pending ones awaited together (``execute_fields``)."""
        plan = self._fields(parent, grouped)

        def run_object(source: Any, path: LazyPath, run: Run) -> Any:
            result = {}
            try:
                for key, field in plan:
                    result[key] = field(source, path, run)
            except Exception:
                if run.pending:
                    close_all(result.values())
                raise
            if run.pending:
                keys = pending_keys(result)
                if keys:
                    return settle_fields(result, keys)
            return result

        return run_object

    def _serial(
        self, parent: GraphQLObjectType, grouped: Mapping[str, list[FieldDetails]]
    ) -> ObjectFn:
        """A mutation's root fields, each finished before the next starts."""
        plan = self._fields(parent, grouped)

        def run_serially(source: Any, path: LazyPath, run: Run) -> Any:
            result: dict[str, Any] = {}
            for index, (key, field) in enumerate(plan):
                value = field(source, path, run)
                if type(value) is PENDING:
                    return serial_rest(result, key, value, plan[index + 1 :], source, path, run)
                result[key] = value
            return result

        return run_serially

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
        make_info = self._info_maker(definition, nodes, parent)

        def info(path: LazyPath, run: Run) -> GraphQLResolveInfo[Any]:
            return make_info(field_path(path), run)

        complete = self._complete(definition.type, details, parent_name, name, info)
        args = self._arguments(definition, node)
        nonnull = isinstance(definition.type, GraphQLNonNull)
        resolve = definition.resolve or self.executor.field_resolver

        def fail(raw: Exception, path: LazyPath, run: Run) -> None:
            error = located_error(raw, nodes, as_list(path))
            if nonnull:
                raise error
            run.errors.append(error)

        if args is None:  # coercing the arguments fails: the field is an error each time
            executor = self.executor

            def failing_field(source: Any, path: LazyPath, run: Run) -> Any:
                at = (path, key, parent_name)
                try:
                    get_argument_values(
                        definition, node, executor.variable_values, None, executor.hide_suggestions
                    )
                except Exception as raw:
                    fail(raw, at, run)
                    return None
                raise AssertionError("arguments coerced on a second try")  # pragma: no cover

            return failing_field

        site = _Site(key, name, parent_name, args, self.executor.is_awaitable, make_info)
        if resolve is _identity:  # meshsub's subscription field: the event itself
            return _identity_field(site, complete, fail)
        if resolve is default_field_resolver:
            leaf_type = quick(definition.type)
            if leaf_type is not None:
                return _default_leaf_field(site, complete, fail, *leaf_type)
            return _default_field(site, complete, fail)
        return _custom_field(site, resolve, complete, fail)

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
    ) -> InfoFn:
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


# -- field closures ----------------------------------------------------------------
#
# One closure per field, chosen at compile time by resolver and return type.
# Each returns the completed value, or a pending one (``_pending.later`` when
# the resolver's value must be awaited, ``awaited_completion`` when its
# completion turned asynchronous): a value of a PLAIN type is never awaited,
# a leaf's completion is never pending and needs no path, and the path tuple
# of a leaf field is built only for an error or a resolver's info.


class _Site(NamedTuple):
    """What every closure of one field knows about it."""

    key: str
    name: str
    parent_name: str
    args: dict[str, Any]
    is_awaitable: Callable[[Any], bool]
    make_info: InfoFn


def _default_leaf_field(
    site: _Site, complete: ValueFn, fail: FailFn, fast: Any, exact: bool
) -> ValueFn:
    """A scalar or enum field with the default resolver; values of type *fast*
    come back unchanged (all of them if *exact*, see ``_leaves.quick``)."""
    key, name, parent_name, args, is_awaitable, make_info = site

    def default_leaf_field(source: Any, path: LazyPath, run: Run) -> Any:
        value: Any
        try:
            if type(source) is dict or isinstance(source, Mapping):
                value = source.get(name)
            else:
                value = getattr(source, name, None)
            kind = type(value)
            if kind is fast and (exact or unchanged(value)):
                return value
            if kind not in PLAIN:
                if callable(value):
                    value = value(make_info((path, key, parent_name), run), **args)
                if type(value) not in PLAIN and is_awaitable(value):
                    return later(value, complete, fail, (path, key, parent_name), run)
            return complete(value, None, run)
        except Exception as raw:
            fail(raw, (path, key, parent_name), run)
            return None

    return default_leaf_field


def _default_field(site: _Site, complete: ValueFn, fail: FailFn) -> ValueFn:
    """A list, object or abstract field with the default resolver."""
    key, name, parent_name, args, is_awaitable, make_info = site

    def default_field(source: Any, path: LazyPath, run: Run) -> Any:
        at = (path, key, parent_name)
        value: Any
        try:
            if type(source) is dict or isinstance(source, Mapping):
                value = source.get(name)
            else:
                value = getattr(source, name, None)
            if type(value) not in PLAIN:
                if callable(value):
                    value = value(make_info(at, run), **args)
                if type(value) not in PLAIN and is_awaitable(value):
                    return later(value, complete, fail, at, run)
            completed = complete(value, at, run)
        except Exception as raw:
            fail(raw, at, run)
            return None
        if type(completed) is PENDING:
            return awaited_completion(completed, fail, at, run)
        return completed

    return default_field


def _identity_field(site: _Site, complete: ValueFn, fail: FailFn) -> ValueFn:
    """meshsub's subscription field: the event itself, completed."""
    key, _name, parent_name, _args, is_awaitable, _make_info = site

    def identity_field(source: Any, path: LazyPath, run: Run) -> Any:
        at = (path, key, parent_name)
        try:
            if type(source) not in PLAIN and is_awaitable(source):
                return later(source, complete, fail, at, run)
            completed = complete(source, at, run)
        except Exception as raw:
            fail(raw, at, run)
            return None
        if type(completed) is PENDING:
            return awaited_completion(completed, fail, at, run)
        return completed

    return identity_field


def _custom_field(site: _Site, resolve: Any, complete: ValueFn, fail: FailFn) -> ValueFn:
    """A field with its own resolver: the one place a value may be awaitable
    because of the schema rather than the data."""
    key, _name, parent_name, args, is_awaitable, make_info = site

    def custom_field(source: Any, path: LazyPath, run: Run) -> Any:
        at = (path, key, parent_name)
        try:
            value = resolve(source, make_info(at, run), **args)
            if type(value) not in PLAIN and is_awaitable(value):
                return later(value, complete, fail, at, run)
            completed = complete(value, at, run)
        except Exception as raw:
            fail(raw, at, run)
            return None
        if type(completed) is PENDING:
            return awaited_completion(completed, fail, at, run)
        return completed

    return custom_field
