"""A proxy that puts each HTTP request of an unmodified client on the worker a test chooses.

A client (here the npm ``graphql-sse`` client, one request per connection)
connects to the proxy; the proxy reads the request's head, asks the test's
*place* function which worker should answer it, connects to that worker
(:func:`._sse_pinned_kit.connection_on`) and then copies bytes both ways until
either side closes. Every placement is recorded, so the test can show which
worker answered what.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from ._kit import Supervisor
from ._sse_pinned_kit import connection_on

MAX_HEAD = 64 * 1024


@dataclass(frozen=True)
class Request:
    """What the proxy read of a request's head."""

    method: str
    target: str
    stream: bool  # asks for an event stream

    @property
    def kind(self) -> str:
        """reserve, stream, operation or stop."""
        if self.stream:
            return "stream"
        return {"PUT": "reserve", "DELETE": "stop"}.get(self.method, "operation")


Place = Callable[[Request], int]


class PlacingProxy:
    """Listens on a port of its own; see the module doc."""

    def __init__(self, supervisor: Supervisor, place: Place) -> None:
        self.supervisor = supervisor
        self.place = place
        self.port = 0
        #: (request, worker index) in the order the requests arrived.
        self.placed: list[tuple[Request, int]] = []

    def workers_for(self, kind: str) -> list[int]:
        return [index for request, index in self.placed if request.kind == kind]

    async def serve(self, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        async with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = await client.receive_some(65536)
                if not chunk or len(head) > MAX_HEAD:
                    return
                head += chunk
            request = _parse(head)
            index = self.place(request)
            self.placed.append((request, index))
            upstream = await connection_on(self.supervisor, index)
            async with upstream:
                await upstream.send_all(head)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_copy, client, upstream, nursery.cancel_scope)
                    nursery.start_soon(_copy, upstream, client, nursery.cancel_scope)


def _parse(head: bytes) -> Request:
    lines = head.split(b"\r\n")
    method, target, _ = lines[0].decode("latin-1").split(" ", 2)
    accept = ""
    for line in lines[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip().lower()
    return Request(method, target, "text/event-stream" in accept)


async def _copy(
    source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
) -> None:
    """Bytes from *source* to *sink*; when either side is done, the connection is."""
    try:
        while chunk := await source.receive_some(65536):
            await sink.send_all(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        scope.cancel()


@asynccontextmanager
async def placing_proxy(supervisor: Supervisor, place: Place) -> AsyncIterator[PlacingProxy]:
    proxy = PlacingProxy(supervisor, place)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        yield proxy
        nursery.cancel_scope.cancel()
