"""Chunk sizes as they arrive: refuse a chunked body over its limit at once (sans-IO).

h11 parses the chunked framing but keeps each declared chunk size to itself:
a chunk declared far over the body limit (``200000`` is 2 MiB) shows only
as data that never comes, so the request waited for the body timeout (408)
where a ``Content-Length`` as large gets 413 at once. :class:`ChunkMeter`
follows the same framing over the same bytes, before h11 reads them, and
raises :class:`ChunkRefused` as soon as a chunk-size line would take the
body over the limit (413), even before that line ends: digits only add to
a size. A size with more hex digits than h11 takes (20) is refused as
malformed (400) at the 21st digit, so a line of a million zeros costs one
regex match, not a wait for the rest.

It only ever refuses: h11 still frames the body, and judges everything else
(extensions, the CRLF after each chunk, trailers). The meter follows h11's
own rules where the two could part (a line ends at CRLF only; a chunk's
data is followed by exactly two bytes), so it never sees a different body.
"""

from __future__ import annotations

import re

#: The chunk-size digits h11 accepts at most (``chunk_size`` in ``h11._abnf``).
MAX_SIZE_DIGITS = 20
_HEX = re.compile(rb"[0-9A-Fa-f]*")


class ChunkRefused(Exception):
    """A chunked body refused from its chunk-size line: 413 too large, 400 malformed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


class ChunkMeter:
    """A chunked body's framing, followed only as far as its declared sizes."""

    __slots__ = ("_cr", "_digits", "_in_size", "_skip", "_state", "_value", "declared", "limit")

    def __init__(self, limit: int) -> None:
        #: Bytes of body the request may carry.
        self.limit = limit
        #: Bytes declared by the chunks whose size lines ended.
        self.declared = 0
        self._state = "line"  # "line" (a chunk-size line), "data", or "done" (the trailer)
        self._in_size = True  # still reading the line's size digits
        self._value = 0
        self._digits = 0
        self._cr = False  # the line's last byte so far was CR
        self._skip = 0  # bytes of chunk data plus its CRLF still to pass over

    def feed(self, data: bytes) -> None:
        """Follow *data*, the next bytes of the body; raises :class:`ChunkRefused`."""
        at, end = 0, len(data)
        while at < end and self._state != "done":
            if self._state == "data":
                step = min(self._skip, end - at)
                at += step
                self._skip -= step
                if not self._skip:
                    self._state = "line"
                continue
            at = self._line(data, at, end)

    def _line(self, data: bytes, at: int, end: int) -> int:
        """Read a chunk-size line from *at*; where the data after it begins (or *end*)."""
        if self._cr and data[at] == 0x0A:  # a CRLF split between two reads
            return self._line_ended(at + 1)
        if self._in_size:
            digits = _HEX.match(data, at, end)
            assert digits is not None  # ``*`` always matches
            run = digits.end() - at
            if run:
                self._digits += run
                if self._digits > MAX_SIZE_DIGITS:
                    raise ChunkRefused(400, "Malformed chunked request body")
                self._value = (self._value << (4 * run)) | int(data[at : at + run], 16)
                self._check(self._value)
                at += run
            if at < end:
                self._in_size = False  # an extension, whitespace or the line's end
        crlf = data.find(b"\r\n", at, end)
        if crlf >= 0:
            return self._line_ended(crlf + 2)
        self._cr = at < end and data[end - 1] == 0x0D
        return end

    def _line_ended(self, at: int) -> int:
        size = self._value
        self._cr, self._in_size, self._value, self._digits = False, True, 0, 0
        if size == 0:
            self._state = "done"  # the last chunk: trailers follow, h11 reads them
            return at
        self.declared += size
        self._skip = size + 2  # the data, then its CRLF
        self._state = "data"
        return at

    def _check(self, size: int) -> None:
        if self.declared + size > self.limit:
            raise ChunkRefused(413, "Body too large")
