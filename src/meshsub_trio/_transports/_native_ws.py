"""A WebSocket on a Trio socket: every wait is cancellable.

Inbound frames go through the sans-IO :class:`FrameReader`; outbound frames
are built here (server frames are unmasked: one header plus the payload).

Reads and writes use the socket's file descriptor directly. A read tries
the socket first and waits for readability only when it has nothing; a write
goes straight to the non-blocking socket (``os.write``), synchronously, from
whichever task has the frames: the kernel usually takes them at once, so a
fan-out costs one system call per socket and no scheduler pass. What the
kernel does not take stays in :attr:`backlog`, in order, and the connection's
writer task flushes it (``flush`` waits for writability, cancellably, under the
write deadline). Every later write appends behind the backlog, so frames never
reorder and never interleave.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import trio

from .._wire._frames import (
    PING,
    PONG,
    TEXT,
    Close,
    FrameError,
    FrameReader,
    Ping,
    close_frame,
    frame,
    frame_header,
)
from ._socket import Message, SocketClosed

_RECEIVE_SIZE = 65536
_NOT_ON_THE_WIRE = frozenset({1005, 1006, 1015})

# Where the close handshake stands (RFC 6455 §7).
OPEN, REMOTE_CLOSING, LOCAL_CLOSING, CLOSED = range(4)



#: The keep-alive ping, framed once.
_PING_FRAME = frame(PING, b"meshsub")

async def receive_some(fd: int, *, try_first: bool = True) -> bytes:
    """Bytes from a non-blocking socket (b"" at its end), waiting only if there are none.

    Leaner than ``SocketStream.receive_some``: when the bytes are already
    there it costs one system call and one checkpoint, not two scheduler
    passes. Without *try_first* it waits for readability before reading, which
    is cheaper when the caller has just drained the socket and expects to wait
    (no failed system call, no exception).
    """
    if try_first:
        try:
            data = os.read(fd, _RECEIVE_SIZE)
        except BlockingIOError:
            pass
        except OSError:
            return b""
        else:
            await trio.lowlevel.checkpoint()
            return data
    while True:
        await trio.lowlevel.wait_readable(fd)
        try:
            return os.read(fd, _RECEIVE_SIZE)
        except BlockingIOError:
            continue
        except OSError:
            return b""


def close_unwatched(sock: trio.socket.SocketType) -> None:
    """Close a socket that no task is waiting on (its connection's tasks have all ended).

    ``sock.close()`` first tells Trio's I/O manager, which wakes the waiters
    (there are none) and removes the descriptor from epoll, a system call the
    kernel makes redundant by dropping a closed descriptor itself. Only safe
    once nothing can be waiting on the socket: a waiter would never wake.
    """
    fd = sock.detach()
    if fd >= 0:
        os.close(fd)


class NativeWebSocket:
    """The :class:`MessageSocket` of the native host."""

    __slots__ = (
        "_backlog",
        "_drained",
        "_fd",
        "_flushed",
        "_flushing",
        "_max_backlog",
        "_reader",
        "_recv",
        "_socket",
        "_state",
        "on_activity",
        "on_backlog",
    )

    def __init__(
        self,
        sock: trio.socket.SocketType,
        *,
        leftover: bytes = b"",
        max_message_size: int,
        max_backlog: int = 256 * 1024,
    ) -> None:
        self._socket = sock
        self._max_backlog = max_backlog
        self._fd = sock.fileno()
        self._backlog = bytearray()
        self._flushing = False
        self._flushed: trio.lowlevel.ParkingLot | None = None  # made when a second flusher waits
        self._reader = FrameReader(max_message_size)
        #: Where bytes come from: the socket itself (a TLS socket: through its layer).
        self._recv: Callable[..., Awaitable[bytes]] = receive_some
        if leftover:
            self._reader.receive_data(leftover)  # bytes read past the handshake
        self._state = OPEN
        #: Whether the last read took everything there was (None: no read yet).
        self._drained: bool | None = None
        self.on_activity: Callable[[], None] = lambda: None
        #: Called when bytes are left for the writer task to flush.
        self.on_backlog: Callable[[], None] = lambda: None

    @property
    def peer(self) -> tuple[str, int] | None:
        """The peer's address, for log lines (a system call: asked only when logging)."""
        try:
            name = self._socket.getpeername()
        except OSError:
            return None
        return (str(name[0]), int(name[1]))

    @property
    def backlog(self) -> int:
        """Bytes accepted but not yet taken by the kernel."""
        return len(self._backlog)

    async def receive(self) -> Message:
        reader = self._reader
        while True:
            try:
                event = reader.next_event()
            except FrameError as error:
                # Reported like a close frame with the error's code: the
                # connection answers it with that code (we are still OPEN).
                raise SocketClosed(error.code, error.reason) from None
            if event is None:
                await self._wait_for_room()
                # A short last read drained the socket a moment ago: more bytes
                # are unlikely to be there yet, so wait before reading.
                data = await self._recv(self._fd, try_first=self._drained is False)
                self._drained = len(data) < _RECEIVE_SIZE
                if not data:
                    raise SocketClosed(1006, "connection lost")
                self.on_activity()
                reader.receive_data(data)
            elif type(event) is Message:
                return event
            elif type(event) is Ping:
                if self._state == OPEN:
                    self._write(frame(PONG, event.payload))
                await self._wait_for_room()
            elif type(event) is Close:
                self._state = CLOSED if self._state == LOCAL_CLOSING else REMOTE_CLOSING
                raise SocketClosed(event.code, event.reason)

    async def _wait_for_room(self) -> None:
        """Replies to what we read (pongs) pile up unsent when a peer sends but
        never reads: stop reading until it catches up, so its pings cannot grow
        our memory past the backlog bound."""
        if len(self._backlog) > self._max_backlog:
            await self.flush()

    def write_frames(self, frames: list[bytes]) -> None:
        """Send text frames now, or leave them in the backlog; never waits."""
        self.write_encoded(self.encode_frames(frames))

    @staticmethod
    def encode_frames(frames: list[bytes]) -> bytes:
        """*frames* as server text frames on the wire (unmasked: a header, then the bytes)."""
        if len(frames) == 1:
            payload = frames[0]
            return frame_header(TEXT, len(payload)) + payload
        parts: list[bytes] = []
        for payload in frames:
            parts.append(frame_header(TEXT, len(payload)))
            parts.append(payload)
        return b"".join(parts)

    def write_encoded(self, data: bytes) -> None:
        """Send bytes from :meth:`encode_frames` now, or leave them in the backlog."""
        if self._state != OPEN:
            raise trio.ClosedResourceError("websocket is closing")
        self._write(data)

    async def flush(self) -> None:
        """Wait until the backlog is written (cancellable).

        One task writes; any other caller (a close racing the writer) waits
        for it instead of waiting on the socket a second time.
        """
        if self._flushing:
            if self._flushed is None:
                self._flushed = trio.lowlevel.ParkingLot()
            while self._backlog:
                await self._flushed.park()
            return
        self._flushing = True
        try:
            while self._backlog:
                await trio.lowlevel.wait_writable(self._fd)
                try:
                    written = os.write(self._fd, self._backlog)
                except BlockingIOError:
                    continue
                except OSError as error:
                    raise trio.BrokenResourceError(str(error)) from error
                del self._backlog[:written]
        finally:
            self._flushing = False
            if self._flushed is not None:
                self._flushed.unpark_all()

    async def send_frames(self, frames: list[bytes]) -> None:
        self.write_frames(frames)
        await self.flush()

    async def ping(self) -> bool:
        return self.ping_now()

    def ping_now(self) -> bool:
        if self._state != OPEN:
            return False
        self._write(_PING_FRAME)
        return True

    async def close(self, code: int, reason: str) -> None:
        self.start_close(code, reason)
        await self.flush()

    def start_close(self, code: int, reason: str) -> None:
        """The close frame, written now or left in the backlog (sent once)."""
        state = self._state
        if state == OPEN:
            self._state = LOCAL_CLOSING
            self._write(close_frame(code, reason))
        elif state == REMOTE_CLOSING:
            # Echo the peer's code, except the ones that must never be sent
            # (1005 "no status", 1006, 1015): answer those with 1000.
            self._state = CLOSED
            self._write(close_frame(1000 if code in _NOT_ON_THE_WIRE else code))

    async def abort(self) -> None:
        self._backlog.clear()
        self._state = CLOSED
        # Called once the connection's tasks have all ended (structured
        # concurrency guarantees it): nothing can be waiting on the socket.
        close_unwatched(self._socket)

    def _write(self, data: bytes) -> None:
        if self._backlog:
            self._backlog += data
            return
        try:
            written = os.write(self._fd, data)
        except BlockingIOError:
            written = 0
        except OSError as error:
            raise trio.BrokenResourceError(str(error)) from error
        if written < len(data):
            self._backlog += data[written:]
            self.on_backlog()
