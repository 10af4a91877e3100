"""Sans-IO GraphQL WebSocket protocols: messages in, events out, no sockets."""

from ._events import (
    Close,
    CloseCode,
    Event,
    InitRequested,
    OperationCancelled,
    OperationRequested,
    Send,
)
from ._legacy_ws import LegacyWSMachine
from ._negotiate import SUPPORTED, choose_subprotocol, parse_offer
from ._transport_ws import TransportWSMachine

ProtocolMachine = TransportWSMachine | LegacyWSMachine


def machine_for(subprotocol: str, *, max_operations: int | None) -> ProtocolMachine:
    """A fresh state machine for the negotiated *subprotocol*."""
    if subprotocol == TransportWSMachine.subprotocol:
        return TransportWSMachine(max_operations=max_operations)
    if subprotocol == LegacyWSMachine.subprotocol:
        return LegacyWSMachine(max_operations=max_operations)
    raise ValueError(f"unsupported subprotocol {subprotocol!r}")


__all__ = [
    "SUPPORTED",
    "Close",
    "CloseCode",
    "Event",
    "InitRequested",
    "LegacyWSMachine",
    "OperationCancelled",
    "OperationRequested",
    "ProtocolMachine",
    "Send",
    "TransportWSMachine",
    "choose_subprotocol",
    "machine_for",
    "parse_offer",
]
