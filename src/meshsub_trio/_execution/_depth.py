"""A validation rule that bounds query depth, a cheap guard against abuse."""

from __future__ import annotations

from typing import Any

from graphql import (
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)


def depth_limit_rule(max_depth: int) -> type[ValidationRule]:
    """A rule class refusing operations nested deeper than *max_depth* fields."""

    class DepthLimit(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_: Any) -> None:
            depth = _depth(node.selection_set, self.context, 0, set())
            if depth > max_depth:
                name = node.name.value if node.name else "anonymous"
                self.report_error(
                    GraphQLError(
                        f"Operation '{name}' is {depth} levels deep; the limit is {max_depth}.",
                        node,
                    )
                )

    return DepthLimit


def _depth(
    selection_set: SelectionSetNode | None,
    context: ValidationContext,
    depth: int,
    visiting: set[str],
) -> int:
    if selection_set is None:
        return depth
    deepest = depth
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.selection_set is not None:
                deepest = max(
                    deepest, _depth(selection.selection_set, context, depth + 1, visiting)
                )
            else:
                deepest = max(deepest, depth + 1)
        elif isinstance(selection, InlineFragmentNode):
            deepest = max(deepest, _depth(selection.selection_set, context, depth, visiting))
        elif isinstance(selection, FragmentSpreadNode):
            name = selection.name.value
            fragment = context.get_fragment(name)
            if fragment is None or name in visiting:
                continue  # unknown or cyclic: other rules report those
            deepest = max(
                deepest, _depth(fragment.selection_set, context, depth, visiting | {name})
            )
    return deepest
