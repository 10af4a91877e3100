"""The core's message socket over an ASGI ``websocket`` scope (the ASGI app's WebSockets)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from ._socket import Message, MessageTooBig, SocketClosed

#: The ASGI callables a request is driven through.
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class ASGIWebSocket:
    """The :class:`MessageSocket` over an ASGI websocket scope."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        *,
        max_message_size: int,
        peer: tuple[str, int] | None = None,
    ) -> None:
        #: The client's address as the server reported it (for log lines).
        self.peer = peer
        self._receive = receive
        self._send = send
        self._max_size = max_message_size
        self._closed = False
        self.on_activity: Callable[[], None] = lambda: None

    async def receive(self) -> Message:
        event = await self._receive()
        self.on_activity()
        if event["type"] == "websocket.disconnect":
            self._closed = True
            raise SocketClosed(event.get("code", 1005), event.get("reason") or "")
        text = event.get("text")
        if text is not None:
            if len(text) > self._max_size or len(text.encode()) > self._max_size:
                raise MessageTooBig()
            return Message(text)
        data = event.get("bytes") or b""
        if len(data) > self._max_size:
            raise MessageTooBig()
        return Message(data, binary=True)

    async def send_frames(self, frames: list[bytes]) -> None:
        if self._closed:
            raise trio.ClosedResourceError("websocket closed")
        for frame in frames:
            await self._send({"type": "websocket.send", "text": frame.decode()})
        # hypercorn's send() after a disconnect returns without a checkpoint;
        # without this a send loop could spin and starve the whole server.
        await trio.lowlevel.checkpoint()

    async def ping(self) -> bool:
        return False

    async def close(self, code: int, reason: str) -> None:
        if not self._closed:
            self._closed = True
            await self._send({"type": "websocket.close", "code": code, "reason": reason})

    async def abort(self) -> None:
        self._closed = True
