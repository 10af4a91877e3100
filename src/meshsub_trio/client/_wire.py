"""The client side of both GraphQL WebSocket protocols, as sans-IO state machines.

Text in (:meth:`receive`), events out; frames to send come back as strings
from :meth:`connection_init`, :meth:`subscribe`, :meth:`complete` and
:meth:`ping`. No sockets, no Trio. Local misuse (subscribing before the ack,
reusing a live id) raises :class:`LocalProtocolError`; a server that breaks the
protocol raises :class:`ProtocolViolation` (the driver closes 4004, as
graphql-ws's client does). Messages for operations that already ended are
ignored, so a ``next`` in flight when the client sent ``complete`` is harmless.

States: ``IDLE`` -> ``INIT_SENT`` (``connection_init`` sent) ->
``ACKNOWLEDGED`` (operations may start).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, ClassVar

from .._encoding import JSONDecodeError, dumps, loads
from .._wire import LocalProtocolError as _ServerLocalProtocolError

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


# One class for driver misuse, on the server's machines and the client's.
LocalProtocolError = _ServerLocalProtocolError


class ProtocolViolation(Exception):
    """The server sent something the protocol does not allow."""


class State(enum.Enum):
    IDLE = "idle"
    INIT_SENT = "init_sent"
    ACKNOWLEDGED = "acknowledged"


# ---------------------------------------------------------------- events


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """``connection_ack``: operations may start."""

    payload: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Next:
    """One result of a live operation (``next`` / legacy ``data``)."""

    op_id: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Failed:
    """The server ended the operation with ``error`` (always a list here)."""

    op_id: str
    errors: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Completed:
    """The server finished the operation."""

    op_id: str


@dataclass(frozen=True, slots=True)
class Reply:
    """Send this frame back (a ``pong`` answering the server's ``ping``)."""

    frame: str


@dataclass(frozen=True, slots=True)
class Pong:
    """The server answered a ``ping`` (or sent an unsolicited ``pong``)."""

    payload: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Refused:
    """Legacy ``connection_error``: the server refused ``connection_init``."""

    payload: Any


Event = Acknowledged | Next | Failed | Completed | Reply | Pong | Refused


def _frame(message: dict[str, Any]) -> str:
    return dumps(message).decode()


def _message(data: str | bytes) -> dict[str, Any]:
    if isinstance(data, bytes):
        raise ProtocolViolation("binary frames are not part of the protocol")
    try:
        message = loads(data)
    except JSONDecodeError:
        raise ProtocolViolation("a message that is not JSON") from None
    if not isinstance(message, dict) or not isinstance(message.get("type"), str):
        raise ProtocolViolation("a message that is not an object with a string type")
    return message


def _op_id(message: dict[str, Any]) -> str:
    value = message.get("id")
    if not isinstance(value, str) or not value:
        raise ProtocolViolation(f"{message['type']} without a non-empty string id")
    return value


def _optional_object(message: dict[str, Any]) -> dict[str, Any] | None:
    payload = message.get("payload")
    if payload is not None and not isinstance(payload, dict):
        raise ProtocolViolation(f"{message['type']} payload must be an object")
    return payload


def _result(message: dict[str, Any]) -> dict[str, Any]:
    payload = message.get("payload")
    if not isinstance(payload, dict):
        raise ProtocolViolation(f"{message['type']} payload must be an object")
    return payload


class ClientMachine:
    """What both protocols share: the state, the live operation ids."""

    subprotocol: ClassVar[str]
    _subscribe_type: ClassVar[str]
    _complete_type: ClassVar[str]

    def __init__(self) -> None:
        self.state = State.IDLE
        self._live: set[str] = set()

    @property
    def live(self) -> frozenset[str]:
        """The ids of operations started and not yet ended."""
        return frozenset(self._live)

    def connection_init(self, params: dict[str, Any] | None) -> str:
        """The first frame: ``connection_init`` with the connection params."""
        if self.state is not State.IDLE:
            raise LocalProtocolError("connection_init was already sent")
        self.state = State.INIT_SENT
        message: dict[str, Any] = {"type": "connection_init"}
        if params is not None:
            message["payload"] = params
        return _frame(message)

    def subscribe(self, op_id: str, payload: dict[str, Any]) -> str:
        """Start an operation; *payload* holds query, variables, operationName, extensions."""
        if self.state is not State.ACKNOWLEDGED:
            raise LocalProtocolError("operations start only after connection_ack")
        if not op_id:
            raise LocalProtocolError("an operation id must be a non-empty string")
        if op_id in self._live:
            raise LocalProtocolError(f"operation {op_id!r} is still live")
        self._live.add(op_id)
        return _frame({"id": op_id, "type": self._subscribe_type, "payload": payload})

    def complete(self, op_id: str) -> str | None:
        """Stop a live operation; None if it already ended (nothing to send)."""
        if op_id not in self._live:
            return None
        self._live.discard(op_id)
        return _frame({"id": op_id, "type": self._complete_type})

    def ping(self) -> str | None:
        """A protocol-level ping, or None when this protocol has none."""
        return None

    def terminate(self) -> str | None:
        """What to send before a clean close, if anything."""
        return None

    def receive(self, data: str | bytes) -> list[Event]:
        raise NotImplementedError

    def _acknowledge(self, message: dict[str, Any]) -> list[Event]:
        if self.state is not State.INIT_SENT:
            raise ProtocolViolation("connection_ack without connection_init, or twice")
        payload = _optional_object(message)
        self.state = State.ACKNOWLEDGED
        return [Acknowledged(payload)]

    def _end(self, op_id: str) -> bool:
        """Forget *op_id*; whether it was live (messages for ended ids are ignored)."""
        if op_id in self._live:
            self._live.discard(op_id)
            return True
        return False

    def _require_ack(self, kind: str) -> None:
        if self.state is not State.ACKNOWLEDGED:
            raise ProtocolViolation(f"first message cannot be of type {kind}")


class TransportWSClient(ClientMachine):
    """graphql-transport-ws (graphql-ws's protocol), client side."""

    subprotocol = TRANSPORT_WS
    _subscribe_type = "subscribe"
    _complete_type = "complete"

    def ping(self) -> str:
        return '{"type":"ping"}'

    def receive(self, data: str | bytes) -> list[Event]:
        message = _message(data)
        kind = message["type"]
        if kind == "ping":
            payload = _optional_object(message)
            pong: dict[str, Any] = {"type": "pong"}
            if payload is not None:
                pong["payload"] = payload
            return [Reply(_frame(pong))]
        if kind == "pong":
            return [Pong(_optional_object(message))]
        if kind == "connection_ack":
            return self._acknowledge(message)
        if kind in ("next", "error", "complete"):
            self._require_ack(kind)
            return self._operation_message(kind, message)
        raise ProtocolViolation(f"unexpected message type {kind[:40]!r}")

    def _operation_message(self, kind: str, message: dict[str, Any]) -> list[Event]:
        op_id = _op_id(message)
        if kind == "next":
            payload = _result(message)
            return [Next(op_id, payload)] if op_id in self._live else []
        if kind == "error":
            errors = message.get("payload")
            if (
                not isinstance(errors, list)
                or not errors
                or not all(isinstance(e, dict) and "message" in e for e in errors)
            ):
                raise ProtocolViolation("error payload must be a non-empty list of errors")
            return [Failed(op_id, errors)] if self._end(op_id) else []
        return [Completed(op_id)] if self._end(op_id) else []


class LegacyWSClient(ClientMachine):
    """Apollo's legacy ``graphql-ws`` (subscriptions-transport-ws), client side.

    It has no protocol ping (the driver sends WebSocket ping frames); ``ka``
    keep-alives and unknown message types are ignored, as Apollo's client does.
    """

    subprotocol = LEGACY_WS
    _subscribe_type = "start"
    _complete_type = "stop"

    def terminate(self) -> str:
        return '{"type":"connection_terminate"}'

    def receive(self, data: str | bytes) -> list[Event]:
        message = _message(data)
        kind = message["type"]
        if kind == "ka":
            return []
        if kind == "connection_ack":
            return self._acknowledge(message)
        if kind == "connection_error":
            return [Refused(message.get("payload"))]
        if kind in ("data", "error", "complete"):
            return self._operation_message(kind, message)
        return []

    def _operation_message(self, kind: str, message: dict[str, Any]) -> list[Event]:
        if kind == "error" and not isinstance(message.get("id"), str):
            # An error about no operation: the server found one of our messages invalid.
            raise ProtocolViolation(f"the server reported an error: {message.get('payload')}")
        self._require_ack(kind)
        op_id = _op_id(message)
        if kind == "data":
            payload = _result(message)
            return [Next(op_id, payload)] if op_id in self._live else []
        if kind == "error":
            raw = message.get("payload")
            errors = raw if isinstance(raw, list) else [raw]
            normalised = [e if isinstance(e, dict) else {"message": str(e)} for e in errors]
            return [Failed(op_id, normalised)] if self._end(op_id) else []
        return [Completed(op_id)] if self._end(op_id) else []


def machine_for(subprotocol: str) -> ClientMachine:
    """A fresh machine for a negotiated subprotocol."""
    if subprotocol == TRANSPORT_WS:
        return TransportWSClient()
    if subprotocol == LEGACY_WS:
        return LegacyWSClient()
    raise ValueError(f"unsupported subprotocol {subprotocol!r}")
