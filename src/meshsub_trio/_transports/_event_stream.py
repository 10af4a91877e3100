"""An app route's :class:`~meshsub_trio._app.EventStream`, driven over one HTTP response.

The same shape as :class:`._http_stream.HttpStream` (one nursery per
response), for a plain event source instead of a GraphQL operation. Its
children: the producer (drains the route's iterator into a bounded frame
channel, so a client that does not keep up stops it pulling: the route's own
buffer policy then decides), the writer (the only task that sends, each chunk
under ``write_timeout``), the keep-alive and a watcher for ``http.disconnect``.

The route's ``open()`` context manager is entered before the headers go out
(so it can still refuse with a plain response) and exited once, after the
nursery, however the stream ended: the iterator finishing or failing, the
client leaving, a stalled reader, or shutdown (which stops the producer and
lets the writer flush what is queued, then end the body).

Under hypercorn, whose send cannot be cancelled and which announces no
shutdown, the watcher enforces the write deadline (the producer stops; the
writer stays in hypercorn's send until the socket dies, and ``open()`` is
exited then), and a cancellation by the host ends the body as a shutdown
does (see :mod:`._http_stream` for what bounds that).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import trio

from .._app import EventStream, ServerSentEvent, StreamRefused
from .._wire._sse import STREAM_HEADERS, comment, encode_event
from ._client_watch import ClientWatch
from ._responses import send_whole

if TYPE_CHECKING:
    from .._core._state import ServerState

log = logging.getLogger("meshsub_trio.event_stream")

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

#: Frames queued between the producer and the writer before the producer waits.
FRAME_BUFFER = 64
#: Sent on every event stream besides :data:`STREAM_HEADERS` (as Go and Node SSE servers do).
_KEEP_ALIVE_HEADERS = (("connection", "keep-alive"),)


class EventStreamDriver:
    """One streaming response: the route's events out, until something ends it."""

    def __init__(
        self, state: ServerState, stream: EventStream, receive: Receive, send: Send
    ) -> None:
        self.state = state
        self.stream = stream
        self._send = send
        self._out, self._frames = trio.open_memory_channel[bytes](FRAME_BUFFER)
        self._nursery: trio.Nursery | None = None
        self._producer = trio.CancelScope()
        #: How it ended: complete, shutdown, disconnect, stalled, error.
        self.end = "complete"
        #: The body's writes, and the client they tell of (watched beside the writer).
        self._client = ClientWatch(
            receive, send, state.config.write_timeout, gone=self._abort, stalled=self._stalled
        )

    async def run(self) -> None:
        """Refuse, or stream until the end; ``open()`` has been exited when this returns."""
        async with AsyncExitStack() as stack:
            try:
                events = await stack.enter_async_context(self.stream.open())
            except StreamRefused as refused:
                answer = refused.response
                await send_whole(
                    self._send, answer.status, answer.body, answer.content_type, answer.headers
                )
                return
            headers = [*STREAM_HEADERS, *_KEEP_ALIVE_HEADERS, *self.stream.headers]
            await self._send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers],
                }
            )
            streams = self.state.http_streams
            streams.add(self)
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    retry = self.stream.retry_ms
                    # The first chunk flushes the headers through proxies.
                    self._out.send_nowait(b"retry: %d\n\n" % retry if retry else comment())
                    nursery.start_soon(self._write_loop)
                    nursery.start_soon(self._client.watch)
                    if self.stream.keepalive > 0:
                        nursery.start_soon(self._keepalive_loop)
                    nursery.start_soon(self._produce, events)
                    if self.state.shutting_down:
                        self.shutdown()
            finally:
                self._nursery = None
                streams.discard(self)
                if not self._client.finished and self.end in ("complete", "error"):
                    await self._end_when_cancelled()

    async def _end_when_cancelled(self) -> None:
        """The host cancelled the stream (hypercorn at ``graceful_timeout``): send
        what is queued and end the body, shielded, under a ``close_timeout``
        deadline (which hypercorn's uncancellable send ignores)."""
        self.end = "shutdown"
        batch: list[bytes] = []
        while True:
            try:
                batch.append(self._frames.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self.state.config.close_timeout
            if batch and not await self._write(b"".join(batch), more=True):
                return
            await self._write(b"", more=False)

    def shutdown(self) -> None:
        """Server shutdown: stop producing; what is queued is sent, then the body ends."""
        if self.end == "complete":
            self.end = "shutdown"
        self._producer.cancel()

    def _abort(self, end: str) -> None:
        """The client cannot hear us (gone, or not reading): stop everything now."""
        if self.end in ("complete", "shutdown"):
            self.end = end
        self._client.finished = True
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _stalled(self) -> None:
        """A write is past ``write_timeout``: the reader is dropped (once)."""
        if self.end in ("disconnect", "stalled"):
            return
        timeout = self.state.config.write_timeout
        log.warning("write stalled %.1fs: dropping a slow event stream reader", timeout)
        self._abort("stalled")

    async def _produce(self, events: AsyncIterator[ServerSentEvent]) -> None:
        """Every event of the route, encoded, in order; then no more output."""
        try:
            with self._producer:
                async for event in events:
                    frame = encode_event(event.data, event=event.event, event_id=event.id)
                    await self._out.send(frame)
        except Exception:
            # The source failed (e.g. its buffer overflowed): end this response;
            # an EventSource reconnects with Last-Event-ID and resumes.
            log.warning("event stream source failed: ending the stream", exc_info=True)
            self.end = "error"
        finally:
            self._out.close()

    async def _keepalive_loop(self) -> None:
        """``: keepalive`` every ``keepalive`` seconds, as Meshery sends it."""
        frame = comment("keepalive")
        while True:
            await trio.sleep(self.stream.keepalive)
            try:
                self._out.send_nowait(frame)
            except trio.WouldBlock:
                pass  # frames are queued: the client hears from us anyway
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                return

    async def _write_loop(self) -> None:
        """Send what is queued, batched; once the producer is done, end the body."""
        frames = self._frames
        async for frame in frames:
            batch = [frame]
            while True:
                try:
                    batch.append(frames.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if not await self._write(b"".join(batch), more=True):
                return
        await self._write(b"", more=False)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()  # the watcher and the keep-alive

    async def _write(self, data: bytes, *, more: bool) -> bool:
        """One body chunk under ``write_timeout``: a reader that stops reading is dropped."""
        if not await self._client.write(data, more=more):
            return False
        await trio.lowlevel.checkpoint()  # hypercorn's send() may not checkpoint
        return True


async def serve_event_stream(
    state: ServerState, stream: EventStream, receive: Receive, send: Send
) -> None:
    """Drive *stream* over this response until it ends."""
    await EventStreamDriver(state, stream, receive, send).run()
