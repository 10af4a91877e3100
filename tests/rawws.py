"""A deliberately dumb WebSocket client over a raw TCP stream.

It never answers pings and reads only when told to: the way to model a
frozen, partitioned or slow peer without any library helping it along.
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import trio


def masked_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final client frame (clients must mask)."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return header + mask + masked


class RawWebSocket:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream

    async def send_json(self, message: Any) -> None:
        await self.stream.send_all(masked_frame(json.dumps(message).encode()))

    async def receive_json(self) -> Any:
        """Read one (unfragmented, unmasked) server text frame."""
        head = await self._read_exactly(2)
        length = head[1] & 0x7F
        if length == 126:
            length = int.from_bytes(await self._read_exactly(2), "big")
        elif length == 127:
            length = int.from_bytes(await self._read_exactly(8), "big")
        payload = await self._read_exactly(length)
        if head[0] & 0x0F != 0x1:
            return await self.receive_json()  # skip control frames (and never answer them)
        return json.loads(payload)

    async def init(self) -> Any:
        await self.send_json({"type": "connection_init"})
        return await self.receive_json()

    async def _read_exactly(self, count: int) -> bytes:
        data = b""
        while len(data) < count:
            chunk = await self.stream.receive_some(count - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


async def open_raw_websocket(
    port: int,
    *,
    path: str = "/ws",
    subprotocol: str = "graphql-transport-ws",
    receive_buffer: int | None = None,
) -> RawWebSocket:
    """Connect, upgrade, and return as soon as the 101 arrives."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    if receive_buffer is not None:
        stream.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, receive_buffer)
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: {subprotocol}\r\n\r\n"
    )
    await stream.send_all(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = await stream.receive_some(1)  # byte by byte: leave frames unread
        if not chunk:
            raise ConnectionError("closed during handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(head.decode(errors="replace"))
    return RawWebSocket(stream)
