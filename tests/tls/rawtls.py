"""A raw WebSocket client over a real TLS stream: exact frames in, exact frames out."""

from __future__ import annotations

import base64
import json
import os
import ssl
import struct
from typing import Any

import trio


def upgrade_head(port: int, path: str = "/ws") -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: graphql-transport-ws",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """A masked client frame (mask key zero: the payload goes as it is)."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, 0x80 | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return header + b"\0\0\0\0" + payload


class RawTls:
    """One upgraded WebSocket over ``trio.SSLStream``; frames parsed by hand."""

    def __init__(self, stream: trio.SSLStream[trio.SocketStream]) -> None:
        self.stream = stream
        self.buffer = b""

    async def _fill(self, size: int) -> None:
        while len(self.buffer) < size:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("server closed")
            self.buffer += data

    async def upgrade(self, port: int) -> None:
        await self.stream.send_all(upgrade_head(port))
        while b"\r\n\r\n" not in self.buffer:
            await self._fill(len(self.buffer) + 1)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame: (opcode, payload)."""
        await self._fill(2)
        opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
        offset = 2
        if size == 126:
            await self._fill(4)
            (size,) = struct.unpack("!H", self.buffer[2:4])
            offset = 4
        elif size == 127:
            await self._fill(10)
            (size,) = struct.unpack("!Q", self.buffer[2:10])
            offset = 10
        await self._fill(offset + size)
        payload = self.buffer[offset : offset + size]
        self.buffer = self.buffer[offset + size :]
        return opcode, payload

    async def send_json(self, message: Any) -> None:
        await self.stream.send_all(client_frame(json.dumps(message).encode()))

    async def message(self) -> dict[str, Any]:
        """The next text message (ping frames skipped)."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x1:
                return json.loads(payload)  # type: ignore[no-any-return]
            assert opcode == 0x9, (opcode, payload)

    async def close_code(self) -> int:
        """Read until the server's close frame; its code."""
        while True:
            opcode, payload = await self.frame()
            if opcode == 0x8:
                return int(struct.unpack("!H", payload[:2])[0])


async def open_raw_tls(port: int, context: ssl.SSLContext) -> RawTls:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, context, server_hostname="localhost")
    await stream.do_handshake()
    client = RawTls(stream)
    await client.upgrade(port)
    return client
