"""Completion of scalars and enums, with the built-ins' common values passed through.

``coerce_output_value`` of a built-in scalar returns its commonest values
unchanged (a str for String and ID, a bool, a 32-bit int, a finite float):
those skip the call, everything else goes through it and so gets
graphql-core's exact result or error. Fields and lists of a built-in scalar
test that type themselves (``quick``) and call the closure only for the
rest. An enum whose output coercion is graphql-core's own looks a str value
up in graphql-core's own table of names first.

A leaf's closure never returns a pending value and never reads its path
argument (errors are located by the field or list that called it).
"""

from __future__ import annotations

from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLNonNull,
    GraphQLOutputType,
    GraphQLScalarType,
    GraphQLString,
)
from graphql.pyutils import Undefined, inspect

from ._plan import LazyPath, Run, ValueFn

MAX_INT = 2_147_483_647
MIN_INT = -2_147_483_648

#: The built-in scalars, and the one type each returns unchanged (Int and
#: Float: when within 32 bits or finite, see ``unchanged``).
_FAST_TYPES: dict[Any, type] = {
    GraphQLString: str,
    GraphQLID: str,
    GraphQLBoolean: bool,
    GraphQLInt: int,
    GraphQLFloat: float,
}


def quick(output_type: GraphQLOutputType) -> tuple[Any, bool] | None:
    """For a leaf type, non-null or not: the type some of whose values its
    completion returns unchanged (None if there is none), and whether all of
    them are (str, bool) or only some (int, float: see ``unchanged``).
    None when *output_type* is not a leaf type."""
    if isinstance(output_type, GraphQLNonNull):
        output_type = output_type.of_type
    if not isinstance(output_type, GraphQLScalarType | GraphQLEnumType):
        return None
    fast = _FAST_TYPES.get(output_type)
    return fast, fast is str or fast is bool


def leaf(leaf_type: GraphQLScalarType | GraphQLEnumType, null_message: str | None) -> ValueFn:
    """Completion of a scalar or enum; non-null when *null_message* is given."""
    coerce = leaf_type.coerce_output_value
    fast: Any = _FAST_TYPES.get(leaf_type)
    exact = fast is str or fast is bool  # any value of the type comes back unchanged
    names = _enum_names(leaf_type)

    def coerced(value: Any) -> Any:
        result = coerce(value)
        if result is Undefined or result is None:
            raise TypeError(
                f"Expected `{inspect(leaf_type)}.coerce_output_value({inspect(value)})`"
                f" to return non-nullable value, returned: {inspect(result)}"
            )
        return result

    if names is not None:  # an enum: a str value is found by name at once

        def complete_enum(value: Any, _path: LazyPath, _run: Run) -> Any:
            if type(value) is str:
                name = names.get(value)
                if name is not None:
                    return name
            if value is None or value is Undefined:
                if null_message is None:
                    return None
                raise TypeError(null_message)
            if isinstance(value, Exception):
                raise value
            return coerced(value)

        return complete_enum

    if null_message is None:

        def complete_leaf(value: Any, _path: LazyPath, _run: Run) -> Any:
            if type(value) is fast and (exact or unchanged(value)):
                return value
            if value is None or value is Undefined:
                return None
            if isinstance(value, Exception):
                raise value
            return coerced(value)

        return complete_leaf

    def complete_non_null_leaf(value: Any, _path: LazyPath, _run: Run) -> Any:
        if type(value) is fast and (exact or unchanged(value)):
            return value
        if isinstance(value, Exception):
            raise value
        if value is None or value is Undefined:
            raise TypeError(null_message)
        return coerced(value)

    return complete_non_null_leaf


def _enum_names(leaf_type: GraphQLScalarType | GraphQLEnumType) -> dict[Any, str] | None:
    """graphql-core's value-to-name table of an enum whose output coercion is
    graphql-core's (it answers a value found there with that name), else None."""
    if not isinstance(leaf_type, GraphQLEnumType):
        return None
    if "coerce_output_value" in vars(leaf_type):  # replaced on the instance
        return None
    if type(leaf_type).coerce_output_value is not GraphQLEnumType.coerce_output_value:
        return None
    names = getattr(leaf_type, "_value_lookup", None)
    if type(names) is not dict or not all(type(name) is str for name in names.values()):
        return None  # graphql-core changed: coerce every value
    return names


def unchanged(value: int | float) -> bool:
    """Whether Int/Float coercion returns *value* itself: a 32-bit int, a finite float."""
    if type(value) is int:
        return MIN_INT <= value <= MAX_INT
    return value - value == 0  # False for inf and nan
