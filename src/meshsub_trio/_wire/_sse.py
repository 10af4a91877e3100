"""Server-Sent Events on the wire, sans-IO: frames out, events in, no sockets.

Two machines with explicit states, as ``_protocol`` has for WebSockets:

* :class:`SseMachine` frames one graphql-sse (distinct connections mode)
  operation: ``next`` per result, ``complete`` once, ``:`` keep-alive comments.
  It has the frame methods the operation core calls on a protocol machine
  (``next``/``complete``/``error`` returning bytes, or None once the stream
  has ended), so an HTTP stream reuses the WebSocket operation unchanged.
* :class:`SseParser` reads a stream as the HTML living standard says
  (any line ending, split anywhere, comments, ``retry``, ``id``), for tests
  and clients: one parser, tested without a network.

It lives in ``_transports`` beside ``_frames`` (the WebSocket frame reader)
because it is the same kind of thing: a byte format of one transport.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from .._decimal import decimal
from .._encoding import dumps

EVENT_STREAM = "text/event-stream"
#: What a graphql-sse stream answers with (SSE-01), plus what stops proxies buffering.
STREAM_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", f"{EVENT_STREAM}; charset=utf-8"),
    ("cache-control", "no-cache, no-transform"),
    ("x-accel-buffering", "no"),
)
#: The first chunk (flushes the headers through proxies) and every keep-alive.
KEEPALIVE = b":\n\n"


def wants_event_stream(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for SSE (SSE-05: parameters, lists, any case)."""
    if not accept:
        return False
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() != EVENT_STREAM:
            continue
        return not any(p.replace(" ", "") in ("q=0", "q=0.0", "q=0.00") for p in params)
    return False


def encode_event(
    data: bytes,
    *,
    event: str | None = None,
    event_id: str | None = None,
    retry_ms: int | None = None,
) -> bytes:
    """One SSE message; *data* spanning lines becomes one ``data:`` line each."""
    for name, value in (("event", event), ("id", event_id)):
        if value is not None and ("\n" in value or "\r" in value or "\0" in value):
            raise ValueError(f"an SSE {name} cannot contain a line break or NUL")
    head = b""
    if retry_ms is not None:
        head += b"retry: %d\n" % retry_ms
    if event_id is not None:
        head += b"id: " + event_id.encode() + b"\n"
    if event is not None:
        head += b"event: " + event.encode() + b"\n"
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    body = b"".join(b"data: " + line + b"\n" if line else b"data:\n" for line in lines)
    return head + body + b"\n"


def comment(text: str = "") -> bytes:
    """A comment line (keep-alive): ignored by every client."""
    return b": " + text.encode() + b"\n\n" if text else KEEPALIVE


class StreamState(enum.Enum):
    STREAMING = "streaming"
    ENDED = "ended"


class SseMachine:
    """The frames of one distinct-connections graphql-sse operation.

    STREAMING: ``next`` frames and keep-alives. ``complete`` or ``error``
    moves to ENDED, after which every frame request answers None (the
    operation core ends streams concurrently with disconnects, so that is a
    race, not misuse). An ``error`` is ``next`` with the errors then
    ``complete`` (protocols §6: graceful, so clients do not retry in a loop).
    """

    __slots__ = ("state",)

    subprotocol = "sse"

    def __init__(self) -> None:
        self.state = StreamState.STREAMING

    @property
    def closed(self) -> bool:
        return self.state is StreamState.ENDED

    def start(self) -> bytes:
        """The first chunk: a comment, which flushes the headers through proxies."""
        return KEEPALIVE

    def next(self, _id: str, payload: bytes) -> bytes | None:
        if self.state is StreamState.ENDED:
            return None
        return b"event: next\ndata: " + payload + b"\n\n"

    def complete(self, _id: str) -> bytes | None:
        if self.state is StreamState.ENDED:
            return None
        self.state = StreamState.ENDED
        return b"event: complete\ndata:\n\n"

    def error(self, _id: str, errors: list[dict[str, Any]]) -> bytes | None:
        frame = self.next(_id, dumps({"errors": errors}))
        if frame is None:
            return None
        end = self.complete(_id)
        assert end is not None
        return frame + end

    def keepalive(self) -> bytes | None:
        return None if self.state is StreamState.ENDED else KEEPALIVE


class LocalProtocolError(Exception):
    """The driver used a machine out of order (a bug here, not the peer's)."""


class OpState(enum.Enum):
    LIVE = "live"
    CANCELLED = "cancelled"  # the client stopped it (DELETE): nothing more goes out
    FINISHED = "finished"  # complete or error went out


class SseSingleMachine:
    """The frames of a single-connection graphql-sse stream: many operations.

    Each event names its operation: ``next`` carries ``{"id", "payload"}``,
    ``complete`` carries ``{"id"}`` (SSE-24). An id moves ABSENT --open-->
    LIVE --complete/error--> FINISHED, or LIVE --stop--> CANCELLED, and
    --release--> ABSENT once its task is gone (then it may be reused).
    Frames for CANCELLED or FINISHED ids are None (a race with the client's
    DELETE or the stream closing); for an ABSENT id, or after :meth:`close`,
    the driver misused the machine and it raises.
    """

    __slots__ = ("_ops", "state")

    subprotocol = "sse"

    def __init__(self) -> None:
        self.state = StreamState.STREAMING
        self._ops: dict[str, OpState] = {}

    @property
    def closed(self) -> bool:
        return self.state is StreamState.ENDED

    def start(self) -> bytes:
        return KEEPALIVE

    def is_active(self, op_id: str) -> bool:
        """Whether *op_id* is taken (its task has not been released yet)."""
        return op_id in self._ops

    def open(self, op_id: str) -> None:
        if self.state is StreamState.ENDED:
            raise LocalProtocolError("the stream has ended")
        if op_id in self._ops:
            raise LocalProtocolError(f"operation {op_id!r} is still active")
        self._ops[op_id] = OpState.LIVE

    def stop(self, op_id: str) -> bool:
        """The client stopped *op_id*: True if it was live (its task must be cancelled)."""
        if self._ops.get(op_id) is not OpState.LIVE:
            return False
        self._ops[op_id] = OpState.CANCELLED
        return True

    def release(self, op_id: str) -> None:
        if self._ops.pop(op_id, None) is None:
            raise LocalProtocolError(f"operation {op_id!r} is not active")

    def close(self) -> None:
        """The stream ends: every live operation is cancelled with it."""
        self.state = StreamState.ENDED
        for op_id, op in self._ops.items():
            if op is OpState.LIVE:
                self._ops[op_id] = OpState.CANCELLED

    def _live(self, op_id: str) -> bool:
        op = self._ops.get(op_id)
        if op is None:
            raise LocalProtocolError(f"operation {op_id!r} was never opened")
        return op is OpState.LIVE

    def next(self, op_id: str, payload: bytes) -> bytes | None:
        if not self._live(op_id):
            return None
        return b'event: next\ndata: {"id":' + dumps(op_id) + b',"payload":' + payload + b"}\n\n"

    def complete(self, op_id: str) -> bytes | None:
        if not self._live(op_id):
            return None
        self._ops[op_id] = OpState.FINISHED
        return b'event: complete\ndata: {"id":' + dumps(op_id) + b"}\n\n"

    def error(self, op_id: str, errors: list[dict[str, Any]]) -> bytes | None:
        """``next`` with the errors, then ``complete`` (SSE-27), as in distinct mode."""
        frame = self.next(op_id, dumps({"errors": errors}))
        if frame is None:
            return None
        end = self.complete(op_id)
        assert end is not None
        return frame + end

    def keepalive(self) -> bytes | None:
        return None if self.state is StreamState.ENDED else KEEPALIVE


@dataclass(frozen=True, slots=True)
class SseEvent:
    """One dispatched message: ``event`` defaults to ``message``; ``id`` is the last id seen."""

    data: str
    event: str = "message"
    id: str | None = None


_BOM = b"\xef\xbb\xbf"


class _Line(enum.Enum):
    START = "start"  # nothing read yet: a BOM may come
    LINE = "line"  # inside a line
    AFTER_CR = "after_cr"  # a CR ended the last line; an LF next belongs to it


class SseParser:
    """Bytes in, :class:`SseEvent` out, however the stream was split."""

    def __init__(self) -> None:
        self._state = _Line.START
        self._head = b""
        self._line = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._has_data = False
        #: The last event id (kept across messages, as EventSource does).
        self.last_event_id: str | None = None
        #: The last ``retry`` value in milliseconds, if any.
        self.retry_ms: int | None = None
        #: Comment lines seen (keep-alives).
        self.comments = 0

    def receive_data(self, data: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        if self._state is _Line.START:
            # A byte-order mark may begin the stream, possibly split.
            self._head += data
            if len(self._head) < len(_BOM) and _BOM.startswith(self._head):
                return events
            head, self._head = self._head, b""
            data = head[len(_BOM) :] if head.startswith(_BOM) else head
            self._state = _Line.LINE
        for byte in data:
            if self._state is _Line.AFTER_CR:
                self._state = _Line.LINE
                if byte == 0x0A:
                    continue  # CRLF: the CR ended the line already
            if byte == 0x0A or byte == 0x0D:
                if byte == 0x0D:
                    self._state = _Line.AFTER_CR
                self._end_line(events)
            else:
                self._line.append(byte)
        return events

    def _end_line(self, events: list[SseEvent]) -> None:
        line = self._line.decode("utf-8", errors="replace")
        self._line.clear()
        if not line:
            if self._has_data:
                data = "\n".join(self._data)
                events.append(SseEvent(data, self._event or "message", self.last_event_id))
            self._data.clear()
            self._event = ""
            self._has_data = False
            return
        if line.startswith(":"):
            self.comments += 1
            return
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and (retry := decimal(value)) is not None:
            self.retry_ms = retry
