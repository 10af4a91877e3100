"""A WebSocket on a Trio stream, framed by wsproto: every wait is cancellable.

Inbound frames go through wsproto. Outbound text frames are framed here:
server frames are unmasked, so one header plus the payload is the whole frame.

Writes go straight to the non-blocking socket (``os.write``), synchronously,
from whichever task has the frames: the kernel usually takes them at once, so
a fan-out costs one system call per socket and no scheduler pass. What the
kernel does not take stays in :attr:`backlog`, in order, and the connection's
writer task flushes it (``flush`` waits for writability, cancellably, under the
write deadline). Every later write appends behind the backlog, so frames never
reorder and never interleave.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import trio
from wsproto import ConnectionState
from wsproto.connection import Connection as WSFrames
from wsproto.events import BytesMessage, CloseConnection, Ping, TextMessage
from wsproto.events import Event as WSEvent

from ._socket import Message, MessageTooBig, SocketClosed

_RECEIVE_SIZE = 65536
_NOT_ON_THE_WIRE = frozenset({1005, 1006, 1015})


def text_frame_header(length: int) -> bytes:
    """The RFC 6455 header of one unmasked, final text frame."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return b"\x81\x7e" + length.to_bytes(2, "big")
    return b"\x81\x7f" + length.to_bytes(8, "big")


class NativeWebSocket:
    """The :class:`MessageSocket` of the native host."""

    __slots__ = (
        "_backlog",
        "_events",
        "_fd",
        "_flushed",
        "_flushing",
        "_max_backlog",
        "_max_size",
        "_parts",
        "_size",
        "_stream",
        "_ws",
        "on_activity",
        "on_backlog",
    )

    def __init__(
        self,
        stream: trio.SocketStream,
        ws: WSFrames,
        *,
        max_message_size: int,
        max_backlog: int = 256 * 1024,
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._max_size = max_message_size
        self._max_backlog = max_backlog
        self._fd = stream.socket.fileno()
        self._backlog = bytearray()
        self._flushing = False
        self._flushed: trio.lowlevel.ParkingLot | None = None  # made when a second flusher waits
        self._events: Iterator[WSEvent] = ws.events()  # bytes read past the handshake
        self._parts: list[str | bytes] = []
        self._size = 0
        self.on_activity: Callable[[], None] = lambda: None
        #: Called when bytes are left for the writer task to flush.
        self.on_backlog: Callable[[], None] = lambda: None

    @property
    def backlog(self) -> int:
        """Bytes accepted but not yet taken by the kernel."""
        return len(self._backlog)

    async def receive(self) -> Message:
        while True:
            for event in self._events:
                message = await self._on_event(event)
                if message is not None:
                    return message
            await self._wait_for_room()
            try:
                data = await self._stream.receive_some(_RECEIVE_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                raise SocketClosed(1006, "connection lost")
            self.on_activity()
            self._ws.receive_data(data)
            self._events = self._ws.events()

    async def _on_event(self, event: WSEvent) -> Message | None:
        if isinstance(event, TextMessage | BytesMessage):
            data = event.data
            self._size += len(data.encode()) if isinstance(data, str) else len(data)
            if self._size > self._max_size:
                raise MessageTooBig()
            self._parts.append(data)
            if not event.message_finished:
                return None
            parts, self._parts, self._size = self._parts, [], 0
            if isinstance(event, TextMessage):
                return Message("".join(parts))  # type: ignore[arg-type]
            return Message(b"".join(parts), binary=True)  # type: ignore[arg-type]
        if isinstance(event, Ping):
            self._write(self._ws.send(event.response()))
            await self._wait_for_room()
        elif isinstance(event, CloseConnection):
            raise SocketClosed(event.code, event.reason or "")
        return None

    async def _wait_for_room(self) -> None:
        """Replies to what we read (pongs) pile up unsent when a peer sends but
        never reads: stop reading until it catches up, so its pings cannot grow
        our memory past the backlog bound."""
        if len(self._backlog) > self._max_backlog:
            await self.flush()

    def write_frames(self, frames: list[bytes]) -> None:
        """Send text frames now, or leave them in the backlog; never waits."""
        if self._ws.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("websocket is closing")
        if len(frames) == 1:
            frame = frames[0]
            self._write(text_frame_header(len(frame)) + frame)
            return
        parts: list[bytes] = []
        for frame in frames:
            parts.append(text_frame_header(len(frame)))
            parts.append(frame)
        self._write(b"".join(parts))

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
        if self._ws.state is not ConnectionState.OPEN:
            return False
        self._write(self._ws.send(Ping(b"meshsub")))
        return True

    async def close(self, code: int, reason: str) -> None:
        state = self._ws.state
        if state is ConnectionState.OPEN:
            self._write(self._ws.send(CloseConnection(code=code, reason=reason or None)))
        elif state is ConnectionState.REMOTE_CLOSING:
            # Echo the peer's code, except the ones that must never be sent
            # (1005 "no status", 1006, 1015): answer those with 1000.
            reply = 1000 if code in _NOT_ON_THE_WIRE else code
            self._write(self._ws.send(CloseConnection(code=reply)))
        await self.flush()

    async def abort(self) -> None:
        self._backlog.clear()
        await trio.aclose_forcefully(self._stream)

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
