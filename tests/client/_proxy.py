"""A tiny HTTP-aware Trio TCP proxy: the middleboxes that push a client off WebSockets.

``strip``: removes ``Upgrade`` and ``Connection: upgrade`` from each
connection's first request head, as a proxy that knows no WebSockets does, so
the server answers the upgrade as plain HTTP. ``buffer``: forwards each
response head and then holds every body byte (never forwards it), as a
buffering proxy does to an event stream. Both are read when a connection
starts, so a test can flip them between connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import trio

HEAD_END = b"\r\n\r\n"


def strip_upgrade(head: bytes) -> bytes:
    """*head* without ``Upgrade`` and without a ``Connection`` header naming upgrade."""
    lines = head.split(b"\r\n")
    kept = [lines[0]]
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"upgrade" or (name == b"connection" and b"upgrade" in value.lower()):
            continue
        kept.append(line)
    return b"\r\n".join(kept)


class HttpProxy:
    """See the module docstring; ``port`` is where clients connect."""

    def __init__(self, upstream_port: int, *, strip: bool = False, buffer: bool = False) -> None:
        self.upstream_port = upstream_port
        self.strip = strip
        self.buffer = buffer
        self.port = 0
        #: Upgrade requests whose headers were stripped, and body bytes held back.
        self.stripped = 0
        self.held = 0
        #: Request heads seen, in order (first line only): what the client tried.
        self.requests: list[str] = []

    async def handle(self, client: trio.SocketStream) -> None:
        strip, buffer = self.strip, self.buffer
        async with client:
            try:
                upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
            except OSError:
                return
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(self._requests, client, upstream, strip, nursery.cancel_scope)
                await self._responses(upstream, client, buffer)
                nursery.cancel_scope.cancel()

    async def _requests(
        self,
        client: trio.SocketStream,
        upstream: trio.SocketStream,
        strip: bool,
        done: trio.CancelScope,
    ) -> None:
        pending = b""
        try:
            while HEAD_END not in pending:
                data = await client.receive_some()
                if not data:
                    return
                pending += data
            head, _, rest = pending.partition(HEAD_END)
            self.requests.append(head.split(b"\r\n", 1)[0].decode("latin-1"))
            if strip and b"upgrade:" in head.lower():
                head = strip_upgrade(head)
                self.stripped += 1
            await upstream.send_all(head + HEAD_END + rest)
            while data := await client.receive_some():
                await upstream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            done.cancel()

    async def _responses(
        self, upstream: trio.SocketStream, client: trio.SocketStream, buffer: bool
    ) -> None:
        pending = b""
        head_sent = False
        try:
            while data := await upstream.receive_some():
                if not buffer:
                    await client.send_all(data)
                elif head_sent:
                    self.held += len(data)  # a buffering proxy: never forwarded
                else:
                    pending += data
                    if HEAD_END in pending:
                        head, _, body = pending.partition(HEAD_END)
                        await client.send_all(head + HEAD_END)
                        self.held += len(body)
                        head_sent = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@asynccontextmanager
async def open_http_proxy(
    upstream_port: int, *, strip: bool = False, buffer: bool = False
) -> AsyncIterator[HttpProxy]:
    proxy = HttpProxy(upstream_port, strip=strip, buffer=buffer)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        yield proxy
        nursery.cancel_scope.cancel()
