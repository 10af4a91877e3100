"""Cheap limits on what an operation may ask for: depth, fields and cost.

They run before graphql-core's own validation rules, in time linear in the
document: each fragment is summarised once and every spread of it reuses that
summary, so fragments that spread the next one twice (numbers doubling at each
level) cost a walk of the text, not of the paths through it. Numbers saturate
at :data:`CEILING`, so even an exponential document stays cheap arithmetic.

The cost model (after Hot Chocolate's and Hasura's): every field costs 1, and
everything selected under a list field costs its multiplier times more. The
multiplier is the field's integer page-size argument (``first``, ``last``,
``limit``, ``pageSize``, ... see :data:`SIZE_ARGUMENTS`) when written as a
literal, else that argument's schema default, else ``Limits.list_size``
(variables are not known when the cached document is checked, so they count as
the default). Non-list fields multiply by 1, nested lists once per list field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLArgument,
    GraphQLError,
    GraphQLField,
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef, TypeNameMetaFieldDef

#: Where counts stop growing: far above any limit, small enough to print.
CEILING = 10**15

#: Integer arguments that bound how many items a list field returns.
SIZE_ARGUMENTS = ("first", "last", "limit", "pageSize", "page_size", "size", "count", "top", "take")


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits one server applies to every operation (None: no limit)."""

    max_depth: int | None = 15
    max_fields: int | None = 2_000
    max_cost: int | None = 100_000
    #: The multiplier of a list field with no literal size argument.
    list_size: int = 10

    @property
    def active(self) -> bool:
        return not (self.max_depth is None and self.max_fields is None and self.max_cost is None)


#: Values a request's variables may hold in all (every list item and object
#: field counts). graphql-core coerces each one in Python, about a
#: microsecond apiece, before anything else runs: 240,000 of them (a 1 MiB
#: body) held the event loop for 300 ms.
MAX_VARIABLE_VALUES = 10_000


def variables_over_limit(variables: dict[str, Any], limit: int = MAX_VARIABLE_VALUES) -> bool:
    """Whether *variables* hold more than *limit* values (stops counting there)."""
    count = 0
    pending: list[Any] = [variables]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            count += len(value)
            pending.extend(value.values())
        elif isinstance(value, list):
            count += len(value)
            pending.extend(value)
        if count > limit:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Summary:
    """What a selection set asks for: its depth, its fields, its cost."""

    depth: int = 0
    fields: int = 0
    cost: int = 0


def check_limits(
    schema: GraphQLSchema, document_node: DocumentNode, limits: Limits
) -> list[GraphQLError]:
    """The errors of every operation in *document_node* over a limit (linear time)."""
    if not limits.active:
        return []
    analysis = _Analysis(schema, limits.list_size)
    analysis.summarise_fragments(
        [d for d in document_node.definitions if isinstance(d, FragmentDefinitionNode)]
    )
    errors: list[GraphQLError] = []
    for definition in document_node.definitions:
        if isinstance(definition, OperationDefinitionNode):
            root = schema.get_root_type(definition.operation)
            summary = analysis.summarise(definition.selection_set, root)
            errors.extend(_over_limits(definition, summary, limits))
    return errors


def _over_limits(
    operation: OperationDefinitionNode, summary: Summary, limits: Limits
) -> Iterator[GraphQLError]:
    name = operation.name.value if operation.name else "anonymous"
    if limits.max_depth is not None and summary.depth > limits.max_depth:
        # The wording predates the other limits; clients and tests match on it.
        yield GraphQLError(
            f"Operation '{name}' is {_count(summary.depth)} levels deep; "
            f"the limit is {limits.max_depth}.",
            operation,
        )
    if limits.max_fields is not None and summary.fields > limits.max_fields:
        yield GraphQLError(
            f"Operation '{name}' selects {_count(summary.fields)} fields; "
            f"the limit is {limits.max_fields} (max_fields).",
            operation,
        )
    if limits.max_cost is not None and summary.cost > limits.max_cost:
        yield GraphQLError(
            f"Operation '{name}' costs {_count(summary.cost)} (each field 1, times the "
            f"sizes of the lists above it); the limit is {limits.max_cost} (max_cost).",
            operation,
        )


def _count(value: int) -> str:
    return f"more than {CEILING}" if value >= CEILING else str(value)


class _Analysis:
    """Summaries of one document's fragments, then of its operations."""

    def __init__(self, schema: GraphQLSchema, list_size: int) -> None:
        self.schema = schema
        self.list_size = list_size
        self.fragments: dict[str, Summary] = {}

    def summarise_fragments(self, fragments: list[FragmentDefinitionNode]) -> None:
        """Summarise every fragment after the fragments it spreads, without recursion
        (a chain of spreads may be longer than Python's stack). A spread that closes
        a cycle counts as nothing here; graphql-core reports the cycle."""
        by_name = {fragment.name.value: fragment for fragment in fragments}
        on_path: set[str] = set()
        for root in by_name:
            if root in self.fragments:
                continue
            path = [(root, iter(_spreads(by_name[root].selection_set)))]
            on_path.add(root)
            while path:
                name, spreads = path[-1]
                for spread in spreads:
                    if spread in by_name and spread not in self.fragments and spread not in on_path:
                        path.append((spread, iter(_spreads(by_name[spread].selection_set))))
                        on_path.add(spread)
                        break
                else:
                    path.pop()
                    on_path.discard(name)
                    fragment = by_name[name]
                    condition = self.schema.get_type(fragment.type_condition.name.value)
                    self.fragments[name] = self.summarise(fragment.selection_set, condition)

    def summarise(
        self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType | None
    ) -> Summary:
        """The summary of a selection set on *parent* (None: unknown type)."""
        if selection_set is None:
            return Summary()
        depth = fields = cost = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                definition = self._field(parent, selection.name.value)
                child_type = get_named_type(definition.type) if definition else None
                child = self.summarise(selection.selection_set, child_type)
                multiplier = self._multiplier(definition, selection) if definition else 1
                depth = max(depth, child.depth + 1)
                fields += 1 + child.fields
                cost += 1 + multiplier * child.cost
            else:
                if isinstance(selection, InlineFragmentNode):
                    condition = selection.type_condition
                    inner = self.schema.get_type(condition.name.value) if condition else parent
                    child = self.summarise(selection.selection_set, inner)
                else:
                    assert isinstance(selection, FragmentSpreadNode)
                    child = self.fragments.get(selection.name.value, Summary())
                depth = max(depth, child.depth)
                fields += child.fields
                cost += child.cost
        return Summary(depth, min(fields, CEILING), min(cost, CEILING))

    def _field(self, parent: GraphQLNamedType | None, name: str) -> GraphQLField | None:
        if name == "__typename":
            return TypeNameMetaFieldDef
        if parent is not None and parent is self.schema.query_type:
            if name == "__schema":
                return SchemaMetaFieldDef
            if name == "__type":
                return TypeMetaFieldDef
        if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType):
            field: GraphQLField | None = parent.fields.get(name)
            return field
        return None  # unknown: graphql-core reports it

    def _multiplier(self, definition: GraphQLField, node: FieldNode) -> int:
        if not is_list_type(get_nullable_type(definition.type)):
            return 1
        for argument in node.arguments or ():
            if argument.name.value in SIZE_ARGUMENTS:
                value = argument.value
                if isinstance(value, IntValueNode):
                    return _literal_size(value)
                return self.list_size  # a variable: unknown until execution
        for name in SIZE_ARGUMENTS:
            spec = definition.args.get(name)
            size = _default_size(spec) if spec is not None else None
            if size is not None:
                return size
        return self.list_size


def _literal_size(node: IntValueNode) -> int:
    """An integer literal as a size: negative counts 0, huge saturates (without
    converting thousands of digits)."""
    if node.value.startswith("-"):
        return 0
    return CEILING if len(node.value) > 15 else min(int(node.value), CEILING)


def _default_size(argument: GraphQLArgument) -> int | None:
    """The schema's integer default of a size argument, if it has one."""
    default = argument.default  # SDL: a literal; code: a value
    if default is not None:
        if isinstance(default.literal, IntValueNode):
            return _literal_size(default.literal)
        candidate = default.value
    else:
        candidate = argument.default_value
    if isinstance(candidate, int) and not isinstance(candidate, bool):
        return min(max(candidate, 0), CEILING)
    return None


def _spreads(selection_set: SelectionSetNode | None) -> list[str]:
    """Names of the fragments spread anywhere in *selection_set*."""
    names: list[str] = []
    stack = [selection_set] if selection_set is not None else []
    while stack:
        for selection in stack.pop().selections:
            if isinstance(selection, FragmentSpreadNode):
                names.append(selection.name.value)
            elif isinstance(selection, FieldNode | InlineFragmentNode):
                nested = selection.selection_set
                if nested is not None:
                    stack.append(nested)
    return names
