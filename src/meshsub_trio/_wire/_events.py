"""What a protocol machine asks its driver to do, and the codes it closes with."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class CloseCode(enum.IntEnum):
    """WebSocket close codes used by both GraphQL subprotocols."""

    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    ABNORMAL = 1006  # never sent: recorded when a peer vanished without a close frame
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    BAD_REQUEST = 4400
    UNAUTHORIZED = 4401
    FORBIDDEN = 4403
    SUBPROTOCOL_NOT_ACCEPTABLE = 4406
    INIT_TIMEOUT = 4408
    SUBSCRIBER_EXISTS = 4409
    TOO_MANY_INIT = 4429
    INTERNAL_SERVER_ERROR = 4500


@dataclass(frozen=True, slots=True)
class Send:
    """Send this (UTF-8 JSON) text frame to the client."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with this code and reason (after pending sends)."""

    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class InitRequested:
    """The client sent ``connection_init``: authenticate, then accept or reject."""

    payload: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OperationRequested:
    """Start an operation (``subscribe`` / ``start``)."""

    id: str
    query: str
    variables: dict[str, Any] | None
    operation_name: str | None
    extensions: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class OperationCancelled:
    """The client stopped an operation: end it and send nothing more for it."""

    id: str


Event = Send | Close | InitRequested | OperationRequested | OperationCancelled


def clip_reason(reason: str) -> str:
    """Close reasons must fit 123 bytes of UTF-8 (RFC 6455 §5.5)."""
    if len(reason.encode()) <= 123:
        return reason
    return "Internal server error"
