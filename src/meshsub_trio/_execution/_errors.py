"""What a client may see of an error: messages meant for it, nothing internal.

An application signals an error meant for the client by raising a
:class:`graphql.GraphQLError` (or a subclass, such as Meshery's
``BadUserInput``), or an :class:`~meshsub_trio.AuthError`: those keep their
message and extensions. Any other exception from a resolver, a subscribe
resolver or a streamer is a bug whose text may hold internals (paths, SQL,
object reprs): the client gets ``Internal error (operation 3)`` with a
reference, and the server log gets the traceback under the same reference.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import Any

from graphql import GraphQLError

from .._app import AuthError
from ..brokers._buffer import BufferOverflow

log = logging.getLogger("meshsub_trio.errors")

#: Exceptions besides GraphQLError whose message is written for clients.
PUBLIC_EXCEPTIONS: tuple[type[BaseException], ...] = (AuthError, BufferOverflow)

#: Where an exception keeps its reference once logged (one log per failure,
#: however many operations, e.g. a cohort's members, report it).
_REF = "_meshsub_error_ref"


def is_public(error: BaseException) -> bool:
    """Whether *error*'s message was written for the client."""
    if isinstance(error, GraphQLError):
        # graphql-core wraps what a resolver raised; an app's own GraphQLError
        # comes back as the original of the wrapper.
        original = error.original_error
        return original is None or isinstance(original, (GraphQLError, *PUBLIC_EXCEPTIONS))
    return isinstance(error, PUBLIC_EXCEPTIONS)


def public_error(error: BaseException, label: str) -> dict[str, Any]:
    """*error* as a response error; an internal one is logged and masked."""
    if is_public(error):
        if isinstance(error, GraphQLError):
            return dict(error.formatted)
        return {"message": str(error) or type(error).__name__}
    cause = error.original_error if isinstance(error, GraphQLError) else None
    ref = _logged(cause or error, label)
    masked: dict[str, Any] = {"message": f"Internal error ({label})"}
    if isinstance(error, GraphQLError):
        if error.locations is not None:
            masked["locations"] = [location.formatted for location in error.locations]
        if error.path is not None:
            masked["path"] = error.path
    masked["extensions"] = {"code": "INTERNAL_SERVER_ERROR", "ref": ref}
    return masked


def public_errors(
    errors: list[GraphQLError] | tuple[GraphQLError, ...], label: str
) -> list[dict[str, Any]]:
    return [public_error(error, label) for error in errors]


def _logged(error: BaseException, label: str) -> str:
    """The reference of *error*, logging its traceback the first time."""
    ref = getattr(error, _REF, None)
    if isinstance(ref, str):
        return ref
    ref = secrets.token_hex(4)
    with contextlib.suppress(AttributeError):  # __slots__: logged again if reported again
        setattr(error, _REF, ref)
    log.error(
        "Internal error %s in %s: %s",
        ref,
        label,
        type(error).__name__,
        exc_info=(type(error), error, error.__traceback__),
    )
    return ref
