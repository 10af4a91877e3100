"""Log lines an operator reads: what they say, at which level, and never a token.

Connection and operation lines are DEBUG (a busy server opens thousands of
connections a second); access lines and refused authentications INFO; a slow
consumer WARNING. Each test drives a real server over real sockets and reads
the records pytest captured, formatted by both of ``--log-format``'s formatters.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import Server
from meshsub_trio._logging import JsonFormatter, TextFormatter, configure_logging, record_fields

from ..wsclient import LEGACY, TRANSPORT, open_raw_client
from ._helpers import SECRET, auth_app


def _lines(records: list[logging.LogRecord]) -> list[str]:
    """Every record as both formats would write it."""
    text, as_json = TextFormatter(), JsonFormatter()
    return [f(r) for r in records for f in (text.format, as_json.format)]


def _named(records: list[logging.LogRecord], message: str) -> list[dict[str, Any]]:
    """The fields of the records saying *message*, with their level as ``levelno``."""
    return [
        {**record_fields(r), "levelno": r.levelno} for r in records if r.getMessage() == message
    ]


def _access(records: list[logging.LogRecord]) -> list[dict[str, Any]]:
    return [
        {**record_fields(r), "levelno": r.levelno, "message": r.getMessage()}
        for r in records
        if r.name == "meshsub_trio.access"
    ]


@pytest.fixture(autouse=True)
def root_logger_restored() -> Iterator[None]:
    """``configure_logging`` sets the root logger's level and handlers for the
    process; left at DEBUG, every later test in the run would build and capture
    every debug line (the churn test's RSS grew by megabytes from that)."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    root.handlers[:] = handlers


def test_json_lines_carry_time_level_logger_message_and_fields() -> None:
    stream = io.StringIO()
    handler = configure_logging("info", "json", stream)
    try:
        log = logging.getLogger("meshsub_trio.test")
        log.debug("not at info")
        log.info("connection closed", extra={"peer": "127.0.0.1:5", "code": 1000})
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed", extra={"operation_id": "7"})
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["message"] for line in lines] == ["connection closed", "failed"]
    first = lines[0]
    assert (first["level"], first["logger"], first["peer"], first["code"]) == (
        "INFO", "meshsub_trio.test", "127.0.0.1:5", 1000,
    )
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert lines[1]["operation_id"] == "7" and "ValueError: boom" in lines[1]["exception"]


def test_text_lines_append_fields_as_key_value() -> None:
    stream = io.StringIO()
    handler = configure_logging("debug", "text", stream)
    try:
        logging.getLogger("meshsub_trio.test").debug(
            "request", extra={"path": "/healthz", "status": 200, "reason": "two words"}
        )
    finally:
        logging.getLogger().removeHandler(handler)
    line = stream.getvalue().strip()
    assert line.endswith('request path=/healthz status=200 reason="two words"'), line
    assert " DEBUG " in line and "meshsub_trio.test:" in line
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "xml")


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_connection_and_operation_lines(
    server: Server, caplog: pytest.LogCaptureFixture, protocol: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshsub_trio")
    async with open_raw_client(server.port, subprotocols=[protocol]) as client:
        local = client.ws.local
        assert not isinstance(local, str)  # a TCP endpoint, not a Unix socket path
        local_port = local.port
        assert (await client.init())["type"] == "connection_ack"
        start = "subscribe" if protocol == TRANSPORT else "start"
        payload = {"query": "subscription Count { countdown(to: 2) }", "operationName": "Count"}
        await client.send({"id": "1", "type": start, "payload": payload})
        await client.receive_until("complete")
        payload = {"query": "subscription Ticks { ticks(everyMs: 5) }", "operationName": "Ticks"}
        await client.send({"id": "2", "type": start, "payload": payload})
        await client.receive()
        await client.send({"id": "2", "type": "complete" if protocol == TRANSPORT else "stop"})
        with trio.fail_after(5):
            await server.metrics.wait_for(lambda m: m.live_operations == 0)
        await client.ws.aclose(code=1000)
    with trio.fail_after(5):
        await server.metrics.wait_idle()
    records = caplog.records
    opened, closed = _named(records, "connection opened"), _named(records, "connection closed")
    assert len(opened) == len(closed) == 1
    assert opened[0]["levelno"] == closed[0]["levelno"] == logging.DEBUG
    assert (closed[0]["peer"], closed[0]["protocol"], closed[0]["code"]) == (
        f"127.0.0.1:{local_port}", protocol, 1000,
    )
    assert 0 <= closed[0]["duration_s"] < 5
    started = _named(records, "operation started")
    assert [(r["operation_id"], r["operation_name"]) for r in started] == [("1", "Count"), ("2", "Ticks")]
    ended = {r["operation_id"]: r for r in _named(records, "operation ended")}
    # countdown(to: 2): three values and the complete; the client stopped the ticks.
    assert (ended["1"]["end"], ended["1"]["sent"], ended["1"]["dropped"]) == ("complete", 4, 0)
    assert ended["2"]["end"] == "stopped" and ended["2"]["sent"] >= 1
    assert ended["1"]["duration_s"] >= 0.02  # it slept 10 ms twice
    assert all(r["levelno"] == logging.DEBUG for r in [*started, *ended.values()])


async def test_debug_lines_are_not_built_at_info(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """At INFO (the default) a connection's life logs nothing and costs no lookup
    of the peer's address."""
    caplog.set_level(logging.INFO, logger="meshsub_trio")
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        (connection,) = server.state.connections
        await client.send({"id": "1", "type": "subscribe", "payload": {"query": "{ hello }"}})
        await client.receive_until("complete")
        assert connection._peer is None and connection._opened is None
    with trio.fail_after(5):
        await server.metrics.wait_idle()
    quiet = ("meshsub_trio.connection", "meshsub_trio.operation")
    assert [r.getMessage() for r in caplog.records if r.name in quiet] == []


async def test_access_lines_and_refusals_never_show_a_token(
    start_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="meshsub_trio")
    server = await start_server(auth_app(), metrics_token=SECRET)
    bad = "Bearer " + SECRET[::-1]  # a wrong token is a secret too
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        assert (await http.get(f"/healthz?token={SECRET}")).status_code == 200
        ok = await http.post("/api", json={"query": "{ hello }"}, headers={"authorization": f"Bearer {SECRET}"})
        assert ok.status_code == 200
        refused = await http.post("/api", json={"query": "{ hello }"}, headers={"authorization": bad})
        assert refused.status_code == 401
        assert (await http.get("/metrics", headers={"authorization": bad})).status_code == 401
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        await client.send({"type": "connection_init", "payload": {"Authorization": bad}})
        assert (await client.expect_close())[0] == 4403
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init({"Authorization": f"Bearer {SECRET}"}))["type"] == "connection_ack"
    with trio.fail_after(5):
        await server.metrics.wait_idle()

    access = _access(caplog.records)
    assert [(r["method"], r["path"], r["status"]) for r in access] == [
        ("GET", "/healthz", 200), ("POST", "/api", 200), ("POST", "/api", 401), ("GET", "/metrics", 401),
    ]
    assert all(r["levelno"] == logging.INFO and r["duration_s"] >= 0 for r in access)
    refusals = _named(caplog.records, "authentication refused")
    assert sorted((r["where"], r["reason"]) for r in refusals) == [
        ("http", "invalid token"), ("metrics", "no valid bearer token"), ("ws", "invalid token"),
    ]
    assert all(r["levelno"] == logging.INFO and r["peer"].startswith("127.0.0.1:") for r in refusals)
    ours = [r for r in caplog.records if r.name.startswith("meshsub_trio")]
    lines = _lines(ours)  # (httpx logs its URLs, query string included: not ours)
    assert len(lines) >= 2 * (len(access) + len(refusals) + 4)
    for line in lines:
        assert SECRET not in line and SECRET[::-1] not in line, line


async def test_a_refused_upgrade_gets_an_access_line(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    """A browser on another origin is refused (403): the operator can see why."""
    caplog.set_level(logging.INFO, logger="meshsub_trio")
    request = (
        "GET /ws?token=abc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\nOrigin: http://elsewhere.example\r\n\r\n"
    )
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        await stream.send_all(request.encode())
        with trio.fail_after(5):
            answer = await stream.receive_some()
    assert answer.startswith(b"HTTP/1.1 403")
    (line,) = _access(caplog.records)
    assert (line["message"], line["path"], line["status"], line["reason"]) == (
        "refused", "/ws", 403, "Origin not allowed",
    )
    assert line["levelno"] == logging.INFO and line["peer"].startswith("127.0.0.1:")
    assert all("abc" not in text for text in _lines(caplog.records))
