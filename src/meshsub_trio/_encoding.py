"""JSON in and out: orjson, encoded once, shared as bytes."""

from __future__ import annotations

from typing import Any

import orjson

JSONDecodeError = orjson.JSONDecodeError


def dumps(value: Any) -> bytes:
    """Encode *value* to compact UTF-8 JSON."""
    return orjson.dumps(value, default=_fallback)


def dumps_canonical(value: Any) -> bytes:
    """Encode with sorted keys: equal values give equal bytes (for cache keys)."""
    return orjson.dumps(value, default=_fallback, option=orjson.OPT_SORT_KEYS)


def loads(data: str | bytes) -> Any:
    return orjson.loads(data)


def _fallback(value: Any) -> Any:
    # Sets, tuples of odd kinds, objects with a mapping shape: whatever a
    # resolver returned for a custom scalar that orjson cannot take natively.
    if isinstance(value, set | frozenset):
        return list(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")
