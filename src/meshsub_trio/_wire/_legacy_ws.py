"""Apollo's legacy ``graphql-ws`` protocol as a sans-IO state machine.

Differences from graphql-transport-ws that shape this machine: the real
client sends ``connection_init`` and its queued ``start`` messages without
waiting for the ack, so starts that arrive while the connection is being
authorised are held and released by :meth:`accept`; malformed messages get a
reply (``connection_error`` or ``error``) and the socket stays open; ``error``
carries a single error object; the server sends ``ka`` keep-alives. States
and their transitions: ``_states`` (held starts are not operations yet).
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
from ._machine import MAX_OPERATION_ID, MachineBase, complete_frame
from ._states import MachineState, OperationState, OpTrigger, Trigger

SUBPROTOCOL = "graphql-ws"
_KA = b'{"type":"ka"}'


class LegacyWSMachine(MachineBase):
    """One connection's ``graphql-ws`` state."""

    __slots__ = ("_held",)

    subprotocol = SUBPROTOCOL
    result_type = b"data"
    #: Whether :meth:`keepalive` asks the peer for an answer (a pong).
    keepalive_is_probe = False

    def __init__(self, *, max_operations: int | None = 100) -> None:
        super().__init__(max_operations=max_operations)
        self._held: list[dict[str, Any]] = []

    # ---- inbound -------------------------------------------------------
    def receive(self, data: str | bytes, *, binary: bool = False) -> list[Event]:
        if self.state is MachineState.CLOSED:
            return []  # sent before the peer saw our close: not the driver's doing
        if binary:
            return self._violation(CloseCode.UNSUPPORTED_DATA, "Binary frames are not supported")
        try:
            message = loads(data)
        except JSONDecodeError as problem:
            return [Send(_connection_error(f"Message is not valid JSON: {problem}"))]
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            return [Send(_error_message(_reply_id(message), "Invalid message type!"))]
        kind = message["type"]
        if kind == "connection_init":
            return self._on_init(message)
        if kind == "start":
            return self._on_start(message)
        if kind == "stop":
            return self._on_stop(message)
        if kind == "connection_terminate":
            self._apply(Trigger.TERMINATE)
            return [Close(CloseCode.NORMAL, "")]
        return [Send(_error_message(_reply_id(message), "Invalid message type!"))]

    def _on_init(self, message: dict[str, Any]) -> list[Event]:
        payload = message.get("payload")
        if self.state is not MachineState.AWAITING_INIT:
            return self._violation(CloseCode.TOO_MANY_INIT, "Too many initialisation requests")
        if payload is not None and not isinstance(payload, dict):
            return [
                Send(_connection_error("connection_init payload must be an object")),
                *self._violation(CloseCode.PROTOCOL_ERROR, "Invalid connection_init payload"),
            ]
        self._apply(Trigger.INIT)
        return [InitRequested(payload)]

    def _on_start(self, message: dict[str, Any]) -> list[Event]:
        if self.state is MachineState.AWAITING_INIT:
            return self._violation(CloseCode.UNAUTHORIZED, "Unauthorized")
        if self.state is MachineState.INIT_RECEIVED:
            self._held.append(message)
            return []
        return self._start(message)

    def _start(self, message: dict[str, Any]) -> list[Event]:
        op_id = message.get("id")
        if not isinstance(op_id, str) or not op_id:
            return [Send(_error_message(None, '"id" must be a non-empty string'))]
        if len(op_id) > MAX_OPERATION_ID:
            message_text = f'"id" is longer than {MAX_OPERATION_ID} characters'
            return [Send(_error_message(None, message_text))]
        payload = message.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            return [Send(_error_message(op_id, '"payload.query" must be a string'))]
        variables = payload.get("variables")
        operation_name = payload.get("operationName")
        extensions = payload.get("extensions")
        if variables is not None and not isinstance(variables, dict):
            return [Send(_error_message(op_id, '"payload.variables" must be an object'))]
        if operation_name is not None and not isinstance(operation_name, str):
            return [Send(_error_message(op_id, '"payload.operationName" must be a string'))]
        if extensions is not None and not isinstance(extensions, dict):
            extensions = None
        events: list[Event] = []
        if self._operations.get(op_id) is OperationState.LIVE:
            # A start that reuses a live id replaces the old operation.
            self._apply_op(op_id, OpTrigger.CLIENT_COMPLETE)
            events.append(OperationCancelled(op_id))
        if not self._has_room():
            return [*events, Send(_error_message(op_id, "Subscription limit reached"))]
        self._apply_op(op_id, OpTrigger.SUBSCRIBE)
        events.append(
            OperationRequested(op_id, payload["query"], variables, operation_name, extensions)
        )
        return events

    def _on_stop(self, message: dict[str, Any]) -> list[Event]:
        op_id = message.get("id")
        if not isinstance(op_id, str):
            return []
        if self._operations.get(op_id) is OperationState.LIVE:
            self._apply_op(op_id, OpTrigger.CLIENT_COMPLETE)
            return [OperationCancelled(op_id), Send(complete_frame(op_id))]
        # Stopped before the ack released it: it never starts, and nothing is
        # sent for it (nothing may precede the ack).
        self._held = [start for start in self._held if start.get("id") != op_id]
        return []

    # ---- driver decisions (inputs: they return events) ----------------
    def accept(self, payload: dict[str, Any] | None = None) -> list[Event]:
        """Acknowledge, send the first ``ka``, then release the held starts."""
        self._apply(Trigger.ACCEPT)
        ack = (
            {"type": "connection_ack"}
            if payload is None
            else {"type": "connection_ack", "payload": payload}
        )
        events: list[Event] = [Send(dumps(ack)), Send(_KA)]
        held, self._held = self._held, []
        for message in held:
            events.extend(self._start(message))
        return events

    def reject(self, reason: str = "Forbidden") -> list[Event]:
        """``connection_error``, then close 1011 (once, after ``InitRequested``)."""
        self._apply(Trigger.REJECT)
        return [
            Send(_connection_error(reason)),
            Close(CloseCode.INTERNAL_ERROR, clip_reason(reason)),
        ]

    def _on_closed(self) -> None:
        self._held.clear()  # starts held for an ack that will never come

    # ---- frames (they return bytes) -----------------------------------
    def _error_frame(self, op_id: str, errors: list[dict[str, Any]]) -> bytes:
        first = errors[0] if errors else {"message": "Unknown error"}
        return dumps({"id": op_id, "type": "error", "payload": first})

    def keepalive(self) -> bytes | None:
        """``ka``, sent only once the connection is acknowledged (None before)."""
        self._check_open("keepalive")
        return _KA if self.state is MachineState.READY else None


def _reply_id(message: Any) -> str | None:
    op_id = message.get("id") if isinstance(message, dict) else None
    return op_id if isinstance(op_id, str) else None


def _connection_error(message: str) -> bytes:
    return dumps({"type": "connection_error", "payload": {"message": message}})


def _error_message(op_id: str | None, message: str) -> bytes:
    if op_id is None:
        return dumps({"type": "error", "payload": {"message": message}})
    return dumps({"id": op_id, "type": "error", "payload": {"message": message}})
