"""The TCP (or TLS) stream and the WebSocket upgrade over it, failing fast.

trio-websocket's own connect waits for the upgrade's answer until its
timeout even when the peer has already hung up (a load balancer whose
backend is gone accepts, then resets), which would turn every such attempt
into a full ``connect_timeout``. So the stream is opened here and watched:
the upgrade is abandoned the moment the peer closes or resets it.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import trio

if TYPE_CHECKING:
    from trio_websocket import WebSocketConnection


@dataclass(frozen=True)
class Target:
    """Where a ``ws://``/``wss://`` URL points."""

    host: str
    port: int
    resource: str
    host_header: str
    secure: bool


def target_of(ws_url: str) -> Target:
    parts = urlsplit(ws_url)
    secure = parts.scheme == "wss"
    if parts.hostname is None:
        raise ValueError(f"no host in {ws_url!r}")
    port = parts.port or (443 if secure else 80)
    resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host_header = parts.netloc.rpartition("@")[2]
    return Target(parts.hostname, port, resource, host_header, secure)


async def open_stream(target: Target, ssl_context: ssl.SSLContext | None) -> trio.abc.Stream:
    """A connected TCP stream (TLS for wss); raises OSError when unreachable."""
    if not target.secure:
        return await trio.open_tcp_stream(target.host, target.port)
    return await trio.open_ssl_over_tcp_stream(
        target.host,
        target.port,
        ssl_context=ssl_context or ssl.create_default_context(),
        https_compatible=True,
    )


class WatchedStream(trio.abc.Stream):
    """A stream that calls ``on_end`` when the peer closes or resets it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self._inner = inner
        self.on_end: Callable[[], None] | None = None

    def _ended(self) -> None:
        if self.on_end is not None:
            self.on_end()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            data = await self._inner.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._ended()
            raise
        if not data:
            self._ended()
        return bytes(data)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self._inner.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._ended()
            raise

    async def wait_send_all_might_not_block(self) -> None:
        await self._inner.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._inner.aclose()


async def upgrade(
    nursery: trio.Nursery,
    stream: WatchedStream,
    target: Target,
    *,
    subprotocols: tuple[str, ...],
    headers: list[tuple[bytes, bytes]],
    max_message_size: int,
) -> WebSocketConnection | None:
    """The WebSocket over *stream*, or None if the peer hung up before answering.

    The connection's reader runs in *nursery*; an answer other than 101 raises
    ``trio_websocket.ConnectionRejected`` there.
    """
    from trio_websocket import wrap_client_stream

    with trio.CancelScope() as waiting:
        stream.on_end = waiting.cancel
        try:
            return await wrap_client_stream(
                nursery,
                cast(Any, stream),  # any trio Stream works; its annotation is narrower
                target.host_header,
                target.resource,
                subprotocols=subprotocols,
                extra_headers=headers,
                max_message_size=max_message_size,
            )
        finally:
            stream.on_end = None
    return None
