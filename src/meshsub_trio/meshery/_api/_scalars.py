"""Wire formats for the schema's custom scalars, as gqlgen writes them.

``Time`` is an RFC 3339 string, ``Map`` a JSON object, ``Any`` any JSON value.
Output coercion rejects values a JSON client could not read, so a model bug
surfaces as a field error rather than as a malformed payload.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from graphql import GraphQLError, GraphQLSchema
from graphql.language import ConstValueNode, ObjectValueNode
from graphql.utilities import value_from_ast_untyped

from .._model._timefmt import format_time, parse_time


@functools.lru_cache(maxsize=4096)
def _is_timestamp(text: str) -> bool:
    """Whether *text* is an RFC 3339 timestamp. Remembered: an event's times are
    serialised once per subscriber, and parsing is most of what that costs."""
    if len(text) <= 10:  # a bare date is not a timestamp
        return False
    try:
        parse_time(text)
    except ValueError:
        return False
    return True


#: An event is serialised once per subscriber that runs its own execution:
#: its datetimes are formatted once.
_formatted = functools.lru_cache(maxsize=4096)(format_time)


def _time_out(value: Any) -> str:
    if isinstance(value, datetime):
        return _formatted(value)
    if isinstance(value, str) and _is_timestamp(value):
        return value
    raise GraphQLError(f"Time cannot represent {value!r}: expected an RFC 3339 timestamp")


def _time_in(value: Any) -> datetime:
    if not isinstance(value, str):
        raise GraphQLError(f"Time cannot represent {value!r}: expected an RFC 3339 string")
    try:
        return parse_time(value)
    except ValueError as error:
        raise GraphQLError(f"Time cannot represent {value!r}: {error}") from None


def _check_json(value: Any, where: str) -> Any:
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GraphQLError(f"{where} cannot represent the non-finite number {value!r}")
        return value
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise GraphQLError(f"{where} object keys must be strings, not {key!r}")
            out[key] = _check_json(item, where)
        return out
    if isinstance(value, list | tuple):
        return [_check_json(item, where) for item in value]
    raise GraphQLError(f"{where} cannot represent {type(value).__name__} value {value!r}")


def _map(value: Any) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise GraphQLError(f"Map cannot represent {value!r}: expected a JSON object")
    checked: dict[str, Any] = _check_json(value, "Map")  # a Mapping comes back a dict
    return checked


def _map_literal(node: ConstValueNode) -> dict[str, Any]:
    if not isinstance(node, ObjectValueNode):
        raise GraphQLError("Map literal must be an object")
    return _map(value_from_ast_untyped(node))


def _any(value: Any) -> Any:
    return _check_json(value, "Any")


def _any_literal(node: ConstValueNode) -> Any:
    return _any(value_from_ast_untyped(node))


_Coercers = tuple[Callable[[Any], Any], Callable[[Any], Any], Callable[[ConstValueNode], Any]]

_SCALARS: dict[str, _Coercers] = {
    "Time": (_time_out, _time_in, lambda node: _time_in(value_from_ast_untyped(node))),
    "Map": (_map, _map, _map_literal),
    "Any": (_any, _any, _any_literal),
}


def install_scalars(schema: GraphQLSchema) -> None:
    """Give the SDL-built scalars their coercions (new and legacy hooks alike)."""
    for name, (out, in_value, in_literal) in _SCALARS.items():
        scalar: Any = schema.get_type(name)
        scalar.serialize = scalar.coerce_output_value = out
        scalar.parse_value = scalar.coerce_input_value = in_value
        scalar.coerce_input_literal = in_literal
