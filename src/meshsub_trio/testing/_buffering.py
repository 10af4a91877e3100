"""A buffering HTTP proxy for tests: the middlebox that makes event streams useless.

Many reverse proxies (nginx with ``proxy_buffering on``, some CDNs and
corporate gateways) forward a response's head at once but hold its body
until the response is complete or a buffer fills. An event stream is never
complete and its keep-alives are tiny, so nothing of it ever arrives, while
whole responses (GraphQL over HTTP, a long-poll's answer) pass. This proxy
does exactly that, so a client's fallback can be tested against it:

* each response head is forwarded at once; its body is held until the
  response ends (``content-length`` reached, the last chunk of a chunked
  body, or the upstream closing a body of unknown length) or ``hold_kb`` KiB
  are held, whichever comes first;
* with ``websockets=False`` (the default) it is a proxy that knows no
  WebSockets: ``Upgrade`` and ``Connection: upgrade`` are removed from each
  connection's first request, so the server answers it as plain HTTP;
* ``buffering`` and ``websockets`` are read as each connection starts, so a
  test can make the proxy transparent (the middlebox gone) between connections.

:class:`ResponseHolder` is the sans-IO part (bytes in, bytes to forward out).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from functools import partial

import trio

_HEAD_END = b"\r\n\r\n"
_CRLF = b"\r\n"
_NETWORK_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


def strip_upgrade_headers(head: bytes) -> bytes:
    """A request *head* without ``Upgrade`` and without a ``Connection`` naming upgrade."""
    first, *fields = head.split(_CRLF)
    kept = [first]
    for line in fields:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"upgrade" or (name == b"connection" and b"upgrade" in value.lower()):
            continue
        kept.append(line)
    return _CRLF.join(kept)


class ResponseHolder:
    """Response bytes in, the bytes a buffering proxy forwards out.

    Tracks where each response ends (HTTP/1.1 framing: ``content-length``,
    chunked, or until close; 1xx, 204 and 304 have no body; 101 turns the
    connection into a tunnel).
    """

    def __init__(self, hold_bytes: int) -> None:
        self.hold_bytes = hold_bytes
        #: Body bytes held now; and body bytes ever held (for assertions).
        self._held = bytearray()
        self.total_held = 0
        #: Responses seen complete, and times the hold limit forced a flush.
        self.responses = 0
        self.flushes = 0
        self._head = bytearray()
        self._state = "head"  # head, length, chunk-size, chunk-data, trailer, close, tunnel
        self._remaining = 0
        self._line = bytearray()

    @property
    def holding(self) -> int:
        return len(self._held)

    def feed(self, data: bytes) -> bytes:
        """The part of *data* (and what was held) that may go out now."""
        out = bytearray()
        view = memoryview(data)
        while view:
            if self._state == "tunnel":
                out += view
                break
            if self._state == "head":
                view = self._feed_head(view, out)
            else:
                view = self._feed_body(view, out)
        return bytes(out)

    def eof(self) -> bytes:
        """The upstream closed: everything held goes out."""
        out = bytes(self._held)
        self._held.clear()
        return out

    # ---- heads -------------------------------------------------------------
    def _feed_head(self, view: memoryview, out: bytearray) -> memoryview:
        before = len(self._head)
        self._head += view
        end = self._head.find(_HEAD_END)
        if end < 0:
            return view[len(view) :]
        size = end + len(_HEAD_END)
        head = bytes(self._head[:size])
        self._head.clear()
        out += head
        self._start_body(head)
        return view[size - before :]

    def _start_body(self, head: bytes) -> None:
        lines = head[: -len(_HEAD_END)].split(_CRLF)
        parts = lines[0].split(b" ")
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 200
        fields: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            fields[name.strip().lower()] = value.strip().lower()
        if status == 101:
            self._state = "tunnel"
        elif 100 <= status < 200 or status in (204, 304):
            self._state = "head"
        elif b"chunked" in fields.get(b"transfer-encoding", b""):
            self._state = "chunk-size"
        elif b"content-length" in fields:
            self._remaining = int(fields[b"content-length"])
            self._state = "length"
            if not self._remaining:
                self._end_response(bytearray())
        else:
            self._state = "close"

    # ---- bodies --------------------------------------------------------------
    def _feed_body(self, view: memoryview, out: bytearray) -> memoryview:
        state = self._state
        if state == "close":
            taken, view = view, view[len(view) :]
        elif state in ("length", "chunk-data"):
            taken, view = view[: self._remaining], view[self._remaining :]
            self._remaining -= len(taken)
        else:  # a line: a chunk's size, or a trailer (an empty one ends the body)
            end = bytes(view).find(b"\n")
            if end < 0:
                taken, view = view, view[len(view) :]
            else:
                taken, view = view[: end + 1], view[end + 1 :]
            self._line += taken
        self._hold(taken, out)
        if state == "length" and not self._remaining:
            self._end_response(out)
        elif state == "chunk-data" and not self._remaining:
            self._state = "chunk-size"
        elif state in ("chunk-size", "trailer") and self._line.endswith(b"\n"):
            line = bytes(self._line).strip()
            self._line.clear()
            if state == "trailer":
                if not line:
                    self._end_response(out)
            elif line:
                size = int(line.split(b";")[0], 16)
                # The data, then its CRLF (read as data: two more bytes).
                self._remaining = size + 2 if size else 0
                self._state = "chunk-data" if size else "trailer"
        return view

    def _hold(self, data: memoryview, out: bytearray) -> None:
        self._held += data
        self.total_held += len(data)
        if len(self._held) >= self.hold_bytes:
            self.flushes += 1
            out += self._held
            self._held.clear()

    def _end_response(self, out: bytearray) -> None:
        out += self._held
        self._held.clear()
        self.responses += 1
        self._state = "head"


class BufferingProxy:
    """See the module docstring; ``port`` is where clients connect."""

    def __init__(
        self, upstream_host: str, upstream_port: int, *, hold_kb: int = 64, websockets: bool = False
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.hold_bytes = hold_kb * 1024
        #: False: forward everything as it comes (the middlebox is gone).
        self.buffering = True
        self.websockets = websockets
        self.port = 0
        #: Upgrade requests stripped; and the holders of every connection so far.
        self.stripped = 0
        self.holders: list[ResponseHolder] = []

    @property
    def held(self) -> int:
        """Body bytes ever held back, over every connection."""
        return sum(holder.total_held for holder in self.holders)

    async def handle(self, client: trio.SocketStream) -> None:
        buffering, websockets = self.buffering, self.websockets
        async with client:
            try:
                upstream = await trio.open_tcp_stream(*self.upstream)
            except OSError:
                return
            holder = ResponseHolder(self.hold_bytes if buffering else 1)
            self.holders.append(holder)
            async with upstream, trio.open_nursery() as nursery:
                nursery.start_soon(self._requests, client, upstream, websockets)
                with suppress(*_NETWORK_ERRORS):
                    while data := await upstream.receive_some():
                        if out := holder.feed(data):
                            await client.send_all(out)
                    if rest := holder.eof():
                        await client.send_all(rest)
                nursery.cancel_scope.cancel()

    async def _requests(
        self, client: trio.SocketStream, upstream: trio.SocketStream, websockets: bool
    ) -> None:
        pending = b""
        with suppress(*_NETWORK_ERRORS):
            while _HEAD_END not in pending:
                data = await client.receive_some()
                if not data:
                    await upstream.send_eof()
                    return
                pending += data
            head, _, rest = pending.partition(_HEAD_END)
            if not websockets and b"upgrade:" in head.lower():
                head = strip_upgrade_headers(head)
                self.stripped += 1
            await upstream.send_all(head + _HEAD_END + rest)
            while data := await client.receive_some():
                await upstream.send_all(data)
            await upstream.send_eof()


@asynccontextmanager
async def open_buffering_proxy(
    upstream_host: str, upstream_port: int, *, hold_kb: int = 64, websockets: bool = False
) -> AsyncIterator[BufferingProxy]:
    """Run a :class:`BufferingProxy` on a free loopback port for the block."""
    proxy = BufferingProxy(upstream_host, upstream_port, hold_kb=hold_kb, websockets=websockets)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, proxy.handle, 0, host="127.0.0.1"))
        proxy.port = listeners[0].socket.getsockname()[1]
        yield proxy
        nursery.cancel_scope.cancel()
