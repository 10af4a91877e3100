"""What both protocol machines share: states, the one place that moves them, envelopes.

The connection's state and each operation id's state change only in
:meth:`MachineBase._apply` and :meth:`MachineBase._apply_op`, which follow
the tables in ``_states``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .._encoding import dumps
from ._events import Close, CloseCode, Event, clip_reason
from ._states import (
    CONNECTION_TRANSITIONS,
    OPERATION_TRANSITIONS,
    LocalProtocolError,
    MachineState,
    OperationState,
    OpTrigger,
    Trigger,
)

#: The longest operation id a client may choose (a UUID is 36). Every frame
#: for an operation repeats its id, so an unbounded one multiplied the
#: memory and the bytes of each result (up to a message's size per frame).
MAX_OPERATION_ID = 128

# Module constants: the per-message check is one dict lookup and an identity compare.
_LIVE = OperationState.LIVE
_ABSENT = OperationState.ABSENT
_CLOSED = MachineState.CLOSED


class MachineBase:
    """The state and outbound envelopes common to both GraphQL WebSocket protocols."""

    __slots__ = ("_live", "_operations", "limit", "state")

    #: The message type that carries a result (``next`` or ``data``).
    result_type: ClassVar[bytes]

    def __init__(self, *, max_operations: int | None = 100) -> None:
        self.state = MachineState.AWAITING_INIT
        #: The most operations live at once (None: no cap).
        self.limit = max_operations
        # Ids that are not ABSENT, with their state; ended ids stay until released.
        self._operations: dict[str, OperationState] = {}
        self._live = 0

    # ---- queries (never raise, never change anything) ------------------
    @property
    def closed(self) -> bool:
        """Whether a Close was decided (by the peer's input, the clock or the driver)."""
        return self.state is _CLOSED

    def operation_state(self, op_id: str) -> OperationState:
        """The state of *op_id*: ask this before a call that may find it gone."""
        return self._operations.get(op_id, _ABSENT)

    def is_live(self, op_id: str) -> bool:
        return self._operations.get(op_id) is _LIVE

    @property
    def live_operations(self) -> int:
        return self._live

    # ---- the one place that applies transitions ----------------------
    def _apply(self, trigger: Trigger) -> None:
        """Move the connection by *trigger*, or raise if the table has no such move."""
        target = CONNECTION_TRANSITIONS.get((self.state, trigger))
        if target is None:
            raise LocalProtocolError(
                f"{trigger.value} is not allowed when the connection is {self.state.value}"
            )
        self.state = target
        if target is _CLOSED:
            for op_id, op_state in list(self._operations.items()):
                if op_state is _LIVE:
                    self._apply_op(op_id, OpTrigger.CONNECTION_CLOSED)
            self._on_closed()

    def _apply_op(self, op_id: str, trigger: OpTrigger) -> None:
        """Move *op_id* by *trigger*, or raise if the table has no such move."""
        current = self._operations.get(op_id, _ABSENT)
        target = OPERATION_TRANSITIONS.get((current, trigger))
        if target is None:
            raise LocalProtocolError(
                f"{trigger.value} is not allowed for operation {op_id[:64]!r} "
                f"({current.value})"
            )
        if current is _LIVE:
            self._live -= 1
        if target is _LIVE:
            self._live += 1
        if target is _ABSENT:
            del self._operations[op_id]
        else:
            self._operations[op_id] = target

    def _on_closed(self) -> None:
        """Hook: what else a machine drops when the connection closes."""

    def _has_room(self) -> bool:
        return self.limit is None or self._live < self.limit

    def _violation(self, code: int, reason: str) -> list[Event]:
        """The peer broke the protocol: close with the checklist's code."""
        self._apply(Trigger.VIOLATION)
        return [Close(code, clip_reason(reason))]

    # ---- inputs: what happened; each returns the events to act on -----
    def init_timed_out(self) -> list[Event]:
        """The init deadline passed: close 4408 unless ``connection_init`` came.

        The clock may race ``connection_init`` or a close: then nothing happens.
        """
        if self.state is not MachineState.AWAITING_INIT:
            return []
        self._apply(Trigger.INIT_TIMEOUT)
        return [Close(CloseCode.INIT_TIMEOUT, "Connection initialisation timeout")]

    def close(self, code: int, reason: str = "") -> list[Event]:
        """The host ends the connection for its own reason (shutdown, a failed hook, a
        lost socket); raises after the connection is already closed."""
        self._apply(Trigger.CLOSE)
        return [Close(code, clip_reason(reason))]

    def release(self, op_id: str) -> list[Event]:
        """The operation's task is gone: forget *op_id* in whatever state it is.

        The non-raising way to end an operation that may already be gone (the
        client completed it, the connection closed, or it was never live).
        Only the id's current holder may release it: after a client
        ``complete`` the client may already have reused the id.
        """
        if op_id in self._operations:
            self._apply_op(op_id, OpTrigger.RELEASE)
        return []

    # ---- frames: what to send; each returns bytes, or None ------------
    def next(self, op_id: str, payload: bytes) -> bytes | None:
        """A result frame around the pre-encoded *payload*; None if *op_id* ended."""
        if self._operations.get(op_id) is not _LIVE:
            self._check_ended(op_id, "next")
            return None
        return b'{"id":%b,"type":"%b","payload":%b}' % (dumps(op_id), self.result_type, payload)

    def may_send(self, op_id: str) -> bool:
        """Whether a result frame may be sent for *op_id* now (what :meth:`next`
        checks, raising the same way for an id it does not know)."""
        if self._operations.get(op_id) is _LIVE:
            return True
        self._check_ended(op_id, "next")
        return False

    def wrap(self, op_id: str, payload: bytes) -> bytes:
        """The result frame :meth:`next` would give, without the check: for a
        fan-out that frames a burst once per operation id, then checks each
        connection's machine with :meth:`may_send`."""
        return b'{"id":%b,"type":"%b","payload":%b}' % (dumps(op_id), self.result_type, payload)

    def complete(self, op_id: str) -> bytes | None:
        """The ``complete`` frame, once; None if *op_id* already ended."""
        if self._operations.get(op_id) is not _LIVE:
            self._check_ended(op_id, "complete")
            return None
        self._apply_op(op_id, OpTrigger.SERVER_END)
        return complete_frame(op_id)

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> bytes | None:
        """The ``error`` frame that ends *op_id*; None if it already ended."""
        if self._operations.get(op_id) is not _LIVE:
            self._check_ended(op_id, "error")
            return None
        self._apply_op(op_id, OpTrigger.SERVER_END)
        return self._error_frame(op_id, errors)

    def _error_frame(self, op_id: str, errors: list[dict[str, Any]]) -> bytes:
        raise NotImplementedError

    def _check_ended(self, op_id: str, what: str) -> None:
        """Nothing to send for an id that ended but is not released (a race the
        driver cannot avoid); an id the machine does not know is misuse."""
        if op_id in self._operations:
            return
        if self.state is MachineState.AWAITING_INIT or self.state is MachineState.INIT_RECEIVED:
            raise LocalProtocolError(f"{what} before the connection was accepted")
        raise LocalProtocolError(f"{what} for operation {op_id[:64]!r}, which is not live")

    def _check_open(self, what: str) -> None:
        if self.state is _CLOSED:
            raise LocalProtocolError(f"{what} after the connection closed")


def complete_frame(op_id: str) -> bytes:
    return b'{"id":%b,"type":"complete"}' % dumps(op_id)
