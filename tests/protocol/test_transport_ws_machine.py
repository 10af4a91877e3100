"""graphql-transport-ws state machine, without sockets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from meshsub_trio._wire import (
    Close,
    InitRequested,
    LocalProtocolError,
    OperationCancelled,
    OperationRequested,
    Send,
    TransportWSMachine,
)


def feed(machine: TransportWSMachine, message: Any) -> list[Any]:
    return machine.receive(message if isinstance(message, str) else json.dumps(message))


def acked(**kwargs: Any) -> TransportWSMachine:
    machine = TransportWSMachine(**kwargs)
    assert feed(machine, {"type": "connection_init"}) == [InitRequested(None)]
    assert machine.accept() == [Send(b'{"type":"connection_ack"}')]
    return machine


def subscribe(op_id: str = "1", query: str = "subscription { ticks }") -> dict[str, Any]:
    return {"id": op_id, "type": "subscribe", "payload": {"query": query}}


INVALID = [
    "not json",
    '""',
    "0",
    "9",
    "[]",
    "null",
    "{}",
    '{"type":""}',
    '{"type":0}',
    '{"type":"nuxt"}',
    '{"type":"connection_init","payload":""}',
    '{"type":"connection_init","payload":0}',
    '{"type":"ping","payload":""}',
    '{"type":"pong","payload":0}',
    '{"type":"subscribe","payload":{"query":"{ a }"}}',
    '{"type":"subscribe","id":"","payload":{"query":"{ a }"}}',
    '{"type":"subscribe","id":0,"payload":{"query":"{ a }"}}',
    '{"type":"subscribe","id":"1"}',
    '{"type":"subscribe","id":"1","payload":""}',
    '{"type":"subscribe","id":"1","payload":[]}',
    '{"type":"subscribe","id":"1","payload":{}}',
    '{"type":"subscribe","id":"1","payload":{"query":0}}',
    '{"type":"subscribe","id":"1","payload":{"query":"{ a }","variables":""}}',
    '{"type":"subscribe","id":"1","payload":{"query":"{ a }","variables":[]}}',
    '{"type":"subscribe","id":"1","payload":{"query":"{ a }","operationName":{}}}',
    '{"type":"subscribe","id":"1","payload":{"query":"{ a }","operationName":0}}',
    '{"type":"subscribe","id":"1","payload":{"query":"{ a }","extensions":""}}',
    '{"type":"subscribe","id":"1","payload":{"query":"{ a }","extensions":0}}',
    '{"type":"complete"}',
    '{"type":"complete","id":""}',
    '{"type":"complete","id":0}',
    '{"type":"subscribe","notPayload":null}',
    '{"id":"1","type":"next","payload":{}}',
    '{"type":"connection_ack"}',
    '{"id":"1","type":"error","payload":[]}',
    # Every result frame repeats the id: a longer one than 128 characters is refused.
    json.dumps(subscribe("x" * 129)),
    '{"type":"complete","id":"' + "x" * 129 + '"}',
]


@pytest.mark.parametrize("text", INVALID)
def test_invalid_messages_close_4400_before_and_after_ack(text: str) -> None:
    for machine in (TransportWSMachine(), acked()):
        events = machine.receive(text)
        assert len(events) == 1 and isinstance(events[0], Close), events
        assert events[0].code == 4400
        assert machine.closed
        assert machine.receive('{"type":"ping"}') == []  # nothing after a close


def test_binary_frames_close_4400() -> None:
    assert TransportWSMachine().receive(b"{}", binary=True)[0].code == 4400


def test_init_payload_may_be_absent_null_or_object() -> None:
    for payload in (None, {"token": "t"}):
        machine = TransportWSMachine()
        assert feed(machine, {"type": "connection_init", "payload": payload}) == [
            InitRequested(payload)
        ]
    assert feed(TransportWSMachine(), '{"type":"connection_init","payload":null}') == [
        InitRequested(None)
    ]


def test_ack_payload_is_sent_only_when_given() -> None:
    machine = TransportWSMachine()
    feed(machine, {"type": "connection_init"})
    assert machine.accept({"itsa": "me"}) == [
        Send(b'{"type":"connection_ack","payload":{"itsa":"me"}}')
    ]
    with pytest.raises(LocalProtocolError):
        machine.accept()  # at most one ack: a second is the driver's bug


def test_second_init_closes_4429_while_pending_and_after_ack() -> None:
    pending = TransportWSMachine()
    feed(pending, {"type": "connection_init"})
    assert feed(pending, {"type": "connection_init"}) == [
        Close(4429, "Too many initialisation requests")
    ]
    assert feed(acked(), {"type": "connection_init"})[0].code == 4429


def test_ping_gets_pong_with_echoed_payload_at_any_stage() -> None:
    assert feed(TransportWSMachine(), {"type": "ping"}) == [Send(b'{"type":"pong"}')]
    assert feed(acked(), {"type": "ping", "payload": {"iCome": "back"}}) == [
        Send(b'{"type":"pong","payload":{"iCome":"back"}}')
    ]
    assert feed(acked(), {"type": "pong"}) == []


def test_subscribe_before_ack_closes_4401() -> None:
    assert feed(TransportWSMachine(), subscribe())[0] == Close(4401, "Unauthorized")
    pending = TransportWSMachine()
    feed(pending, {"type": "connection_init"})
    assert feed(pending, subscribe())[0] == Close(4401, "Unauthorized")


def test_subscribe_starts_an_operation_and_duplicates_close_4409() -> None:
    machine = acked()
    [request] = feed(machine, subscribe("a", "query Q { hello }"))
    assert request == OperationRequested("a", "query Q { hello }", None, None, None)
    assert feed(machine, subscribe("a")) == [Close(4409, "Subscriber for a already exists")]


def test_finished_ids_can_be_reused() -> None:
    machine = acked()
    feed(machine, subscribe("a"))
    assert machine.complete("a") == b'{"id":"a","type":"complete"}'
    assert isinstance(feed(machine, subscribe("a"))[0], OperationRequested)
    assert (
        machine.error("a", [{"message": "x"}])
        == b'{"id":"a","type":"error","payload":[{"message":"x"}]}'
    )
    assert isinstance(feed(machine, subscribe("a"))[0], OperationRequested)


def test_client_complete_cancels_and_silences_the_operation() -> None:
    machine = acked()
    feed(machine, subscribe("a"))
    assert feed(machine, {"type": "complete", "id": "a"}) == [OperationCancelled("a")]
    assert machine.next("a", b"{}") is None
    assert machine.complete("a") is None  # no complete echoed back
    assert feed(machine, {"type": "complete", "id": "a"}) == []  # unknown id: ignored


def test_next_wraps_the_shared_payload() -> None:
    machine = acked()
    feed(machine, subscribe("op"))
    frame = machine.next("op", b'{"data":{"n":1}}')
    assert json.loads(frame) == {"id": "op", "type": "next", "payload": {"data": {"n": 1}}}


def test_operation_cap_answers_with_error_and_keeps_the_socket() -> None:
    machine = acked(max_operations=1)
    feed(machine, subscribe("a"))
    [reply] = feed(machine, subscribe("b"))
    assert json.loads(reply.data) == {
        "id": "b",
        "type": "error",
        "payload": [{"message": "Subscription limit reached"}],
    }
    assert not machine.closed
    machine.complete("a")
    assert isinstance(feed(machine, subscribe("b"))[0], OperationRequested)


def test_init_timeout_only_before_init() -> None:
    assert TransportWSMachine().init_timed_out() == [
        Close(4408, "Connection initialisation timeout")
    ]
    machine = TransportWSMachine()
    feed(machine, {"type": "connection_init"})
    assert machine.init_timed_out() == []  # the timer stops at init, not at ack


def test_reject_closes_4403_without_ack() -> None:
    machine = TransportWSMachine()
    feed(machine, {"type": "connection_init"})
    assert machine.reject() == [Close(4403, "Forbidden")]
    with pytest.raises(LocalProtocolError):
        machine.accept()  # no ack after a close


def test_long_reasons_are_clipped_to_123_bytes() -> None:
    machine = acked()
    long_id = "x" * 128  # the longest id allowed: "Subscriber for <id> already exists" is longer
    feed(machine, subscribe(long_id))
    [close] = feed(machine, subscribe(long_id))
    assert len(close.reason.encode()) <= 123


def test_keepalive_is_a_ping_probe() -> None:
    machine = TransportWSMachine()
    assert machine.keepalive_is_probe
    assert machine.keepalive() == b'{"type":"ping"}'


def test_an_id_of_128_characters_is_accepted() -> None:
    machine = acked()
    [requested] = feed(machine, subscribe("x" * 128))
    assert isinstance(requested, OperationRequested) and requested.id == "x" * 128
