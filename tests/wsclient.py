"""A raw WebSocket test client (trio-websocket): JSON in and out, close codes visible."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket

TRANSPORT = "graphql-transport-ws"
LEGACY = "graphql-ws"


class RawClient:
    """Sends and receives GraphQL WebSocket messages as plain JSON."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    @property
    def subprotocol(self) -> str | None:
        return self.ws.subprotocol

    async def send(self, message: Any) -> None:
        await self.ws.send_message(
            message if isinstance(message, str | bytes) else json.dumps(message)
        )

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            return json.loads(await self.ws.get_message())

    async def receive_until(self, kind: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Messages up to and including the first of type *kind* (skips ``ka``)."""
        seen: list[dict[str, Any]] = []
        with trio.fail_after(timeout):
            while True:
                message = await self.receive(timeout)
                if message.get("type") == "ka":
                    continue
                seen.append(message)
                if message.get("type") == kind:
                    return seen

    async def expect_close(self, timeout: float = 5.0) -> tuple[int, str]:
        """Wait for the server to close; return (code, reason). Messages before it are skipped."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as closed:
                return closed.reason.code, closed.reason.reason or ""

    async def expect_silence(self, seconds: float = 0.1) -> None:
        """Assert nothing (but keep-alives) arrives for *seconds*."""
        with trio.move_on_after(seconds):
            while True:
                message = json.loads(await self.ws.get_message())
                if message.get("type") not in ("ka", "ping"):
                    raise AssertionError(f"unexpected message {message}")

    async def init(self, payload: Any = None) -> dict[str, Any]:
        """connection_init and wait for the ack."""
        message: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            message["payload"] = payload
        await self.send(message)
        while True:
            reply = await self.receive()
            if reply.get("type") != "ka":
                return reply


@asynccontextmanager
async def open_raw_client(
    port: int,
    *,
    path: str = "/ws",
    subprotocols: list[str] | None = None,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    host: str = "127.0.0.1",
) -> AsyncIterator[RawClient]:
    async with open_websocket(
        host, port, path, use_ssl=False, subprotocols=subprotocols, extra_headers=extra_headers
    ) as ws:
        yield RawClient(ws)
