"""Apollo's multipart subscription format on the wire, sans-IO (protocols §7).

:class:`MultipartMachine` frames one operation's results as the parts of a
``multipart/mixed; boundary="graphql"`` body. It has the frame methods the
operation core calls on any sink's framer (``next``/``complete``/``error``,
bytes out, None once the body has ended), so an HTTP stream runs the same
:class:`~meshsub_trio._core._operation.Operation` over it as over SSE.

Layout (RFC 2046, CRLF line ends). Each part is written *with* the
delimiter that ends it, so a client can hand a part on as soon as it
arrives instead of waiting for the next one::

    \\r\\n--graphql                                    start()
    \\r\\ncontent-type: application/json\\r\\n\\r\\n{...}\\r\\n--graphql   each part
    --\\r\\n                                           complete(): the close delimiter

The CRLF after a delimiter line opens the next part, so ``complete`` only
has to turn the last delimiter into the closing one (``--graphql--``).
"""

from __future__ import annotations

import enum
from typing import Any

from .._encoding import dumps

BOUNDARY = "graphql"
#: What a multipart subscription response answers with (MP-02).
STREAM_HEADERS: tuple[tuple[str, str], ...] = (
    ("content-type", f'multipart/mixed; boundary="{BOUNDARY}"; subscriptionSpec="1.0"'),
    ("cache-control", "no-cache, no-transform"),
    ("x-accel-buffering", "no"),
)
#: How often a heartbeat part goes out when nothing else does (MP-03; Apollo Router's value).
#: The server's ``keepalive`` lowers it (tests use that); ``keepalive=0`` turns it off.
HEARTBEAT_INTERVAL = 5.0

_DELIMITER = b"\r\n--" + BOUNDARY.encode()
_PART_HEAD = b"\r\ncontent-type: application/json\r\n\r\n"
_HEARTBEAT = _PART_HEAD + b"{}" + _DELIMITER
_CLOSE = b"--\r\n"


class LocalProtocolError(Exception):
    """The driver used the machine out of order (a bug here, not the peer's)."""


def wants_multipart(accept: str | None) -> bool:
    """Whether ``Accept`` takes multipart subscriptions (MP-01).

    ``multipart/mixed`` with ``subscriptionSpec=1.0`` or ``"1.0"``, any
    spacing and case, anywhere in a list, unless its q-value is 0.
    """
    if not accept:
        return False
    for item in accept.split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() != "multipart/mixed":
            continue
        spec = False
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            name = name.strip().lower()
            value = value.strip().strip('"')
            if name == "subscriptionspec" and value == "1.0":
                spec = True
            elif name == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if spec and quality > 0:
            return True
    return False


class BodyState(enum.Enum):
    IDLE = "idle"  # nothing written yet
    OPEN = "open"  # the last thing written is a delimiter: a part or the close may follow
    CLOSED = "closed"  # the close delimiter (or the error part and it) went out


class MultipartMachine:
    """The parts of one operation's multipart response.

    IDLE --start()--> OPEN; OPEN --next/keepalive--> OPEN; OPEN
    --complete/error--> CLOSED. After CLOSED every frame request is None
    (an operation ends concurrently with disconnects: a race, not misuse).
    A part before ``start`` raises: the driver forgot the opening delimiter.
    """

    __slots__ = ("state",)

    subprotocol = "multipart"

    def __init__(self) -> None:
        self.state = BodyState.IDLE

    @property
    def closed(self) -> bool:
        return self.state is BodyState.CLOSED

    def start(self) -> bytes:
        """The first delimiter: written with the headers, it flushes them through proxies."""
        if self.state is not BodyState.IDLE:
            raise LocalProtocolError("the body has already started")
        self.state = BodyState.OPEN
        return _DELIMITER

    def _check(self) -> bool:
        if self.state is BodyState.IDLE:
            raise LocalProtocolError("start() the body before writing parts")
        return self.state is BodyState.OPEN

    def next(self, _id: str, payload: bytes) -> bytes | None:
        """An event: ``{"payload": <the execution result>}`` (MP-04)."""
        if not self._check():
            return None
        return _PART_HEAD + b'{"payload":' + payload + b"}" + _DELIMITER

    def keepalive(self) -> bytes | None:
        """A heartbeat part, ``{}`` (MP-03): clients skip it."""
        return _HEARTBEAT if self._check() else None

    def complete(self, _id: str) -> bytes | None:
        """The closing delimiter (MP-06): the client's sign that nothing was lost."""
        if not self._check():
            return None
        self.state = BodyState.CLOSED
        return _CLOSE

    def error(self, _id: str, errors: list[dict[str, Any]]) -> bytes | None:
        """The subscription cannot go on: a last part with top-level errors (MP-05),
        then the close."""
        if not self._check():
            return None
        self.state = BodyState.CLOSED
        body = dumps({"payload": None, "errors": errors})
        return _PART_HEAD + body + _DELIMITER + _CLOSE
