"""A lean graphql-transport-ws client on asyncio protocols, built for load generation.

One :class:`Conn` is one WebSocket: a real RFC 6455 upgrade (key, accept hash
and subprotocol checked), masked client frames, and a frame parser that
verifies every ``next`` it receives: operation id, event id continuity (each
event id must be the previous one plus one), payload content, and the count
expected by the current :class:`Phase`. Anything unexpected is recorded in
the shared :class:`Tally`, and a run with any error is reported as failed.
:class:`SseConn` is the same subscription over graphql-sse (one POST, one
event stream); either can run over TLS (an ``ssl.SSLContext`` trusting the
bench certificate).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import socket
import ssl
import struct
import time
from typing import Any, cast

import orjson
from workload import HELLO_ID, PAYLOAD, PUBLISH, SUBSCRIPTION

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Mask and handshake keys (RFC 6455 asks for unpredictable, not secret):
#: a system call per frame would cost the load generator more than its parsing.
_random = random.Random()
_MAX_ERRORS_KEPT = 10


class Tally:
    """Errors seen by every connection of one run."""

    def __init__(self) -> None:
        self.count = 0
        self.samples: list[str] = []

    def error(self, message: str) -> None:
        self.count += 1
        if len(self.samples) < _MAX_ERRORS_KEPT:
            self.samples.append(message)


class Phase:
    """One publish round: every subscriber must receive *count* events from *first*."""

    def __init__(
        self, first: int, count: int, subscribers: int, *, latencies: bool, strict: bool = True
    ) -> None:
        self.first = first
        #: False while probing for live subscriptions: stale probes are no error.
        self.strict = strict
        self.count = count
        self.remaining = subscribers
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.last_at = 0.0
        #: When any subscriber last got any event (stale ones too): proof of progress.
        self.touched_at = 0.0
        self.latencies: list[float] | None = [] if latencies else None

    def finished_one(self, now: float) -> None:
        self.remaining -= 1
        if self.remaining == 0:
            self.last_at = now
            if not self.done.done():
                self.done.set_result(None)


def _mask(data: bytes, key: bytes) -> bytes:
    length = len(data)
    if not length:
        return b""
    stream = int.from_bytes((key * (length // 4 + 1))[:length], "big")
    return (int.from_bytes(data, "big") ^ stream).to_bytes(length, "big")


def _client_frame(opcode: int, payload: bytes) -> bytes:
    key = _random.randbytes(4)  # a mask needs no cryptographic randomness
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
    return head + key + _mask(payload, key)


class Conn(asyncio.Protocol):
    """One client WebSocket speaking graphql-transport-ws, holding one subscription."""

    def __init__(self, host: str, port: int, path: str, tally: Tally) -> None:
        loop = asyncio.get_running_loop()
        self.host = host
        self.port = port
        self.path = path
        self.tally = tally
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(_random.randbytes(16))
        self.buffer = bytearray()
        self.open = False
        self.close_sent = False
        self.aborted = False
        self.upgraded: asyncio.Future[None] = loop.create_future()
        self.acked: asyncio.Future[None] = loop.create_future()
        #: Resolved by the greeting event of a ``HELLO_PREFIX`` topic.
        self.greeted: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int] = loop.create_future()
        self.op_id = "1"
        self.phase: Phase | None = None
        self.expected = 0
        self.received = 0

    # ---- asyncio.Protocol --------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self.key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        )
        self.transport.write(request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.close_sent and not self.aborted:
            self.tally.error(f"server dropped a connection ({exc!r})")
        lost = ConnectionError(f"connection lost: {exc!r}")
        for future in (self.upgraded, self.acked, self.greeted):
            if not future.done():
                future.set_exception(lost)
                future.exception()  # mark retrieved: callers may have given up already
        if not self.closed.done():
            self.closed.set_result(1006)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buffer = self.buffer
        buffer += data
        if not self.open and not self._handshake():
            return
        size = len(buffer)
        pos = 0
        while size - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            payload = bytes(buffer[start:end])
            pos = end
            opcode = first & 0x0F
            if second & 0x80 or not first & 0x80:
                self.tally.error(f"bad server frame header {first:#x} {second:#x}")
            elif opcode == 1:
                self._on_text(payload, now)
            elif opcode == 8:
                self._on_close(payload)
            elif opcode == 9:
                self._write(_client_frame(0xA, payload))
            elif opcode != 0xA:
                self.tally.error(f"unexpected frame opcode {opcode}")
        del buffer[:pos]

    # ---- inbound -----------------------------------------------------
    def _handshake(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        del self.buffer[: end + 4]
        headers = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = base64.b64encode(hashlib.sha1(self.key + _GUID).digest()).decode()
        problem = None
        if not head[0].startswith("HTTP/1.1 101"):
            problem = f"upgrade refused: {head[0]}"
        elif headers.get("sec-websocket-accept") != accept:
            problem = "bad Sec-WebSocket-Accept"
        elif headers.get("sec-websocket-protocol") != "graphql-transport-ws":
            problem = f"subprotocol not echoed: {headers.get('sec-websocket-protocol')!r}"
        if problem is not None:
            self.tally.error(problem)
            self.upgraded.set_exception(ConnectionError(problem))
            self.abort()
            return False
        self.open = True
        self.upgraded.set_result(None)
        return True

    def _on_text(self, payload: bytes, now: float) -> None:
        try:
            message = orjson.loads(payload)
            kind = message["type"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.tally.error(f"not a protocol message: {payload[:120]!r}")
            return
        if kind == "next":
            self._on_next(message, now)
        elif kind == "connection_ack":
            if not self.acked.done():
                self.acked.set_result(None)
        elif kind == "ping":
            self.send_json({"type": "pong"})
        elif kind != "pong":
            self.tally.error(f"unexpected message: {payload[:200]!r}")

    def _on_next(self, message: dict[str, Any], now: float) -> None:
        self._on_result(message.get("payload"), message.get("id") == self.op_id, now)

    def _on_result(self, result: Any, good: bool, now: float) -> None:
        """One execution result (``{"data": {"events": ...}}``), checked against the phase."""
        phase = self.phase
        try:
            event = result["data"]["events"]
            event_id = event["id"]
            ts = event["ts"]
            good = good and event["payload"] == PAYLOAD
        except (KeyError, TypeError):
            self.tally.error(f"malformed result: {result!r:.200}")
            return
        if event_id == HELLO_ID and good and not self.greeted.done():
            self.greeted.set_result(None)
            return
        if phase is None or not good:
            self.tally.error(f"unexpected result: {result!r:.200}")
            return
        phase.touched_at = now
        if not phase.strict and event_id < phase.first:
            self.expected = event_id + 1  # an older probe, still on its way
            return
        if event_id != self.expected and phase.strict:
            self.tally.error(f"expected event {self.expected}, got {event_id}")
        self.expected = event_id + 1
        self.received += 1
        if phase.latencies is not None:
            phase.latencies.append(now - ts)
        if self.received == phase.count:
            phase.finished_one(now)
        elif self.received > phase.count and phase.strict:
            self.tally.error("more events than were published")

    def _on_close(self, payload: bytes) -> None:
        code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
        if not self.close_sent:
            self.tally.error(f"server closed a connection: {code} {payload[2:80]!r}")
            self.send_close(1000)
        if not self.closed.done():
            self.closed.set_result(code)

    # ---- outbound ----------------------------------------------------
    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send_json(self, message: dict[str, Any]) -> None:
        self._write(_client_frame(0x1, orjson.dumps(message)))

    def send_close(self, code: int) -> None:
        self.close_sent = True
        self._write(_client_frame(0x8, code.to_bytes(2, "big")))

    def subscribe(self, topic: str) -> None:
        payload = {"query": SUBSCRIPTION, "variables": {"topic": topic}}
        self.send_json({"id": self.op_id, "type": "subscribe", "payload": payload})

    def expect(self, phase: Phase) -> None:
        """Start counting toward *phase*: its events must start at ``phase.first``."""
        self.phase = phase
        self.expected = phase.first
        self.received = 0

    def linger_off(self) -> None:
        """Close with RST: churn would otherwise fill the port range with TIME_WAIT."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    def abort(self) -> None:
        self.aborted = True
        if self.transport is not None:
            self.transport.abort()


async def connect(
    port: int,
    path: str,
    tally: Tally,
    *,
    timeout: float = 30.0,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
) -> Conn:
    """Open a WebSocket (over TLS with *tls*), send ``connection_init`` and wait for the ack."""
    loop = asyncio.get_running_loop()
    stage = "TCP connect" if tls is None else "TCP connect and TLS handshake"
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: Conn(host, port, path, tally),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            ),
            timeout,
        )
        try:
            stage = "WebSocket upgrade"
            await asyncio.wait_for(conn.upgraded, timeout)
            conn.send_json({"type": "connection_init", "payload": {}})
            stage = "connection_ack"
            await asyncio.wait_for(conn.acked, timeout)
        except BaseException:
            conn.abort()
            raise
    except TimeoutError:
        raise TimeoutError(f"{stage} took over {timeout:.0f}s") from None
    return conn


class SseConn(Conn):
    """One graphql-sse subscription (distinct connections mode) on its own keep-alive
    HTTP/1.1 connection: ``POST`` with ``Accept: text/event-stream``, then a chunked
    stream of ``event: next`` messages, each checked like a WebSocket ``next``.

    Only the wire differs from :class:`Conn`: the request is the subscription,
    the answer's head stands for the upgrade, and there is no ack.
    """

    def __init__(self, host: str, port: int, path: str, tally: Tally, topic: str) -> None:
        super().__init__(host, port, path, tally)
        self.topic = topic
        self.chunked = False
        #: Bytes left in the current chunk; 0: a chunk-size line comes next.
        self.chunk_left = 0
        self.events = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        body = orjson.dumps({"query": SUBSCRIPTION, "variables": {"topic": self.topic}})
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Accept: text/event-stream\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.transport.write(head.encode() + body)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buffer += data
        if not self.open and not self._response_head():
            return
        if self.chunked:
            self._dechunk()
        else:
            self.events += self.buffer
            self.buffer.clear()
        events = self.events
        pos = 0
        while (end := events.find(b"\n\n", pos)) >= 0:
            self._on_message(bytes(events[pos:end]), now)
            pos = end + 2
        del events[:pos]

    def _response_head(self) -> bool:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buffer[:end]).decode("latin-1").lower().split("\r\n")
        del self.buffer[: end + 4]
        fields = dict(line.partition(":")[::2] for line in head[1:])
        fields = {name.strip(): value.strip() for name, value in fields.items()}
        streams = fields.get("content-type", "").startswith("text/event-stream")
        if not head[0].startswith("http/1.1 200") or not streams:
            problem = f"SSE request refused: {head[0]} ({fields.get('content-type')})"
            self.tally.error(problem)
            self.upgraded.set_exception(ConnectionError(problem))
            self.abort()
            return False
        self.chunked = "chunked" in fields.get("transfer-encoding", "")
        self.open = True
        self.upgraded.set_result(None)
        return True

    def _dechunk(self) -> None:
        """Move the chunks' contents from ``buffer`` to ``events`` (any split)."""
        raw = self.buffer
        size = len(raw)
        pos = 0
        while pos < size:
            if self.chunk_left:
                take = min(self.chunk_left, size - pos)
                self.events += raw[pos : pos + take]
                self.chunk_left -= take
                pos += take
                continue
            line_end = raw.find(b"\r\n", pos)
            if line_end < 0:
                break
            line = raw[pos:line_end]
            pos = line_end + 2
            if not line:
                continue  # the CRLF that ends a chunk's data
            self.chunk_left = int(line.split(b";", 1)[0], 16)
            if not self.chunk_left and not self.aborted:
                self.tally.error("the server ended an SSE stream")
        del raw[:pos]

    def _on_message(self, message: bytes, now: float) -> None:
        if message.startswith(b":"):
            return  # a comment: the first flush, or a keep-alive
        kind, data = b"message", b""
        for line in message.split(b"\n"):
            name, _, value = line.partition(b": ")
            if name == b"event":
                kind = value
            elif name == b"data":
                data = value
        if kind != b"next":
            self.tally.error(f"unexpected SSE event: {message[:200]!r}")
            return
        try:
            result = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.tally.error(f"not JSON: {data[:120]!r}")
            return
        self._on_result(result, True, now)

    def subscribe(self, topic: str) -> None:
        raise AssertionError("an SSE connection's request is its subscription")


async def connect_sse(
    port: int,
    path: str,
    tally: Tally,
    topic: str,
    *,
    timeout: float = 30.0,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
) -> SseConn:
    """Open a graphql-sse stream subscribed to *topic*; return once its head arrived."""
    loop = asyncio.get_running_loop()
    stage = "TCP connect"
    try:
        _, conn = await asyncio.wait_for(
            loop.create_connection(
                lambda: SseConn(host, port, path, tally, topic),
                host,
                port,
                ssl=tls,
                server_hostname=host if tls is not None else None,
            ),
            timeout,
        )
        try:
            stage = "SSE response head"
            await asyncio.wait_for(conn.upgraded, timeout)
        except BaseException:
            conn.abort()
            raise
    except TimeoutError:
        raise TimeoutError(f"{stage} took over {timeout:.0f}s") from None
    return conn


async def trigger(
    port: int,
    path: str,
    count: int,
    *,
    rate: float | None = None,
    topic: str | None = None,
    timeout: float = 10.0,
    tls: ssl.SSLContext | None = None,
) -> int:
    """POST the ``publish`` mutation (over TLS with *tls*); return the first event's id."""
    variables = {"count": count, "rate": rate, "topic": topic}
    body = orjson.dumps({"query": PUBLISH, "variables": variables})
    host = "127.0.0.1"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host, port, ssl=tls, server_hostname=host if tls is not None else None
        ),
        timeout,
    )
    try:
        writer.write(head + body)
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    status, _, rest = raw.partition(b"\r\n")
    headers, _, payload = rest.partition(b"\r\n\r\n")
    if b" 200 " not in status + b" ":
        raise RuntimeError(f"publish failed: {raw[:300]!r}")
    if b"transfer-encoding: chunked" in headers.lower():
        payload = _dechunk(payload)
    result = orjson.loads(payload)
    if result.get("errors") or not isinstance(result.get("data", {}).get("publish"), int):
        raise RuntimeError(f"publish failed: {result!r:.300}")
    return int(result["data"]["publish"])


def _dechunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += data[:size]
        data = data[size + 2 :]
    return out
