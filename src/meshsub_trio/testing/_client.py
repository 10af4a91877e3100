"""A small GraphQL-over-WebSocket client for tests (wsproto on Trio, both protocols).

It answers pings, reads in its own task (so it behaves like a healthy
client), keeps every message it receives, and reports the close code: what a
test needs to check a server's behaviour under faults.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"


class ClientClosed(Exception):
    """The server closed the connection (``code`` and ``reason`` as sent)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"closed {code} {reason}")
        self.code = code
        self.reason = reason


class GraphQLWSClient:
    """One connection; use :func:`open_graphql_ws`."""

    def __init__(self, stream: trio.SocketStream, ws: WSConnection, protocol: str) -> None:
        self.protocol = protocol
        self._stream = stream
        self._ws = ws
        self._send_lock = trio.Lock()
        self._inbox_send, self._inbox = trio.open_memory_channel[dict[str, Any]](1024)
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed = trio.Event()
        self._next_id = 0

    # ---- plumbing ------------------------------------------------------
    async def _send_data(self, data: bytes) -> None:
        async with self._send_lock:
            await self._stream.send_all(data)

    async def send(self, message: dict[str, Any]) -> None:
        await self._send_data(self._ws.send(TextMessage(data=json.dumps(message))))

    async def _reader(self) -> None:
        text: list[str] = []
        try:
            while True:
                data = await self._stream.receive_some(65536)
                if not data:
                    break
                self._ws.receive_data(data)
                for event in self._ws.events():
                    if isinstance(event, TextMessage):
                        text.append(event.data)
                        if event.message_finished:
                            await self._inbox_send.send(json.loads("".join(text)))
                            text.clear()
                    elif isinstance(event, Ping):
                        if self._ws.state is ConnectionState.OPEN:  # not while closing
                            await self._send_data(self._ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self.close_code, self.close_reason = event.code, event.reason or ""
                        if self._ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._send_data(self._ws.send(event.response()))
                        return
                    elif isinstance(event, BytesMessage):
                        pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        finally:
            if self.close_code is None:
                self.close_code = 1006
            self.closed.set()
            self._inbox_send.close()

    # ---- protocol ------------------------------------------------------
    async def receive(self) -> dict[str, Any]:
        """The next message (``ka`` and ``ping``/``pong`` are handled here)."""
        while True:
            try:
                message = await self._inbox.receive()
            except trio.EndOfChannel:
                raise ClientClosed(self.close_code or 1006, self.close_reason) from None
            kind = message.get("type")
            if kind == "ka" or kind == "pong":
                continue
            if kind == "ping":
                await self.send({"type": "pong"})
                continue
            return message

    async def init(self, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``connection_init``; return the ``connection_ack``."""
        await self.send({"type": "connection_init", "payload": payload or {}})
        reply = await self.receive()
        if reply.get("type") != "connection_ack":
            raise AssertionError(f"expected connection_ack, got {reply}")
        return reply

    async def start(self, query: str, variables: dict[str, Any] | None = None, **extra: Any) -> str:
        """Start an operation; return its id."""
        self._next_id += 1
        op_id = str(self._next_id)
        payload = {"query": query, "variables": variables or {}, **extra}
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.send({"id": op_id, "type": kind, "payload": payload})
        return op_id

    async def stop(self, op_id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self.send({"id": op_id, "type": kind})

    async def results(self, op_id: str) -> AsyncIterator[dict[str, Any]]:
        """The payloads of *op_id* until it completes (an ``error`` raises)."""
        data_type = "next" if self.protocol == TRANSPORT_WS else "data"
        while True:
            message = await self.receive()
            if message.get("id") != op_id:
                continue
            if message["type"] == data_type:
                yield message["payload"]
            elif message["type"] == "complete":
                return
            elif message["type"] == "error":
                raise AssertionError(f"operation {op_id} failed: {message['payload']}")

    async def aclose(self, code: int = 1000) -> None:
        """A clean close: close frame, then the TCP connection."""
        with trio.move_on_after(1):
            if self._ws.state is ConnectionState.OPEN:
                with suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    await self._send_data(self._ws.send(CloseConnection(code=code)))
            await self.closed.wait()
        await trio.aclose_forcefully(self._stream)


@asynccontextmanager
async def open_graphql_ws(
    host: str,
    port: int,
    path: str = "/ws",
    *,
    protocol: str = TRANSPORT_WS,
    headers: list[tuple[str, str]] | None = None,
) -> AsyncIterator[GraphQLWSClient]:
    """Connect, upgrade with *protocol*, and yield the client (closed on exit)."""
    stream = await trio.open_tcp_stream(host, port)
    ws = WSConnection(ConnectionType.CLIENT)
    extra = [(name.encode(), value.encode()) for name, value in headers or []]
    await stream.send_all(
        ws.send(
            Request(
                host=f"{host}:{port}", target=path, subprotocols=[protocol], extra_headers=extra
            )
        )
    )
    accepted = False
    while not accepted:
        data = await stream.receive_some(65536)
        if not data:
            raise ClientClosed(1006, "connection closed during the handshake")
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, AcceptConnection):
                accepted = True
            elif isinstance(event, RejectConnection):
                await trio.aclose_forcefully(stream)
                raise ClientClosed(1006, f"handshake rejected with HTTP {event.status_code}")
    client = GraphQLWSClient(stream, ws, protocol)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._reader)
        try:
            yield client
        finally:
            await client.aclose()
            nursery.cancel_scope.cancel()
