"""One client operation's state: its request, where it is on the wire, its cursor.

An operation outlives links: it is WAITING until a ready link sends it
(SENT, under a fresh wire id per link), back to WAITING when the link is
lost, PAUSED while its consumer catches up (cursor streams under
``Overflow.CLOSE``), DONE once ended. The cursor it carries is the newest one
it accepted, so a resubscription on any link, to any URL, asks for exactly
what comes after.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Literal

import trio
from graphql import GraphQLError, OperationDefinitionNode, OperationType, parse

from .._decimal import decimal
from ._buffer import StreamBuffer

#: What a subscription does when the server cannot resume after its cursor.
CursorLostPolicy = Literal["raise", "restart"]
#: ``extensions.code`` values that mean "your cursor cannot be resumed from".
CURSOR_CODES = frozenset({"CURSOR_EXPIRED", "CURSOR_INVALID"})


class Kind(enum.Enum):
    SUBSCRIPTION = "subscription"
    #: Safe to send again after a lost connection.
    QUERY = "query"
    #: Never sent twice: a mutation, or a document whose kind is unknown.
    MUTATION = "mutation"


class Phase(enum.Enum):
    WAITING = "waiting"
    SENT = "sent"
    PAUSED = "paused"
    DONE = "done"


@dataclass(frozen=True)
class Request:
    """What the client asked for (the ``subscribe`` payload, minus the cursor)."""

    query: str
    variables: dict[str, Any] | None = None
    operation_name: str | None = None
    extensions: dict[str, Any] | None = None

    def payload(self, cursor: str | None) -> dict[str, Any]:
        """The wire payload, with ``extensions.cursor`` when resuming."""
        payload: dict[str, Any] = {"query": self.query}
        if self.variables is not None:
            payload["variables"] = self.variables
        if self.operation_name is not None:
            payload["operationName"] = self.operation_name
        extensions = dict(self.extensions or {})
        if cursor is not None:
            extensions["cursor"] = cursor
        if extensions:
            payload["extensions"] = extensions
        return payload


def operation_kind(query: str, operation_name: str | None) -> Kind:
    """Query, mutation or subscription; MUTATION (never resent) when unsure."""
    try:
        document = parse(query, no_location=True)
    except GraphQLError:
        return Kind.MUTATION
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if operation_name is not None:
        operations = [o for o in operations if o.name and o.name.value == operation_name]
    if len(operations) != 1:
        return Kind.MUTATION
    return {
        OperationType.QUERY: Kind.QUERY,
        OperationType.MUTATION: Kind.MUTATION,
        OperationType.SUBSCRIPTION: Kind.SUBSCRIPTION,
    }[operations[0].operation]


def cursor_of(payload: dict[str, Any]) -> str | None:
    """The resume cursor a server put in a ``next`` payload's extensions."""
    extensions = payload.get("extensions")
    if not isinstance(extensions, dict):
        return None
    cursor = extensions.get("cursor")
    if isinstance(cursor, str | int) and not isinstance(cursor, bool):
        return str(cursor)
    return None


def is_after(cursor: str, last: str) -> bool:
    """Whether *cursor* comes after *last*. Decimal cursors (log sequences) are
    compared as numbers, so a replayed duplicate is recognised; other cursors
    are opaque and only an exact repeat counts as one."""
    number, previous = decimal(cursor), decimal(last)
    if number is not None and previous is not None:
        return number > previous
    return cursor != last


def cursor_code(errors: list[dict[str, Any]]) -> str | None:
    """``CURSOR_EXPIRED`` or ``CURSOR_INVALID`` if the errors say the cursor is lost."""
    for error in errors:
        extensions = error.get("extensions")
        if isinstance(extensions, dict) and extensions.get("code") in CURSOR_CODES:
            return str(extensions["code"])
    return None


class Operation:
    """One subscription or one query/mutation, across links."""

    def __init__(
        self,
        request: Request,
        kind: Kind,
        *,
        cursor: str | None = None,
        buffer: StreamBuffer | None = None,
        on_cursor_lost: CursorLostPolicy = "raise",
        raise_on_errors: bool = False,
    ) -> None:
        #: The session's key for it (set when added).
        self.key = 0
        self.request = request
        self.kind = kind
        self.phase = Phase.WAITING
        #: The id it has on the current link, while SENT.
        self.wire_id: str | None = None
        #: The newest cursor accepted (sent back on every resubscription).
        self.cursor = cursor
        #: The cursor the latest ``subscribe`` carried.
        self.sent_cursor: str | None = None
        #: Whether the stream has carried cursors (it can resume exactly).
        self.cursored = cursor is not None
        self.buffer = buffer
        self.on_cursor_lost = on_cursor_lost
        self.raise_on_errors = raise_on_errors
        #: Single-result operations: the payload, or the error, once done.
        self.result: dict[str, Any] | None = None
        self.error: BaseException | None = None
        self.done = trio.Event()
        # Counters a caller (and the tests) can read.
        self.sends = 0
        self.resumes = 0
        self.restarts = 0
        self.pauses = 0
        self.duplicates = 0

    def __repr__(self) -> str:
        name = self.request.operation_name or self.kind.value
        return f"<Operation {name} {self.phase.value} cursor={self.cursor!r}>"

    def wire_payload(self) -> dict[str, Any]:
        self.sent_cursor = self.cursor if self.kind is Kind.SUBSCRIPTION else None
        return self.request.payload(self.sent_cursor)
