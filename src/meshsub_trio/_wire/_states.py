"""The protocol machines' states and transition tables, as data.

Both machines (graphql-transport-ws and legacy graphql-ws) share these
tables: ``MachineBase._apply`` and ``MachineBase._apply_op`` are the only
code that changes a state, and they do it by looking the move up here, so
the docs and the tests read the same tables the machines obey. A move that
is not listed raises :class:`LocalProtocolError` (the driver's bug); the
machines check remote input themselves and answer a remote violation with a
``Close`` event before any table lookup could fail.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class LocalProtocolError(Exception):
    """The driver used a protocol machine out of order (a bug in the driver).

    The machine's state is unchanged when this is raised.
    """


class MachineState(enum.Enum):
    """A connection's protocol state."""

    AWAITING_INIT = "awaiting_init"  # no connection_init yet (the init deadline runs)
    INIT_RECEIVED = "init_received"  # authenticating: the driver must accept or reject
    READY = "ready"  # acknowledged: operations may start
    CLOSED = "closed"  # a Close was decided: nothing more is framed or decided


class Trigger(enum.Enum):
    """What moves a connection from one :class:`MachineState` to another."""

    INIT = "init"  # remote: the first connection_init
    ACCEPT = "accept"  # driver: the application accepted the connection
    REJECT = "reject"  # driver: the application refused it
    INIT_TIMEOUT = "init_timeout"  # clock: no connection_init within the deadline
    VIOLATION = "violation"  # remote: a protocol violation (closes with its checklist code)
    TERMINATE = "terminate"  # remote: legacy connection_terminate (1000)
    CLOSE = "close"  # driver: the host ends the connection for its own reason


class OperationState(enum.Enum):
    """One operation id's state on a connection."""

    ABSENT = "absent"  # not known (never requested, or released by the driver)
    LIVE = "live"  # requested and running: frames are sent for it
    CANCELLED = "cancelled"  # the client stopped it, or the connection closed: send nothing
    FINISHED = "finished"  # the server sent its complete/error: send nothing more


class OpTrigger(enum.Enum):
    """What moves an operation id from one :class:`OperationState` to another."""

    SUBSCRIBE = "subscribe"  # remote: subscribe / start (an ended id may be reused)
    CLIENT_COMPLETE = "client_complete"  # remote: complete / stop, or a legacy start reusing it
    SERVER_END = "server_end"  # driver: complete() or error()
    CONNECTION_CLOSED = "connection_closed"  # the connection entered CLOSED
    RELEASE = "release"  # driver: the operation's task is gone; the id is forgotten


_S = MachineState
_T = Trigger

#: (state, trigger) -> next state, for the connection.
CONNECTION_TRANSITIONS: Mapping[tuple[MachineState, Trigger], MachineState] = MappingProxyType(
    {
        (_S.AWAITING_INIT, _T.INIT): _S.INIT_RECEIVED,
        (_S.AWAITING_INIT, _T.INIT_TIMEOUT): _S.CLOSED,
        (_S.AWAITING_INIT, _T.VIOLATION): _S.CLOSED,
        (_S.AWAITING_INIT, _T.TERMINATE): _S.CLOSED,
        (_S.AWAITING_INIT, _T.CLOSE): _S.CLOSED,
        (_S.INIT_RECEIVED, _T.ACCEPT): _S.READY,
        (_S.INIT_RECEIVED, _T.REJECT): _S.CLOSED,
        (_S.INIT_RECEIVED, _T.VIOLATION): _S.CLOSED,
        (_S.INIT_RECEIVED, _T.TERMINATE): _S.CLOSED,
        (_S.INIT_RECEIVED, _T.CLOSE): _S.CLOSED,
        (_S.READY, _T.VIOLATION): _S.CLOSED,
        (_S.READY, _T.TERMINATE): _S.CLOSED,
        (_S.READY, _T.CLOSE): _S.CLOSED,
    }
)

_O = OperationState
_OT = OpTrigger

#: (state, trigger) -> next state, for one operation id.
OPERATION_TRANSITIONS: Mapping[tuple[OperationState, OpTrigger], OperationState] = (
    MappingProxyType(
        {
            (_O.ABSENT, _OT.SUBSCRIBE): _O.LIVE,
            (_O.CANCELLED, _OT.SUBSCRIBE): _O.LIVE,
            (_O.FINISHED, _OT.SUBSCRIBE): _O.LIVE,
            (_O.LIVE, _OT.CLIENT_COMPLETE): _O.CANCELLED,
            (_O.LIVE, _OT.SERVER_END): _O.FINISHED,
            (_O.LIVE, _OT.CONNECTION_CLOSED): _O.CANCELLED,
            (_O.LIVE, _OT.RELEASE): _O.ABSENT,
            (_O.CANCELLED, _OT.RELEASE): _O.ABSENT,
            (_O.FINISHED, _OT.RELEASE): _O.ABSENT,
        }
    )
)
