"""Client frames in (RFC 6455 §5), sans-IO: bytes in, messages and control frames out.

The server side only, which is what makes it small: every client frame must
be masked, no extension is ever negotiated (so a set RSV bit is an error),
and a message over the size limit is refused from its frame header, before
its payload is buffered. Protocol errors raise :class:`FrameError` with the
close code RFC 6455 §7.4.1 names for them (1002, or 1007 for bad UTF-8); the
caller sends that close. Written here rather than taken from wsproto because
a connection's whole life is a handful of small frames, and this parser is a
fraction of the per-connection cost (see ``scripts/bench``, P4).
"""

from __future__ import annotations

from .._transports._socket import Message, MessageTooBig

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA

#: Close codes a peer may send (RFC 6455 §7.4; 1004-1006 and 1015 never go on the wire).
_SENDABLE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015)})


class FrameError(Exception):
    """The peer broke the framing protocol; close the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class Ping:
    """A ping frame: answer it with a pong carrying the same payload."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Pong:
    """A pong frame: proof of life, nothing to answer."""

    __slots__ = ("payload",)

    def __init__(self, payload: bytes) -> None:
        self.payload = payload


class Close:
    """The peer's close frame (code 1005 when it carried no code)."""

    __slots__ = ("code", "reason")

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


FrameEvent = Message | Ping | Pong | Close


class FrameReader:
    """Turns the bytes a client sends into whole messages and control frames.

    ``receive_data`` adds bytes; ``next_event`` returns the next event, or
    None when more bytes are needed. After a :class:`Close` it returns None
    for good: nothing a peer sends after its close frame means anything.
    """

    __slots__ = ("_buffer", "_closed", "_max_size", "_opcode", "_parts", "_pos", "_size")

    def __init__(self, max_message_size: int) -> None:
        self._max_size = max_message_size
        self._buffer: bytes | bytearray = b""
        self._pos = 0
        #: The opcode of the fragmented message in progress (None: none is).
        self._opcode: int | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._closed = False

    def receive_data(self, data: bytes) -> None:
        buffer, pos = self._buffer, self._pos
        if pos >= len(buffer):
            self._buffer, self._pos = data, 0
        elif isinstance(buffer, bytearray):
            # A frame is still arriving: append in place (large frames come in
            # many reads; rebuilding the buffer each time would be quadratic).
            del buffer[:pos]
            buffer += data
            self._pos = 0
        else:
            self._buffer, self._pos = bytearray(buffer[pos:]) + data, 0

    def next_event(self) -> FrameEvent | None:
        while not self._closed:
            frame = self._next_frame()
            if frame is None:
                return None
            opcode, final, payload = frame
            if opcode >= CLOSE:
                return self._control(opcode, payload)
            message = self._data(opcode, final, payload)
            if message is not None:
                return message
        return None

    def _next_frame(self) -> tuple[int, bool, bytes] | None:
        """One whole, unmasked frame from the buffer, checked; None if incomplete."""
        buffer, pos = self._buffer, self._pos
        available = len(buffer) - pos
        if available < 2:
            return None
        first, second = buffer[pos], buffer[pos + 1]
        if first & 0x70:
            raise FrameError(1002, "Reserved bits set without an extension")
        if not second & 0x80:
            raise FrameError(1002, "Client frames must be masked")
        opcode = first & 0x0F
        length = second & 0x7F
        start = pos + 6
        if length == 126:
            if available < 8:
                return None
            length = int.from_bytes(buffer[pos + 2 : pos + 4], "big")
            start = pos + 8
        elif length == 127:
            if available < 14:
                return None
            length = int.from_bytes(buffer[pos + 2 : pos + 10], "big")
            if length >> 63:
                raise FrameError(1002, "Frame length uses the most significant bit")
            start = pos + 14
        final = bool(first & 0x80)
        self._check_header(opcode, final, length)
        end = start + length
        if end > len(buffer):
            return None
        self._pos = end
        return opcode, final, _unmask(buffer[start:end], buffer[start - 4 : start])

    def _check_header(self, opcode: int, final: bool, length: int) -> None:
        """Everything a header alone can break, raised before its payload is awaited."""
        if opcode >= CLOSE:
            if opcode > PONG:
                raise FrameError(1002, f"Unknown control opcode {opcode:#x}")
            if not final:
                raise FrameError(1002, "Fragmented control frame")
            if length > 125:
                raise FrameError(1002, "Control frame payload over 125 bytes")
            return
        if opcode > BINARY:
            raise FrameError(1002, f"Unknown data opcode {opcode:#x}")
        if opcode == CONTINUATION:
            if self._opcode is None:
                raise FrameError(1002, "Continuation frame without a message to continue")
        elif self._opcode is not None:
            raise FrameError(1002, "New message before the fragmented one finished")
        if self._size + length > self._max_size:
            raise MessageTooBig()

    def _data(self, opcode: int, final: bool, payload: bytes) -> Message | None:
        """A data frame; the message once its last fragment is in."""
        if final and opcode != CONTINUATION:  # unfragmented: the common case
            return _message(opcode, payload)
        if opcode != CONTINUATION:  # the first fragment
            self._opcode = opcode
        self._parts.append(payload)
        self._size += len(payload)
        if final:
            kind, parts = self._opcode, self._parts
            self._opcode, self._parts, self._size = None, [], 0
            assert kind is not None
            return _message(kind, b"".join(parts))
        return None

    def _control(self, opcode: int, payload: bytes) -> FrameEvent:
        if opcode == PING:
            return Ping(payload)
        if opcode == PONG:
            return Pong(payload)
        self._closed = True
        if not payload:
            return Close(1005, "")
        if len(payload) == 1:
            raise FrameError(1002, "Close frame with a one-byte payload")
        code = int.from_bytes(payload[:2], "big")
        if code not in _SENDABLE_CODES and not 3000 <= code <= 4999:
            raise FrameError(1002, f"Invalid close code {code}")
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise FrameError(1007, "Close reason is not UTF-8") from None
        return Close(code, reason)


def _message(opcode: int, payload: bytes) -> Message:
    if opcode == BINARY:
        return Message(payload, binary=True)
    try:
        return Message(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise FrameError(1007, "Text message is not UTF-8") from None


def _unmask(payload: bytes | bytearray, key: bytes | bytearray) -> bytes:
    """XOR with the 4-byte key, as one big-integer operation (fast in CPython)."""
    length = len(payload)
    if not length:
        return b""
    mask = (bytes(key) * ((length >> 2) + 1))[:length]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(mask, "little")).to_bytes(
        length, "little"
    )


def frame_header(opcode: int, length: int) -> bytes:
    """The header of one unmasked, final server frame (its payload follows as is)."""
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return bytes((0x80 | opcode, 126)) + length.to_bytes(2, "big")
    return bytes((0x80 | opcode, 127)) + length.to_bytes(8, "big")


def frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked, final server frame."""
    return frame_header(opcode, len(payload)) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; the reason is cut to fit a control frame's 125 bytes."""
    encoded = reason.encode("utf-8")
    if len(encoded) > 123:
        encoded = encoded[:123].decode("utf-8", "ignore").encode("utf-8")
    body = code.to_bytes(2, "big") + encoded
    return frame(CLOSE, body)
