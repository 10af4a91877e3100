"""The client's protocol machines without a network: frames out, events in, misuse raises."""

from __future__ import annotations

import json

import pytest

from meshsub_trio.client._wire import (
    Acknowledged,
    Completed,
    Failed,
    LegacyWSClient,
    LocalProtocolError,
    Next,
    Pong,
    ProtocolViolation,
    Refused,
    Reply,
    State,
    TransportWSClient,
    machine_for,
)


def acked(machine: TransportWSClient | LegacyWSClient) -> TransportWSClient | LegacyWSClient:
    machine.connection_init({"token": "t"})
    assert machine.receive('{"type":"connection_ack"}') == [Acknowledged(None)]
    return machine


def test_transport_ws_happy_path() -> None:
    machine = TransportWSClient()
    assert json.loads(machine.connection_init({"a": 1})) == {
        "type": "connection_init",
        "payload": {"a": 1},
    }
    assert machine.state is State.INIT_SENT
    assert machine.receive('{"type":"connection_ack","payload":{"x":1}}') == [
        Acknowledged({"x": 1})
    ]
    frame = json.loads(machine.subscribe("1", {"query": "subscription { s }"}))
    assert frame == {"id": "1", "type": "subscribe", "payload": {"query": "subscription { s }"}}
    assert machine.receive('{"id":"1","type":"next","payload":{"data":{"s":1}}}') == [
        Next("1", {"data": {"s": 1}})
    ]
    assert machine.receive('{"id":"1","type":"complete"}') == [Completed("1")]
    assert machine.live == frozenset()


def test_transport_ws_error_ends_the_operation_and_later_messages_are_ignored() -> None:
    machine = acked(TransportWSClient())
    machine.subscribe("7", {"query": "{ x }"})
    assert machine.receive('{"id":"7","type":"error","payload":[{"message":"bad"}]}') == [
        Failed("7", [{"message": "bad"}])
    ]
    assert machine.receive('{"id":"7","type":"next","payload":{"data":null}}') == []
    assert machine.receive('{"id":"7","type":"complete"}') == []


def test_client_complete_stops_delivery_of_messages_in_flight() -> None:
    machine = acked(TransportWSClient())
    machine.subscribe("1", {"query": "{ x }"})
    assert json.loads(machine.complete("1") or "") == {"id": "1", "type": "complete"}
    assert machine.complete("1") is None  # once
    assert machine.receive('{"id":"1","type":"next","payload":{"data":{}}}') == []


def test_transport_ws_ping_is_answered_with_its_payload_and_pong_reported() -> None:
    machine = TransportWSClient()
    assert machine.receive('{"type":"ping","payload":{"k":1}}') == [
        Reply('{"type":"pong","payload":{"k":1}}')
    ]
    assert machine.receive('{"type":"pong"}') == [Pong(None)]
    assert machine.ping() == '{"type":"ping"}'


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"connection_ack"}',  # binary
        "not json",
        "[]",
        '{"type":1}',
        '{"type":"nope"}',
        '{"type":"subscribe","id":"1","payload":{}}',  # client-only type
        '{"id":"1","type":"next","payload":{"data":{}}}',  # before the ack
    ],
)
def test_transport_ws_violations(frame: str | bytes) -> None:
    machine = TransportWSClient()
    machine.connection_init(None)
    with pytest.raises(ProtocolViolation):
        machine.receive(frame)


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"connection_ack"}',  # twice
        '{"id":"","type":"next","payload":{}}',
        '{"id":"1","type":"next","payload":[]}',
        '{"id":"1","type":"error","payload":[]}',
        '{"id":"1","type":"error","payload":[{"nomessage":1}]}',
        '{"type":"complete"}',
        '{"type":"pong","payload":3}',
    ],
)
def test_transport_ws_violations_after_ack(frame: str) -> None:
    machine = acked(TransportWSClient())
    machine.subscribe("1", {"query": "{ x }"})
    with pytest.raises(ProtocolViolation):
        machine.receive(frame)


def test_local_misuse_raises() -> None:
    machine = TransportWSClient()
    with pytest.raises(LocalProtocolError):
        machine.subscribe("1", {"query": "{ x }"})
    machine.connection_init(None)
    with pytest.raises(LocalProtocolError):
        machine.connection_init(None)
    with pytest.raises(LocalProtocolError):
        machine.subscribe("1", {"query": "{ x }"})  # not acknowledged yet
    machine.receive('{"type":"connection_ack"}')
    machine.subscribe("1", {"query": "{ x }"})
    with pytest.raises(LocalProtocolError):
        machine.subscribe("1", {"query": "{ x }"})  # still live
    with pytest.raises(LocalProtocolError):
        machine.subscribe("", {"query": "{ x }"})


def test_legacy_happy_path_and_normalised_errors() -> None:
    machine = LegacyWSClient()
    assert machine.ping() is None
    assert json.loads(machine.terminate()) == {"type": "connection_terminate"}
    acked(machine)
    assert machine.receive('{"type":"ka"}') == []
    frame = json.loads(machine.subscribe("1", {"query": "subscription { s }"}))
    assert frame["type"] == "start"
    assert machine.receive('{"id":"1","type":"data","payload":{"data":{"s":1}}}') == [
        Next("1", {"data": {"s": 1}})
    ]
    assert json.loads(machine.complete("1") or "") == {"id": "1", "type": "stop"}
    machine.subscribe("2", {"query": "{ x }"})
    assert machine.receive('{"id":"2","type":"error","payload":{"message":"no"}}') == [
        Failed("2", [{"message": "no"}])
    ]
    assert machine.receive('{"type":"something_new"}') == []  # ignored, as Apollo does


def test_legacy_connection_error_is_a_refusal() -> None:
    machine = LegacyWSClient()
    machine.connection_init({"authToken": "x"})
    assert machine.receive('{"type":"connection_error","payload":{"message":"bad"}}') == [
        Refused({"message": "bad"})
    ]


def test_legacy_error_for_no_operation_is_a_violation() -> None:
    machine = acked(LegacyWSClient())
    with pytest.raises(ProtocolViolation, match="Invalid message type"):
        machine.receive('{"type":"error","payload":{"message":"Invalid message type!"}}')


def test_machine_for() -> None:
    assert isinstance(machine_for("graphql-transport-ws"), TransportWSClient)
    assert isinstance(machine_for("graphql-ws"), LegacyWSClient)
    with pytest.raises(ValueError):
        machine_for("graphql-sse")
