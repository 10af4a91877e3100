"""Wire code, sans-IO: bytes or messages in, events or bytes out, no sockets.

Here: the GraphQL-over-WebSocket machines (``graphql-transport-ws``, legacy
``graphql-ws``) and subprotocol choice; the WebSocket frame reader
(``_frames``), the upgrade parser (``_upgrade``) and the request-head reader
(``_head``) the native host uses; the SSE machine and parser (``_sse``).

One rule for what a machine's calls return, the same on both machines:

- **Inputs return events.** A call that tells the machine something happened
  (``receive``: the peer's message; ``init_timed_out``: the clock; ``accept``
  / ``reject``: the application's verdict; ``close``: the host's own reason;
  ``release``: an operation's task is gone) returns ``list[Event]``: what
  the driver must now do, in order (``Send`` a frame, ``Close``, start or
  cancel an operation).
- **Frame requests return bytes.** A call that asks for one outbound message
  (``next``, ``complete``, ``error``, ``keepalive``) returns that frame as
  ``bytes``, or ``None`` when there is nothing to send: the operation already
  ended (its ``complete`` crossed the client's, or the connection closed) and
  the driver has not released it yet. These are on the per-message path, so
  they allocate nothing but the frame.
- **Queries** (``state``, ``closed``, ``operation_state``, ``is_live``) never
  raise and change nothing: the driver asks them where a race is possible.

Misuse by the driver (a decision in the wrong state, a frame for an id the
machine does not know, a second ``accept``, anything but an input after a
close) raises :class:`LocalProtocolError` and changes nothing. A violation by
the peer is never an exception: it is a ``Close`` event with the checklist's
code. States and the transition tables the machines obey: ``_states``.
"""

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
from ._states import (
    CONNECTION_TRANSITIONS,
    OPERATION_TRANSITIONS,
    LocalProtocolError,
    MachineState,
    OperationState,
    OpTrigger,
    Trigger,
)
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
    "CONNECTION_TRANSITIONS",
    "OPERATION_TRANSITIONS",
    "SUPPORTED",
    "Close",
    "CloseCode",
    "Event",
    "InitRequested",
    "LegacyWSMachine",
    "LocalProtocolError",
    "MachineState",
    "OpTrigger",
    "OperationCancelled",
    "OperationRequested",
    "OperationState",
    "ProtocolMachine",
    "Send",
    "TransportWSMachine",
    "Trigger",
    "choose_subprotocol",
    "machine_for",
    "parse_offer",
]
