"""The graphql-transport-ws protocol as a sans-IO state machine.

Frames in (:meth:`TransportWSMachine.receive`), events out; the driver
answers ``InitRequested`` with :meth:`accept` or :meth:`reject` and turns
results into frames with :meth:`next`, :meth:`error` and :meth:`complete`.
States and their transitions: ``_states``. No sockets, no Trio: everything
here is tested without a network.
"""

from __future__ import annotations

from typing import Any

from .._encoding import JSONDecodeError, dumps, loads
from ._events import (
    Close,
    CloseCode,
    Event,
    InitRequested,
    OperationCancelled,
    OperationRequested,
    Send,
    clip_reason,
)
from ._machine import MAX_OPERATION_ID, MachineBase
from ._states import MachineState, OperationState, OpTrigger, Trigger

SUBPROTOCOL = "graphql-transport-ws"
_SERVER_ONLY = frozenset({"connection_ack", "next", "error"})


class _Invalid(Exception):
    """An inbound message that breaks the protocol: close 4400 with this reason."""


def _optional_object(message: dict[str, Any], key: str) -> dict[str, Any] | None:
    value = message.get(key)
    if value is not None and not isinstance(value, dict):
        raise _Invalid(f'"{key}" must be an object or null')
    return value


def _operation_id(message: dict[str, Any]) -> str:
    value = message.get("id")
    if not isinstance(value, str) or not value:
        raise _Invalid('"id" must be a non-empty string')
    if len(value) > MAX_OPERATION_ID:
        raise _Invalid(f'"id" is longer than {MAX_OPERATION_ID} characters')
    return value


class TransportWSMachine(MachineBase):
    """One connection's graphql-transport-ws state."""

    __slots__ = ()

    subprotocol = SUBPROTOCOL
    result_type = b"next"
    #: Whether :meth:`keepalive` asks the peer for an answer (a pong).
    keepalive_is_probe = True

    # ---- inbound -------------------------------------------------------
    def receive(self, data: str | bytes, *, binary: bool = False) -> list[Event]:
        """Feed one complete WebSocket message; return what to do about it."""
        if self.state is MachineState.CLOSED:
            return []  # sent before the peer saw our close: not the driver's doing
        if binary:
            return self._violation(CloseCode.BAD_REQUEST, "Binary frames are not supported")
        try:
            message = loads(data)
        except JSONDecodeError:
            return self._violation(CloseCode.BAD_REQUEST, "Invalid message received: not JSON")
        try:
            return self._dispatch(message)
        except _Invalid as problem:
            return self._violation(CloseCode.BAD_REQUEST, f"Invalid message received: {problem}")

    def _dispatch(self, message: Any) -> list[Event]:
        if not isinstance(message, dict):
            raise _Invalid("a message must be a JSON object")
        kind = message.get("type")
        if not isinstance(kind, str) or not kind:
            raise _Invalid('"type" must be a non-empty string')
        if kind == "connection_init":
            return self._on_init(message)
        if kind == "ping":
            payload = _optional_object(message, "payload")
            return [Send(_control("pong", payload))]
        if kind == "pong":
            _optional_object(message, "payload")
            return []
        if kind == "subscribe":
            return self._on_subscribe(message)
        if kind == "complete":
            op_id = _operation_id(message)
            if self._operations.get(op_id) is OperationState.LIVE:
                self._apply_op(op_id, OpTrigger.CLIENT_COMPLETE)
                return [OperationCancelled(op_id)]
            return []  # already ended: its complete and the client's crossed
        if kind in _SERVER_ONLY:
            raise _Invalid(f"{kind} is sent by servers only")
        raise _Invalid(f"unknown message type {kind[:40]!r}")

    def _on_init(self, message: dict[str, Any]) -> list[Event]:
        payload = _optional_object(message, "payload")
        if self.state is not MachineState.AWAITING_INIT:
            return self._violation(CloseCode.TOO_MANY_INIT, "Too many initialisation requests")
        self._apply(Trigger.INIT)
        return [InitRequested(payload)]

    def _on_subscribe(self, message: dict[str, Any]) -> list[Event]:
        op_id = _operation_id(message)
        payload = message.get("payload")
        if not isinstance(payload, dict):
            raise _Invalid('"payload" must be an object')
        query = payload.get("query")
        if not isinstance(query, str):
            raise _Invalid('"payload.query" must be a string')
        variables = _optional_object(payload, "variables")
        extensions = _optional_object(payload, "extensions")
        operation_name = payload.get("operationName")
        if operation_name is not None and not isinstance(operation_name, str):
            raise _Invalid('"payload.operationName" must be a string or null')
        if self.state is not MachineState.READY:
            return self._violation(CloseCode.UNAUTHORIZED, "Unauthorized")
        if self._operations.get(op_id) is OperationState.LIVE:
            return self._violation(
                CloseCode.SUBSCRIBER_EXISTS, f"Subscriber for {op_id} already exists"[:123]
            )
        if not self._has_room():
            return [Send(self._error_frame(op_id, [{"message": "Subscription limit reached"}]))]
        self._apply_op(op_id, OpTrigger.SUBSCRIBE)
        return [OperationRequested(op_id, query, variables, operation_name, extensions)]

    # ---- driver decisions (inputs: they return events) ----------------
    def accept(self, payload: dict[str, Any] | None = None) -> list[Event]:
        """The connection is authorised: acknowledge it (once, after ``InitRequested``)."""
        self._apply(Trigger.ACCEPT)
        return [Send(_control("connection_ack", payload))]

    def reject(self, reason: str = "Forbidden") -> list[Event]:
        """The connection is refused: close 4403 (once, after ``InitRequested``)."""
        self._apply(Trigger.REJECT)
        return [Close(CloseCode.FORBIDDEN, clip_reason(reason))]

    # ---- frames (they return bytes) -----------------------------------
    def _error_frame(self, op_id: str, errors: list[dict[str, Any]]) -> bytes:
        return dumps({"id": op_id, "type": "error", "payload": errors})

    def keepalive(self) -> bytes | None:
        """A protocol ``ping``; clients answer with ``pong``."""
        self._check_open("keepalive")
        return b'{"type":"ping"}'


def _control(kind: str, payload: dict[str, Any] | None) -> bytes:
    if payload is None:
        return dumps({"type": kind})
    return dumps({"type": kind, "payload": payload})
