"""The machines' states against their transition tables, and driver misuse.

Every transition listed in ``_states`` happens on both machines; nothing
unlisted does (a recording subclass sees every move, and random sequences
of peer messages and driver calls never move a machine off the tables or
into an undeclared state); misuse raises ``LocalProtocolError`` and changes
nothing; a peer's violation is still a ``Close`` event, never an exception.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import meshsub_trio
from meshsub_trio._wire import (
    CONNECTION_TRANSITIONS,
    OPERATION_TRANSITIONS,
    Close,
    LegacyWSMachine,
    LocalProtocolError,
    MachineState,
    OperationCancelled,
    OperationState,
    OpTrigger,
    ProtocolMachine,
    TransportWSMachine,
    Trigger,
)

Move = tuple[Any, Any, Any]  # (state before, trigger, state after)


class RecordingTransport(TransportWSMachine):
    """Records every transition it applies."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.moves: list[Move] = []
        self.op_moves: list[tuple[str, Move]] = []

    def _apply(self, trigger: Trigger) -> None:
        before = self.state
        super()._apply(trigger)
        self.moves.append((before, trigger, self.state))

    def _apply_op(self, op_id: str, trigger: OpTrigger) -> None:
        before = self.operation_state(op_id)
        super()._apply_op(op_id, trigger)
        self.op_moves.append((op_id, (before, trigger, self.operation_state(op_id))))


class RecordingLegacy(LegacyWSMachine):
    """Records every transition it applies."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.moves: list[Move] = []
        self.op_moves: list[tuple[str, Move]] = []

    def _apply(self, trigger: Trigger) -> None:
        before = self.state
        super()._apply(trigger)
        self.moves.append((before, trigger, self.state))

    def _apply_op(self, op_id: str, trigger: OpTrigger) -> None:
        before = self.operation_state(op_id)
        super()._apply_op(op_id, trigger)
        self.op_moves.append((op_id, (before, trigger, self.operation_state(op_id))))


Recording = RecordingTransport | RecordingLegacy
MACHINES: list[Callable[..., Recording]] = [RecordingTransport, RecordingLegacy]
LEGACY = {RecordingLegacy}


def send(machine: ProtocolMachine, message: dict[str, Any]) -> list[Any]:
    return machine.receive(json.dumps(message))


def subscribe(machine: ProtocolMachine, op_id: str) -> list[Any]:
    kind = "start" if isinstance(machine, LegacyWSMachine) else "subscribe"
    return send(machine, {"id": op_id, "type": kind, "payload": {"query": "subscription { a }"}})


def client_complete(machine: ProtocolMachine, op_id: str) -> list[Any]:
    kind = "stop" if isinstance(machine, LegacyWSMachine) else "complete"
    return send(machine, {"id": op_id, "type": kind})


def reach(make: Callable[..., Recording], state: MachineState) -> Recording:
    machine = make()
    if state is not MachineState.AWAITING_INIT:
        send(machine, {"type": "connection_init"})
    if state is MachineState.READY:
        machine.accept()
    assert machine.state is state
    return machine


FIRE: dict[Trigger, Callable[[ProtocolMachine], object]] = {
    Trigger.INIT: lambda m: send(m, {"type": "connection_init"}),
    Trigger.ACCEPT: lambda m: m.accept(),
    Trigger.REJECT: lambda m: m.reject(),
    Trigger.INIT_TIMEOUT: lambda m: m.init_timed_out(),
    Trigger.VIOLATION: lambda m: m.receive(b"{}", binary=True),
    Trigger.TERMINATE: lambda m: send(m, {"type": "connection_terminate"}),
    Trigger.CLOSE: lambda m: m.close(1001, "Going away"),
}


def test_the_tables_cover_declared_states_only() -> None:
    for (state, trigger), target in CONNECTION_TRANSITIONS.items():
        assert isinstance(state, MachineState) and isinstance(target, MachineState)
        assert isinstance(trigger, Trigger)
        assert state is not MachineState.CLOSED  # closed is final
    for (op_state, op_trigger), op_target in OPERATION_TRANSITIONS.items():
        assert isinstance(op_state, OperationState) and isinstance(op_target, OperationState)
        assert isinstance(op_trigger, OpTrigger)
    # Every state is reachable, and every trigger is used somewhere.
    assert {t for _, t in CONNECTION_TRANSITIONS} == set(Trigger)
    assert {t for t in CONNECTION_TRANSITIONS.values()} | {MachineState.AWAITING_INIT} == set(
        MachineState
    )
    assert {t for _, t in OPERATION_TRANSITIONS} == set(OpTrigger)


#: Every (machine, listed transition) pair that exists: connection_terminate is legacy-only.
LISTED = [
    (make, move, target)
    for make in MACHINES
    for move, target in CONNECTION_TRANSITIONS.items()
    if move[1] is not Trigger.TERMINATE or make in LEGACY
]


@pytest.mark.parametrize(("make", "move", "target"), LISTED)
def test_every_listed_connection_transition_happens(
    make: Callable[..., Recording], move: tuple[MachineState, Trigger], target: MachineState
) -> None:
    state, trigger = move
    machine = reach(make, state)
    machine.moves.clear()
    FIRE[trigger](machine)
    assert machine.state is target
    assert machine.moves == [(state, trigger, target)]


UNLISTED = [
    (make, state, trigger)
    for make in MACHINES
    for state in MachineState
    for trigger in (Trigger.ACCEPT, Trigger.REJECT, Trigger.CLOSE)
    if (state, trigger) not in CONNECTION_TRANSITIONS
]


@pytest.mark.parametrize(("make", "state", "trigger"), UNLISTED)
def test_unlisted_driver_decisions_raise_and_change_nothing(
    make: Callable[..., Recording], state: MachineState, trigger: Trigger
) -> None:
    machine = make()
    send(machine, {"type": "connection_init"})
    if state is MachineState.AWAITING_INIT:
        machine = make()
    elif state is MachineState.READY:
        machine.accept()
    elif state is MachineState.CLOSED:
        machine.close(1001)
    machine.moves.clear()
    with pytest.raises(LocalProtocolError):
        FIRE[trigger](machine)
    assert machine.state is state and machine.moves == []


@pytest.mark.parametrize("make", MACHINES)
@pytest.mark.parametrize("trigger", [Trigger.INIT, Trigger.INIT_TIMEOUT])
def test_inputs_after_close_are_ignored(make: Callable[..., Recording], trigger: Trigger) -> None:
    """The peer and the clock do not know we closed: their input is dropped, not an error."""
    machine = reach(make, MachineState.READY)
    machine.close(1001)
    machine.moves.clear()
    assert FIRE[trigger](machine) == []
    assert machine.moves == []


def reach_op(machine: Recording, op_state: OperationState) -> None:
    if op_state is not OperationState.ABSENT:
        subscribe(machine, "a")
    if op_state is OperationState.CANCELLED:
        client_complete(machine, "a")
    elif op_state is OperationState.FINISHED:
        machine.complete("a")
    assert machine.operation_state("a") is op_state


FIRE_OP: dict[OpTrigger, Callable[[ProtocolMachine], object]] = {
    OpTrigger.SUBSCRIBE: lambda m: subscribe(m, "a"),
    OpTrigger.CLIENT_COMPLETE: lambda m: client_complete(m, "a"),
    OpTrigger.SERVER_END: lambda m: m.complete("a"),
    OpTrigger.CONNECTION_CLOSED: lambda m: m.close(1001),
    OpTrigger.RELEASE: lambda m: m.release("a"),
}


@pytest.mark.parametrize("make", MACHINES)
@pytest.mark.parametrize(("move", "target"), list(OPERATION_TRANSITIONS.items()))
def test_every_listed_operation_transition_happens(
    make: Callable[..., Recording],
    move: tuple[OperationState, OpTrigger],
    target: OperationState,
) -> None:
    op_state, trigger = move
    machine = reach(make, MachineState.READY)
    reach_op(machine, op_state)
    machine.op_moves.clear()
    FIRE_OP[trigger](machine)
    assert machine.operation_state("a") is target
    assert machine.op_moves == [("a", (op_state, trigger, target))]


@pytest.mark.parametrize("make", MACHINES)
def test_a_legacy_start_reusing_a_live_id_is_two_listed_moves(
    make: Callable[..., Recording],
) -> None:
    machine = reach(make, MachineState.READY)
    subscribe(machine, "a")
    machine.op_moves.clear()
    events = subscribe(machine, "a")
    if make in LEGACY:
        assert events[0] == OperationCancelled("a")
        assert [move for _, move in machine.op_moves] == [
            (OperationState.LIVE, OpTrigger.CLIENT_COMPLETE, OperationState.CANCELLED),
            (OperationState.CANCELLED, OpTrigger.SUBSCRIBE, OperationState.LIVE),
        ]
    else:
        assert events == [Close(4409, "Subscriber for a already exists")]
        assert [move for _, move in machine.op_moves] == [
            (OperationState.LIVE, OpTrigger.CONNECTION_CLOSED, OperationState.CANCELLED)
        ]


# ---- misuse ---------------------------------------------------------------

FRAMES: dict[str, Callable[[ProtocolMachine, str], object]] = {
    "next": lambda m, op_id: m.next(op_id, b"{}"),
    "complete": lambda m, op_id: m.complete(op_id),
    "error": lambda m, op_id: m.error(op_id, [{"message": "x"}]),
}


@pytest.mark.parametrize("make", MACHINES)
@pytest.mark.parametrize("frame", list(FRAMES))
def test_frames_before_the_connection_is_accepted_raise(
    make: Callable[..., Recording], frame: str
) -> None:
    for state in (MachineState.AWAITING_INIT, MachineState.INIT_RECEIVED):
        machine = reach(make, state)
        if make in LEGACY and state is MachineState.INIT_RECEIVED:
            subscribe(machine, "a")  # held for the ack: not an operation yet
        with pytest.raises(LocalProtocolError, match="before the connection was accepted"):
            FRAMES[frame](machine, "a")
        assert machine.state is state


@pytest.mark.parametrize("make", MACHINES)
@pytest.mark.parametrize("frame", list(FRAMES))
def test_frames_for_ids_the_machine_does_not_know_raise(
    make: Callable[..., Recording], frame: str
) -> None:
    machine = reach(make, MachineState.READY)
    with pytest.raises(LocalProtocolError, match="not live"):
        FRAMES[frame](machine, "never-requested")
    subscribe(machine, "a")
    machine.complete("a")
    machine.release("a")  # the driver let it go: using it now is a bug
    with pytest.raises(LocalProtocolError, match="not live"):
        FRAMES[frame](machine, "a")
    machine.close(1001)
    with pytest.raises(LocalProtocolError):
        FRAMES[frame](machine, "never-requested")


@pytest.mark.parametrize("make", MACHINES)
@pytest.mark.parametrize("frame", list(FRAMES))
def test_ended_ids_are_a_race_not_misuse_until_released(
    make: Callable[..., Recording], frame: str
) -> None:
    """The core ends operations concurrently with the client and the connection:
    a frame for an id that ended but is not yet released is None (nothing sent)."""
    machine = reach(make, MachineState.READY)
    subscribe(machine, "c")  # the client completes it
    client_complete(machine, "c")
    subscribe(machine, "s")  # the server completes it
    machine.complete("s")
    subscribe(machine, "x")  # the connection closes under it
    machine.close(1001)
    for op_id in ("c", "s", "x"):
        assert machine.is_live(op_id) is False
        assert FRAMES[frame](machine, op_id) is None
        assert machine.release(op_id) == []
        assert machine.release(op_id) == []  # releasing what is gone is harmless
        assert machine.operation_state(op_id) is OperationState.ABSENT


@pytest.mark.parametrize("make", MACHINES)
def test_keepalive_after_close_raises(make: Callable[..., Recording]) -> None:
    machine = reach(make, MachineState.READY)
    assert machine.keepalive() is not None
    machine.close(1000)
    with pytest.raises(LocalProtocolError):
        machine.keepalive()


def test_local_protocol_error_is_public() -> None:
    assert meshsub_trio.LocalProtocolError is LocalProtocolError
    assert "LocalProtocolError" in meshsub_trio.__all__


# ---- random sequences ---------------------------------------------------------

IDS = st.sampled_from(["a", "b"])
PEER = st.one_of(
    st.just({"type": "connection_init"}),
    st.just({"type": "connection_init", "payload": "bad"}),
    st.builds(lambda i: {"id": i, "type": "subscribe", "payload": {"query": "{ a }"}}, IDS),
    st.builds(lambda i: {"id": i, "type": "start", "payload": {"query": "{ a }"}}, IDS),
    st.builds(lambda i: {"id": i, "type": "complete"}, IDS),
    st.builds(lambda i: {"id": i, "type": "stop"}, IDS),
    st.just({"type": "ping"}),
    st.just({"type": "pong"}),
    st.just({"type": "connection_terminate"}),
    st.just({"type": "next", "id": "a", "payload": {}}),
    st.just({"nonsense": True}),
)
STEP = st.one_of(
    st.tuples(st.just("peer"), PEER),
    st.tuples(st.just("binary"), st.none()),
    st.tuples(st.sampled_from(["accept", "reject", "close", "timeout", "keepalive"]), st.none()),
    st.tuples(st.sampled_from(["next", "complete", "error", "release"]), IDS),
)


def run_step(machine: Recording, step: tuple[str, Any]) -> None:
    kind, arg = step
    if kind == "peer":
        machine.receive(json.dumps(arg))  # never raises
    elif kind == "binary":
        machine.receive(b"\x00", binary=True)
    elif kind == "timeout":
        machine.init_timed_out()  # never raises
    elif kind == "release":
        machine.release(arg)  # never raises
    else:
        calls: dict[str, Callable[[], object]] = {
            "accept": machine.accept,
            "reject": machine.reject,
            "close": lambda: machine.close(1001),
            "keepalive": machine.keepalive,
            "next": lambda: machine.next(arg, b"{}"),
            "complete": lambda: machine.complete(arg),
            "error": lambda: machine.error(arg, []),
        }
        call = calls[kind]
        snapshot = (machine.state, dict(machine._operations), len(machine.moves))
        try:
            call()
        except LocalProtocolError:
            # Misuse changes nothing.
            assert (machine.state, dict(machine._operations), len(machine.moves)) == snapshot


def check_invariants(machine: Recording) -> None:
    assert isinstance(machine.state, MachineState)
    states = machine._operations
    assert all(isinstance(s, OperationState) and s is not OperationState.ABSENT for s in states.values())
    live = sum(s is OperationState.LIVE for s in states.values())
    assert machine.live_operations == live
    assert machine.limit is None or live <= machine.limit
    if machine.state in (MachineState.AWAITING_INIT, MachineState.INIT_RECEIVED):
        assert not states  # operations start only once accepted
    if machine.state is MachineState.CLOSED:
        assert live == 0
    for before, trigger, after in machine.moves:
        assert CONNECTION_TRANSITIONS[(before, trigger)] is after
    for _, (before, op_trigger, after) in machine.op_moves:
        assert OPERATION_TRANSITIONS[(before, op_trigger)] is after


@settings(max_examples=300, deadline=None)
@given(legacy=st.booleans(), limit=st.sampled_from([None, 1, 2]), steps=st.lists(STEP, max_size=25))
def test_random_sequences_stay_on_the_tables(
    legacy: bool, limit: int | None, steps: list[tuple[str, Any]]
) -> None:
    machine: Recording = (RecordingLegacy if legacy else RecordingTransport)(max_operations=limit)
    for step in steps:
        state_before = machine.state
        moves_before = len(machine.moves)
        run_step(machine, step)
        # The state changes only through a recorded, listed transition.
        if machine.state is not state_before:
            assert machine.moves[moves_before:], step
            assert machine.moves[moves_before][0] is state_before
            assert machine.moves[-1][2] is machine.state
        check_invariants(machine)
