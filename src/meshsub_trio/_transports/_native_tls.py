"""The native host's TLS driver: where the socket's bytes meet a :class:`TlsLayer`.

The handshake is driven here with the same descriptor reads and non-blocking
writes as everything else; afterwards a WebSocket is a :class:`TlsWebSocket`
(its ``_write`` encrypts, then the plain socket's ``os.write`` and backlog
carry the records, with no task switch) and plain HTTP goes through
:class:`TlsStream`, a small ``trio.abc.Stream`` over the same layer. The
choice is made once per connection: a plaintext server never reaches this
module.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
from functools import partial
from typing import Any

import trio

from ._native_ws import NativeWebSocket, receive_some
from ._tls import TlsLayer

log = logging.getLogger("meshsub_trio.tls")

#: The answer to plain HTTP on the TLS port (a browser shows it; curl prints it).
_PLAIN_REFUSAL_BODY = b"This port speaks TLS: use https:// or wss://\n"
PLAIN_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
    % (len(_PLAIN_REFUSAL_BODY), _PLAIN_REFUSAL_BODY)
)
#: A TLS record starts with its content type: 22 is a handshake (the ClientHello).
_HANDSHAKE_RECORD = 0x16


async def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """Everything out through the non-blocking socket, waiting (cancellably) for room."""
    view = memoryview(data)
    while True:
        with contextlib.suppress(BlockingIOError):
            view = view[os.write(fd, view) :]
        if not view:
            return
        await trio.lowlevel.wait_writable(fd)


async def tls_receive(layer: TlsLayer, fd: int, *, try_first: bool = True) -> bytes:
    """The next plaintext (b"" at the end of the connection, however it ended).

    A read that completes no record (a record split across TCP segments)
    waits for more instead of returning nothing.
    """
    while True:
        data = await receive_some(fd, try_first=try_first)
        if not data:
            return b""
        try:
            plain = layer.feed(data)
        except ssl.SSLError:
            return b""  # close_notify, or a corrupt record: the connection is over
        if plain:
            return plain
        try_first = False


async def accept_tls(
    sock: trio.socket.SocketType, layer: TlsLayer, timeout: float
) -> bytes | None:
    """Run the server side of the handshake within *timeout*.

    Returns the plaintext that arrived with the client's last handshake flight
    (often the request head), or None when there is no TLS connection: the
    peer left, was too slow, failed the handshake (bad or missing client
    certificate), or spoke plain HTTP (answered 400 and logged, one line).
    """
    fd = sock.fileno()
    first = True
    with trio.move_on_after(timeout):
        while True:
            data = await receive_some(fd, try_first=first)
            if not data:
                return None
            if first:
                first = False
                if data[0] != _HANDSHAKE_RECORD:
                    await _refuse_plaintext(sock, data)
                    return None
            try:
                done = layer.handshake(data)
            except ssl.SSLError as error:
                with trio.move_on_after(1), contextlib.suppress(OSError):
                    await write_all(fd, layer.pending())  # the alert says why
                log.info(
                    "TLS handshake failed",
                    extra={"peer": _peer(sock), "reason": _reason(error)},
                )
                return None
            out = layer.pending()
            if out:
                await write_all(fd, out)
            if done:
                try:
                    return layer.feed(b"")
                except ssl.SSLError:
                    return None
    log.debug("TLS handshake timed out", extra={"peer": _peer(sock)})
    return None


async def _refuse_plaintext(sock: trio.socket.SocketType, data: bytes) -> None:
    """Plain HTTP (or anything not TLS) on the TLS port: one log line and a 400."""
    looks_like_http = data[:1].isalpha()
    log.warning(
        "plain %s on the TLS port refused: clients must use https:// or wss://",
        "HTTP" if looks_like_http else "bytes (not a TLS handshake)",
        extra={"peer": _peer(sock)},
    )
    if looks_like_http:
        fd = sock.fileno()
        with trio.move_on_after(1), contextlib.suppress(OSError):
            await write_all(fd, PLAIN_REFUSAL)
            sock.shutdown(socket.SHUT_WR)
            while await receive_some(fd):  # unread bytes would reset the answer away
                pass


def _peer(sock: trio.socket.SocketType) -> str | None:
    try:
        name = sock.getpeername()
    except OSError:
        return None
    return f"{name[0]}:{name[1]}"


def _reason(error: ssl.SSLError) -> str:
    return str(error.reason or error.strerror or error)


class TlsStream(trio.abc.Stream):
    """Plain HTTP (h11) over a handshaken :class:`TlsLayer` on a Trio socket."""

    def __init__(self, sock: trio.socket.SocketType, layer: TlsLayer) -> None:
        self.socket = sock
        self.layer = layer
        self._fd = sock.fileno()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await write_all(self._fd, self.layer.encrypt(data))
        except OSError as error:
            raise trio.BrokenResourceError(str(error)) from error

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.wait_writable(self._fd)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await tls_receive(self.layer, self._fd)

    async def aclose(self) -> None:
        # The host closes the socket itself once the connection's tasks are done.
        await trio.lowlevel.checkpoint()


class TlsWebSocket(NativeWebSocket):
    """A :class:`NativeWebSocket` whose bytes are TLS records.

    Only the two places bytes cross the socket differ: reads go through
    :func:`tls_receive`, and ``_write`` encrypts before the plain socket's
    non-blocking write and backlog (so the backlog, its bound, the writer
    task and the write deadline all count and carry ciphertext).
    """

    __slots__ = ("_tls",)

    def __init__(self, sock: trio.socket.SocketType, layer: TlsLayer, **options: Any) -> None:
        super().__init__(sock, **options)
        self._tls = layer
        self._recv = partial(tls_receive, layer)

    def _write(self, data: bytes) -> None:
        NativeWebSocket._write(self, self._tls.encrypt(data))
