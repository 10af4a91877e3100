"""How an HTTP stream learns that its client has gone or stopped reading.

A streaming response hears from its client only through ASGI's
``http.disconnect``; a client that stays connected but stops reading says
nothing at all, and shows only as a write that does not finish. Where the
host's send can be cancelled the write gives up at its deadline by itself;
hypercorn's cannot (it shields the socket write), so the stream's watcher
task wakes at the deadline of the write in progress instead. Both kinds of
stream (graphql-sse/multipart and an app's event stream) write their bodies
through :class:`ClientWatch`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def until_disconnect(receive: Receive) -> None:
    """Return when the ASGI server reports ``http.disconnect``: the only way an
    HTTP stream learns its client left while nothing is being written."""
    while (await receive())["type"] != "http.disconnect":
        pass


class ClientWatch:
    """A streaming response's body writes, and what they and ``http.disconnect``
    tell of its client: gone (*gone* is called with ``"disconnect"``) or not
    reading (*stalled* is called). Either is called from the write that found
    it or from :meth:`watch`, the stream's watcher task."""

    def __init__(
        self,
        receive: Receive,
        send: Send,
        write_timeout: float,
        *,
        gone: Callable[[str], None],
        stalled: Callable[[], None],
    ) -> None:
        self._receive = receive
        self._send = send
        self._write_timeout = write_timeout
        self._gone = gone
        self._stalled = stalled
        #: When the write in progress is late (inf: none is in progress).
        self.deadline = math.inf
        self._wait = trio.CancelScope()
        #: The body's end has been sent (or the client can no longer hear it).
        self.finished = False

    async def write(self, data: bytes, *, more: bool) -> bool:
        """One body chunk within ``write_timeout``: True once sent; False when the
        client is lost (and its callback was called).

        The body's end is recorded before this returns, so a cancel landing at
        the caller's next checkpoint cannot make the body end a second time.
        """
        why = await self._write(data, more=more)
        if why is not None:
            self._lost(why)
            return False
        return True

    async def watch(self) -> None:
        """Until the client leaves (``http.disconnect``) or stops reading; then
        say so through the callback.

        Not reading shows as a write still unfinished at its deadline: that
        wakes this wait (each write moves the deadline). On a host whose send
        cannot be cancelled, this is what drops the reader.
        """
        self._lost(await self._gone_or_stalled())

    def _lost(self, why: str) -> None:
        if why == "stalled":
            self._stalled()
        else:
            self._gone(why)

    async def _write(self, data: bytes, *, more: bool) -> str | None:
        """The write itself: None once sent, else why not."""
        with trio.move_on_after(self._write_timeout) as scope:
            self._arm(scope.deadline)
            try:
                await self._send({"type": "http.response.body", "body": data, "more_body": more})
            except Exception:  # the host's own "peer gone" (OSError, a closed stream, ...)
                return "disconnect"
            finally:
                self._arm(math.inf)
            self.finished = self.finished or not more
            return None
        return "stalled"

    async def _gone_or_stalled(self) -> str:
        while True:
            with trio.CancelScope(deadline=self.deadline) as self._wait:
                await until_disconnect(self._receive)
                return "disconnect"
            if trio.current_time() >= self.deadline:
                return "stalled"

    def _arm(self, deadline: float) -> None:
        """A write started that must finish by *deadline* (inf: it finished)."""
        self.deadline = deadline
        self._wait.deadline = deadline
