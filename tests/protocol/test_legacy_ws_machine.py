"""Legacy Apollo graphql-ws state machine, without sockets."""

from __future__ import annotations

import json
from typing import Any

from meshsub_trio._wire import (
    Close,
    InitRequested,
    LegacyWSMachine,
    OperationCancelled,
    OperationRequested,
    Send,
)


def feed(machine: LegacyWSMachine, message: Any) -> list[Any]:
    return machine.receive(message if isinstance(message, str) else json.dumps(message))


def start(op_id: str = "1", query: str = "subscription { ticks }") -> dict[str, Any]:
    return {"id": op_id, "type": "start", "payload": {"query": query}}


def acked() -> LegacyWSMachine:
    machine = LegacyWSMachine()
    feed(machine, {"type": "connection_init", "payload": {}})
    machine.accept()
    return machine


def decoded(events: list[Any]) -> list[Any]:
    return [json.loads(e.data) if isinstance(e, Send) else e for e in events]


def test_ack_is_followed_by_ka_and_held_starts() -> None:
    machine = LegacyWSMachine()
    assert feed(machine, {"type": "connection_init", "payload": {"a": 1}}) == [
        InitRequested({"a": 1})
    ]
    assert feed(machine, start("1")) == []  # held until the connection is authorised
    events = decoded(machine.accept())
    assert events == [
        {"type": "connection_ack"},
        {"type": "ka"},
        OperationRequested("1", "subscription { ticks }", None, None, None),
    ]


def test_start_without_init_closes_4401() -> None:
    assert feed(LegacyWSMachine(), start()) == [Close(4401, "Unauthorized")]


def test_reject_sends_connection_error_then_closes_1011() -> None:
    machine = LegacyWSMachine()
    feed(machine, {"type": "connection_init"})
    feed(machine, start())
    events = machine.reject("Prohibited connection!")
    assert decoded(events)[0] == {
        "type": "connection_error",
        "payload": {"message": "Prohibited connection!"},
    }
    assert events[1] == Close(1011, "Prohibited connection!")


def test_invalid_json_gets_connection_error_and_stays_open() -> None:
    machine = acked()
    [reply] = decoded(feed(machine, "HI"))
    assert reply["type"] == "connection_error" and "message" in reply["payload"]
    assert not machine.closed


def test_unknown_type_and_empty_object_get_error_and_stay_open() -> None:
    machine = acked()
    assert decoded(feed(machine, {})) == [
        {"type": "error", "payload": {"message": "Invalid message type!"}}
    ]
    assert decoded(feed(machine, {"type": "nope", "id": "7"})) == [
        {"id": "7", "type": "error", "payload": {"message": "Invalid message type!"}}
    ]
    assert not machine.closed


def test_binary_frames_close_1003() -> None:
    assert acked().receive(b"{}", binary=True)[0].code == 1003


def test_stop_cancels_and_completes_unknown_stop_is_ignored() -> None:
    machine = acked()
    feed(machine, start("1"))
    assert decoded(feed(machine, {"type": "stop", "id": "1"})) == [
        OperationCancelled("1"),
        {"id": "1", "type": "complete"},
    ]
    assert feed(machine, {"type": "stop", "id": "toString"}) == []
    assert machine.next("1", b"{}") is None


def test_start_reusing_a_live_id_replaces_it() -> None:
    machine = acked()
    feed(machine, start("1"))
    events = feed(machine, start("1", "{ hello }"))
    assert events == [
        OperationCancelled("1"),
        OperationRequested("1", "{ hello }", None, None, None),
    ]


def test_data_error_and_complete_frames() -> None:
    machine = acked()
    feed(machine, start("1"))
    assert json.loads(machine.next("1", b'{"data":{"a":1}}')) == {
        "id": "1",
        "type": "data",
        "payload": {"data": {"a": 1}},
    }
    assert json.loads(machine.error("1", [{"message": "one"}, {"message": "two"}])) == {
        "id": "1",
        "type": "error",
        "payload": {"message": "one"},
    }
    assert machine.complete("1") is None  # nothing after error


def test_connection_terminate_closes_normally() -> None:
    assert feed(acked(), {"type": "connection_terminate"}) == [Close(1000, "")]


def test_non_object_init_payload_is_a_connection_error() -> None:
    machine = LegacyWSMachine()
    events = feed(machine, {"type": "connection_init", "payload": "gonna fail"})
    assert decoded(events)[0]["type"] == "connection_error"
    assert isinstance(events[1], Close)


def test_ka_only_after_ack_and_not_a_probe() -> None:
    machine = LegacyWSMachine()
    assert machine.keepalive() is None
    assert not machine.keepalive_is_probe
    assert acked().keepalive() == b'{"type":"ka"}'


def test_operation_cap() -> None:
    machine = LegacyWSMachine(max_operations=1)
    feed(machine, {"type": "connection_init"})
    machine.accept()
    feed(machine, start("1"))
    assert decoded(feed(machine, start("2"))) == [
        {"id": "2", "type": "error", "payload": {"message": "Subscription limit reached"}}
    ]


def test_an_id_longer_than_128_characters_is_an_error_that_does_not_echo_it() -> None:
    machine = acked()
    assert decoded(feed(machine, start("x" * 129))) == [
        {"type": "error", "payload": {"message": '"id" is longer than 128 characters'}}
    ]
    [requested] = feed(machine, start("y" * 128))
    assert isinstance(requested, OperationRequested)
