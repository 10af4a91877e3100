"""Where an HTTP request head ends, and whether it is too big (sans-IO).

Every request head the native host reads goes through a :class:`HeadReader`
before anything parses it: bytes in, and out either "need more" (None), the
complete head and the bytes after it, or a refusal. The head ends where h11
says it does (the first ``LF [CR] LF``), so the fast upgrade parser and h11
always agree on it. Its size is counted up to and including that blank line,
so a head is accepted or refused the same way however TCP split it: refused
as soon as the bytes read without a blank line reach the limit (the head can
only be longer), or when the blank line comes past it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: The end of a head: h11's own rule (bare LF line ends included).
_BLANK_LINE = re.compile(rb"\n\r?\n")
#: Header fields one request may carry (h11 caps bytes, not fields).
MAX_FIELDS = 100


class HeadError(Exception):
    """The head is refused: answer ``status`` (400 or 431) and close."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Head:
    """A complete request head (blank line included) and what came after it."""

    head: bytes
    rest: bytes


class HeadReader:
    """Accumulates one request head; ``receive_data`` says when it is complete."""

    __slots__ = ("_buffer", "_max_fields", "_max_size", "_searched")

    def __init__(self, max_size: int, max_fields: int = MAX_FIELDS) -> None:
        self._max_size = max_size
        self._max_fields = max_fields
        self._buffer: bytes | bytearray = b""
        #: Where the next search for the blank line starts (bytes before it hold none).
        self._searched = 0

    @property
    def started(self) -> bool:
        """Whether any byte of the head has arrived (a timeout then deserves a 408)."""
        return bool(self._buffer)

    def receive_data(self, data: bytes) -> Head | None:
        """Add *data*: the head once complete, None while more is needed.

        Raises :class:`HeadError` for a head over the size or field limit, or
        one that cannot be a request (it starts with a control byte or space:
        TLS on the plain port, say), which h11 would refuse anyway.
        """
        buffer = self._buffer
        if not buffer:
            buffer = data  # the usual case: the whole head in one read, no copy
        elif isinstance(buffer, bytearray):
            buffer += data  # in place: a head trickling in is not rebuilt per read
        else:
            buffer = bytearray(buffer) + data
        self._buffer = buffer
        if not buffer:
            return None
        if buffer[0] < 0x21:
            raise HeadError(400, "Invalid request line")
        found = _BLANK_LINE.search(buffer, self._searched)
        if found is None:
            if len(buffer) >= self._max_size:
                # No blank line yet: the head is at least one byte longer.
                raise HeadError(431, "Request head too large")
            # A blank line is at most 3 bytes: it may begin in the last two.
            self._searched = max(0, len(buffer) - 2)
            return None
        end = found.end()
        if end > self._max_size:
            raise HeadError(431, "Request head too large")
        head = bytes(buffer[:end])
        # Lines: the request line, one per field, the blank line.
        if head.count(b"\n") - 2 > self._max_fields:
            raise HeadError(431, "Too many header fields")
        self._buffer, self._searched = b"", 0
        return Head(head, bytes(buffer[end:]))
