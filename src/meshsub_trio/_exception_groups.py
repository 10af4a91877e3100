"""The exceptions a Trio nursery's (possibly nested) groups carry.

Nurseries wrap what their tasks raise in ExceptionGroups, nested once per
nursery; a refusal or an error that is alone in there is reported as itself
(one line, its own type), not as a group.
"""

from __future__ import annotations


def only_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The only exception inside *group* and the groups nested in it, or None."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


def leaves(error: BaseException) -> list[BaseException]:
    """Every exception in *error* that is not a group, depth first, in order
    (*error* itself when it is none)."""
    if not isinstance(error, BaseExceptionGroup):
        return [error]
    return [leaf for inner in error.exceptions for leaf in leaves(inner)]
