"""``transport="auto"``: WebSocket first, down to SSE where the upgrade cannot pass,
down to long-poll where a proxy holds the event stream.

The ladder, per URL:

1. WebSocket (graphql-transport-ws, then legacy graphql-ws).
2. If the upgrade is answered with a plain HTTP status instead of 101 (a
   426/400/404 from an edge that refuses WebSockets, or the server's own
   answer to a GET whose ``Upgrade`` a proxy stripped), the same attempt goes
   on over SSE at once, and a :class:`TransportChanged` notice says so.
   401/403 (the credentials would be refused on SSE too), 429 and 5xx but
   501 (the server is busy or down, not the path) keep their usual verdicts.
3. If an SSE stream's 200 head arrives but not one byte of its body within
   the heartbeat bound (``ping_interval + pong_timeout``; the server writes a
   ``:`` at once and keep-alives after), a buffering proxy holds the stream:
   the ladder ends that link as its own decision (the session reconnects at
   once, resuming every operation) and the URL goes on over long-poll, with
   a :class:`TransportChanged` notice. A stream that went silent after bytes
   arrived is a partition, not a proxy: it is retried as usual.
4. Climbing back up: the URL stays down for ``websocket_retry_after``
   seconds (300 by default). The first attempt at it after that, whenever the
   session makes one (a lost stream, a failover, a new operation after the
   idle close), tries WebSocket again, and a notice says when it works again.
   A healthy SSE link is never torn down just to climb: that would cost every
   operation a resubscription for nothing. A poll link is: it ends itself
   when the window has passed, because each poll resubscribes anyway.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import trio

from ._poll import POLL, PollLink
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
    """WebSocket links that fall back to SSE, then long-poll, per URL; see the module docstring."""

    def __init__(self) -> None:
        WebSocketTransport()  # the helpful ImportError without trio-websocket
        #: URL -> when it fell back to SSE (Trio time).
        self.fell_back: dict[str, float] = {}
        #: URL -> when it fell further, to long-poll (Trio time).
        self.polled: dict[str, float] = {}

    def open_link(self, url: str, settings: LinkSettings, handler: LinkHandler) -> Link:
        now = trio.current_time()
        window = settings.websocket_retry_after
        since = self.polled.get(url)
        if since is not None and now - since < window:
            return PollLink(url, settings, handler, climb_after=since + window - now)
        since = self.fell_back.get(url)
        if since is not None and now - since < window:
            return LadderLink(self, url, settings, handler, start_on_sse=True)
        return LadderLink(self, url, settings, handler)


class LadderLink:
    """A WebSocket attempt that becomes an SSE link if the upgrade is refused,
    and that sends its URL down to long-poll if the SSE stream is held."""

    def __init__(
        self,
        ladder: LadderTransport,
        url: str,
        settings: LinkSettings,
        handler: LinkHandler,
        *,
        start_on_sse: bool = False,
    ) -> None:
        self.url = url
        self.ready = trio.Event()
        self._ladder = ladder
        self._settings = settings
        self._handler = handler
        self._inner: WebSocketLink | SseLink
        if start_on_sse:
            self._inner = SseLink(url, settings, handler)
        else:
            self._inner = WebSocketLink(url, replace(settings, transport="auto"), handler)
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
        if self._closing:
            return disconnect
        if isinstance(self._inner, WebSocketLink):
            if not falls_back(disconnect):
                return disconnect
            self._ladder.fell_back[self.url] = trio.current_time()
            self._handler.on_transport_changed(
                self.url, "sse", f"the WebSocket upgrade was answered HTTP {disconnect.status}"
            )
            self._inner = SseLink(self.url, self._settings, self._handler)
            disconnect = await self._run_inner()
            if self._closing:
                return disconnect
        if not self._inner.held_by_proxy:
            return disconnect
        self._ladder.polled[self.url] = trio.current_time()
        settings = self._settings
        bound = settings.ping_interval + settings.pong_timeout
        self._handler.on_transport_changed(
            self.url, POLL, f"the SSE stream stayed silent past {bound:g} s: a proxy holds it"
        )
        # Our own decision, not a failure: the session reconnects at once (over poll).
        return replace(disconnect, by_client=True)

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
            ladder = self._ladder
            if isinstance(inner, WebSocketLink) and (
                self.url in ladder.fell_back or self.url in ladder.polled
            ):
                ladder.fell_back.pop(self.url, None)
                ladder.polled.pop(self.url, None)
                self._handler.on_transport_changed(
                    self.url, str(inner.subprotocol), "the WebSocket upgrade works again"
                )
            self.ready.set()
