"""One client process of the 100k-connection bench (started by ``connections.py``).

It opens ``--connections`` WebSockets to the server over loopback, spread
round-robin over ``--sources`` (local addresses 127.0.0.x), each one a real
RFC 6455 upgrade with the accept hash checked, then graphql-transport-ws
``connection_init``, ``connection_ack`` and one ``subscribe``. It answers
ping frames (and protocol ``ping`` messages) and records, for every ``next``
it receives, the delay from the server's publish time (``ts`` in the event)
to two moments:

* ``kernel``: when the kernel queued the bytes on the socket (``SO_TIMESTAMPNS``
  on ``recvmsg``), which the client's own scheduling cannot delay;
* ``user``: when this process parsed the frame (``time.time()``).

No asyncio: one ``epoll`` loop over non-blocking sockets, because at tens of
thousands of sockets per process a plain loop costs the least CPU per event.

Control is line-delimited JSON: commands on stdin (``state``, ``report``,
``quit``), answers and progress lines (``{"ev": "progress", ...}``) on stdout.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import gc
import hashlib
import os
import resource
import select
import socket
import struct
import sys
import time
from collections import Counter
from typing import Any

import orjson

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Linux values (asm-generic); Python's socket module does not name them.
_SO_TIMESTAMPNS = 35
_IP_BIND_ADDRESS_NO_PORT = 24
_ANC_SPACE = socket.CMSG_SPACE(16)
_RECV = 65536

_CONNECTING, _UPGRADING, _AWAIT_ACK, _SUBSCRIBED, _DEAD = range(5)

SUBSCRIBE = orjson.dumps(
    {"id": "1", "type": "subscribe", "payload": {"query": "subscription { tick { seq ts } }"}}
)
INIT = orjson.dumps({"type": "connection_init", "payload": {}})
PONG_MESSAGE = orjson.dumps({"type": "pong"})


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.3), FIN set."""
    key = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0xFE, length)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, length)
    if not length:
        return head + key
    stream = int.from_bytes((key * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ stream).to_bytes(length, "big")
    return head + key + masked


class Conn:
    """One WebSocket: its socket, where it is in the handshake, what it has seen."""

    __slots__ = ("buf", "fd", "index", "key", "last_seq", "sock", "state", "tries")

    def __init__(self, index: int) -> None:
        self.index = index
        self.sock: socket.socket | None = None
        self.fd = -1
        self.state = _CONNECTING
        self.buf = bytearray()
        self.key = b""
        self.last_seq = -1
        self.tries = 0


class Client:
    """Every connection of this process and the epoll loop that drives them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.sources: list[str] = args.sources.split(",")
        self.epoll = select.epoll()
        self.by_fd: dict[int, Conn] = {}
        self.pending = [Conn(i) for i in range(args.connections)]
        self.pending.reverse()  # pop() from the end opens them in index order
        self.in_flight = 0
        self.acked = 0
        self.failed = 0
        self.dropped = 0
        self.errors: Counter[str] = Counter()
        self.pings = 0
        self.ping_messages = 0
        self.close_codes: Counter[int] = Counter()
        #: seq -> delays (s) from publish to the kernel's and to our receipt.
        self.kernel: dict[int, list[float]] = {}
        self.user: dict[int, list[float]] = {}
        self.started = time.time()
        self.ready_at: float | None = None
        self.stdin_buf = b""
        self.running = True

    # ---- opening -----------------------------------------------------
    def open_more(self) -> None:
        limit = self.args.in_flight
        while self.pending and self.in_flight < limit:
            conn = self.pending.pop()
            self.start(conn)

    def start(self, conn: Conn) -> None:
        source = self.sources[(conn.index + self.args.offset) % len(self.sources)]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((source, 0))
        sock.setblocking(False)
        conn.sock = sock
        conn.fd = sock.fileno()
        conn.state = _CONNECTING
        conn.buf = bytearray()
        conn.tries += 1
        self.in_flight += 1
        self.by_fd[conn.fd] = conn
        code = sock.connect_ex((self.args.host, self.args.port))
        if code not in (0, errno.EINPROGRESS):
            self.fail(conn, f"connect: {errno.errorcode.get(code, code)}")
            return
        self.epoll.register(conn.fd, select.EPOLLOUT)

    def fail(self, conn: Conn, why: str) -> None:
        """A handshake failed: count it, and try again later (bounded)."""
        self.errors[why] += 1
        self.forget(conn)
        self.in_flight -= 1
        if conn.tries < self.args.retries:
            self.pending.insert(0, conn)
        else:
            self.failed += 1
            if self.acked + self.failed == self.args.connections:
                self.ready_at = time.time()
                self.progress()

    def forget(self, conn: Conn) -> None:
        if conn.sock is not None:
            self.by_fd.pop(conn.fd, None)
            with contextlib.suppress(OSError, ValueError):
                self.epoll.unregister(conn.fd)
            conn.sock.close()
            conn.sock = None
        conn.state = _DEAD

    def on_connected(self, conn: Conn) -> None:
        assert conn.sock is not None
        code = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.fail(conn, f"connect: {errno.errorcode.get(code, code)}")
            return
        conn.key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {self.args.path} HTTP/1.1\r\nHost: 127.0.0.1:{self.args.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {conn.key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n"
        ).encode()
        conn.state = _UPGRADING
        self.epoll.modify(conn.fd, select.EPOLLIN)
        self.send(conn, request)

    def send(self, conn: Conn, data: bytes) -> None:
        assert conn.sock is not None
        try:
            sent = conn.sock.send(data)
        except OSError as error:
            self.lost(conn, f"send: {error.strerror}")
            return
        if sent != len(data):  # tiny frames into an idle socket: never expected
            self.lost(conn, "short send")

    def lost(self, conn: Conn, why: str) -> None:
        if conn.state == _SUBSCRIBED:
            self.errors[why] += 1
            self.dropped += 1
            self.forget(conn)
        elif conn.state != _DEAD:
            self.fail(conn, why)

    # ---- receiving ---------------------------------------------------
    def on_readable(self, conn: Conn) -> None:
        sock = conn.sock
        assert sock is not None
        try:
            data, ancillary, _flags, _addr = sock.recvmsg(_RECV, _ANC_SPACE)
        except BlockingIOError:
            return
        except OSError as error:
            self.lost(conn, f"recv: {error.strerror}")
            return
        now = time.time()
        if not data:
            self.lost(conn, "eof")
            return
        stamp = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanos = struct.unpack_from("qq", value)
                stamp = seconds + nanos * 1e-9
        buf = conn.buf
        buf += data
        if conn.state == _UPGRADING:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1").split("\r\n")
            del buf[: end + 4]
            accept = base64.b64encode(hashlib.sha1(conn.key + _GUID).digest()).decode()
            headers: dict[str, str] = {}
            for line in head[1:]:
                name, _, field = line.partition(":")
                headers[name.strip().lower()] = field.strip()
            if not head[0].startswith("HTTP/1.1 101"):
                self.fail(conn, f"upgrade: {head[0][:40]}")
                return
            if headers.get("sec-websocket-accept") != accept:
                self.fail(conn, "bad accept hash")
                return
            conn.state = _AWAIT_ACK
            self.send(conn, client_frame(1, INIT))
        self.frames(conn, stamp, now)

    def frames(self, conn: Conn, stamp: float, now: float) -> None:
        buf = conn.buf
        size = len(buf)
        pos = 0
        while size - pos >= 2 and conn.state != _DEAD:
            first, second = buf[pos], buf[pos + 1]
            length = second & 0x7F
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            payload = bytes(buf[start:end])
            pos = end
            opcode = first & 0x0F
            if opcode == 1:
                self.on_text(conn, payload, stamp, now)
            elif opcode == 9:
                self.pings += 1
                self.send(conn, client_frame(0xA, payload))
            elif opcode == 8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.close_codes[code] += 1
                self.lost(conn, f"close {code}")
                return
        del buf[:pos]

    def on_text(self, conn: Conn, payload: bytes, stamp: float, now: float) -> None:
        message = orjson.loads(payload)
        kind = message.get("type")
        if kind == "next":
            tick = message["payload"]["data"]["tick"]
            seq = tick["seq"]
            ts = tick["ts"]
            conn.last_seq = seq
            if seq >= 0:
                self.kernel.setdefault(seq, []).append(stamp - ts)
                self.user.setdefault(seq, []).append(now - ts)
        elif kind == "connection_ack" and conn.state == _AWAIT_ACK:
            conn.state = _SUBSCRIBED
            self.in_flight -= 1
            self.acked += 1
            self.send(conn, client_frame(1, SUBSCRIBE))
            if self.acked + self.failed == self.args.connections:
                self.ready_at = time.time()
                self.progress()
        elif kind == "ping":
            self.ping_messages += 1
            self.send(conn, client_frame(1, PONG_MESSAGE))
        else:
            self.errors[f"message {kind}"] += 1

    # ---- control -----------------------------------------------------
    def emit(self, obj: dict[str, Any]) -> None:
        sys.stdout.buffer.write(orjson.dumps(obj) + b"\n")
        sys.stdout.buffer.flush()

    def progress(self) -> None:
        self.emit(
            {
                "ev": "progress",
                "t": time.time(),
                "acked": self.acked,
                "failed": self.failed,
                "in_flight": self.in_flight,
                "ready": self.ready_at is not None,
            }
        )

    def on_command(self, line: bytes) -> None:
        command = orjson.loads(line)
        name = command["cmd"]
        if name == "state":
            seq = command.get("seq", -(2**62))
            have = sum(1 for conn in self.by_fd.values() if conn.last_seq >= seq)
            self.emit(
                {
                    "ev": "state",
                    "have": have,
                    "acked": self.acked,
                    "failed": self.failed,
                    "dropped": self.dropped,
                    "open": len(self.by_fd),
                    "pings": self.pings,
                    "ping_messages": self.ping_messages,
                    "errors": dict(self.errors.most_common(8)),
                    "close_codes": {str(k): v for k, v in self.close_codes.items()},
                    "cpu_s": sum(resource.getrusage(resource.RUSAGE_SELF)[:2]),
                    "ready_at": self.ready_at,
                    "started": self.started,
                }
            )
        elif name == "report":
            seq = command["seq"]
            self.emit(
                {
                    "ev": "report",
                    "seq": seq,
                    "kernel": self.kernel.pop(seq, []),
                    "user": self.user.pop(seq, []),
                }
            )
        elif name == "quit":
            self.running = False

    def on_stdin(self) -> None:
        chunk = os.read(0, 65536)
        if not chunk:
            self.running = False
            return
        self.stdin_buf += chunk
        while b"\n" in self.stdin_buf:
            line, _, self.stdin_buf = self.stdin_buf.partition(b"\n")
            if line.strip():
                self.on_command(line)

    # ---- the loop ----------------------------------------------------
    def run(self) -> None:
        self.epoll.register(0, select.EPOLLIN)
        next_progress = time.monotonic()
        while self.running:
            self.open_more()
            now = time.monotonic()
            if now >= next_progress and (self.ready_at is None or self.args.verbose):
                self.progress()
                next_progress = now + self.args.progress
            for fd, events in self.epoll.poll(0.05, 4096):
                if fd == 0:
                    self.on_stdin()
                    continue
                conn = self.by_fd.get(fd)
                if conn is None:
                    continue
                if conn.state == _CONNECTING:
                    if events & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP):
                        self.on_connected(conn)
                elif events & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                    self.on_readable(conn)
        self.progress()
        for conn in list(self.by_fd.values()):
            self.forget(conn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/ws")
    parser.add_argument("--connections", type=int, required=True)
    parser.add_argument("--sources", default="127.0.0.2", help="comma-separated local addresses")
    parser.add_argument("--offset", type=int, default=0, help="first source index")
    parser.add_argument("--in-flight", type=int, default=256, help="handshakes at once")
    parser.add_argument("--retries", type=int, default=5)
    parser.add_argument("--progress", type=float, default=0.5, help="seconds between lines")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.connections + 1024
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, hard), max(want, hard)))
    gc.disable()  # nothing here makes cycles; collections over 25k objects only cost
    Client(args).run()


if __name__ == "__main__":
    main()
