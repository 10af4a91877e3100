"""Completion of scalars and enums, with the built-ins' common values passed through.

``coerce_output_value`` of a built-in scalar returns its commonest values
unchanged (a str for String and ID, a bool, a 32-bit int, a finite float):
those skip the call, everything else goes through it and so gets
graphql-core's exact result or error.
"""

from __future__ import annotations

from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLScalarType,
    GraphQLString,
)
from graphql.pyutils import Undefined, inspect

from ._plan import LazyPath, Run, ValueFn

MAX_INT = 2_147_483_647
MIN_INT = -2_147_483_648

#: The built-in scalars, and the one type each returns unchanged (Int and
#: Float: when within 32 bits or finite, see ``_unchanged``).
_FAST_TYPES: dict[Any, type] = {
    GraphQLString: str,
    GraphQLID: str,
    GraphQLBoolean: bool,
    GraphQLInt: int,
    GraphQLFloat: float,
}


def leaf(leaf_type: GraphQLScalarType | GraphQLEnumType, null_message: str | None) -> ValueFn:
    """Completion of a scalar or enum; non-null when *null_message* is given."""
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


def _unchanged(value: int | float) -> bool:
    """Whether Int/Float coercion returns *value* itself: a 32-bit int, a finite float."""
    if type(value) is int:
        return MIN_INT <= value <= MAX_INT
    return value - value == 0  # False for inf and nan
