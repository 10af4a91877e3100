"""``transport="auto"``: WebSocket first, down to SSE where the upgrade cannot pass.

The ladder, per URL:

1. WebSocket (graphql-transport-ws, then legacy graphql-ws).
2. If the upgrade is answered with a plain HTTP status instead of 101 (a
   426/400/404 from an edge that refuses WebSockets, or the server's own
   answer to a GET whose ``Upgrade`` a proxy stripped), the same attempt goes
   on over SSE at once, and a :class:`TransportChanged` notice says so.
   401/403 (the credentials would be refused on SSE too), 429 and 5xx but
   501 (the server is busy or down, not the path) keep their usual verdicts.
3. Climbing back up: the URL stays on SSE for ``websocket_retry_after``
   seconds (300 by default). The first attempt at it after that, whenever the
   session makes one (a lost stream, a failover, a new operation after the
   idle close), tries WebSocket again, and a notice says when it works again.
   A healthy SSE link is never torn down just to climb: that would cost every
   operation a resubscription for nothing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import trio

from ._sse import SseLink
from ._transport import Disconnect, Link, LinkHandler, LinkSettings
from ._websocket import WebSocketLink, WebSocketTransport


def falls_back(disconnect: Disconnect) -> bool:
    """Whether a failed attempt means "no WebSocket on this path": try SSE instead."""
    status = disconnect.status
    if status is None or disconnect.acknowledged or disconnect.by_client:
        return False
    if status in (401, 403, 429):
        return False
    return status < 500 or status == 501


class LadderTransport:
    """WebSocket links that fall back to SSE per URL; see the module docstring."""

    def __init__(self) -> None:
        WebSocketTransport()  # the helpful ImportError without trio-websocket
        #: URL -> when it fell back to SSE (Trio time).
        self.fell_back: dict[str, float] = {}

    def open_link(self, url: str, settings: LinkSettings, handler: LinkHandler) -> Link:
        since = self.fell_back.get(url)
        if since is not None and trio.current_time() - since < settings.websocket_retry_after:
            return SseLink(url, settings, handler)
        return LadderLink(self, url, settings, handler)


class LadderLink:
    """A WebSocket attempt that becomes an SSE link if the upgrade is refused."""

    def __init__(
        self, ladder: LadderTransport, url: str, settings: LinkSettings, handler: LinkHandler
    ) -> None:
        self.url = url
        self.ready = trio.Event()
        self._ladder = ladder
        self._settings = settings
        self._handler = handler
        self._inner: WebSocketLink | SseLink = WebSocketLink(
            url, replace(settings, transport="auto"), handler
        )
        self._closing = False

    @property
    def subprotocol(self) -> str | None:
        return self._inner.subprotocol

    def subscribe(self, op_id: str, payload: dict[str, Any]) -> None:
        self._inner.subscribe(op_id, payload)

    def complete(self, op_id: str) -> None:
        self._inner.complete(op_id)

    def close(self) -> None:
        self._closing = True
        self._inner.close()

    async def run(self) -> Disconnect:
        disconnect = await self._run_inner()
        if self._closing or not falls_back(disconnect):
            return disconnect
        self._ladder.fell_back[self.url] = trio.current_time()
        self._handler.on_transport_changed(
            self.url, "sse", f"the WebSocket upgrade was answered HTTP {disconnect.status}"
        )
        self._inner = SseLink(self.url, self._settings, self._handler)
        return await self._run_inner()

    async def _run_inner(self) -> Disconnect:
        inner = self._inner
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._mirror_ready, inner)
            disconnect = await inner.run()
            nursery.cancel_scope.cancel()
        return disconnect

    async def _mirror_ready(self, inner: WebSocketLink | SseLink) -> None:
        await inner.ready.wait()
        if inner is self._inner and not self.ready.is_set():
            if isinstance(inner, WebSocketLink) and self.url in self._ladder.fell_back:
                del self._ladder.fell_back[self.url]
                self._handler.on_transport_changed(
                    self.url, str(inner.subprotocol), "the WebSocket upgrade works again"
                )
            self.ready.set()
