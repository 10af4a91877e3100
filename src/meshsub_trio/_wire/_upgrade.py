"""The WebSocket upgrade request, read without a general HTTP parser (sans-IO).

A WebSocket client opens with one well-formed ``GET`` head and no body. This
module parses exactly that case (RFC 9112 request line and fields, RFC 6455
§4.2.1) and declines anything else: other methods, bodies, absolute targets,
obsolete line folding, bare LF line ends, a repeated ``Host``. Declined heads
go to h11 unchanged, which answers them as it answers every HTTP request, so
this fast path never has to be a complete HTTP parser to be a correct one
(an upgrade h11 finds a body in is refused there, 400: see ``_native``).
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from http import HTTPStatus

_REQUEST_LINE = re.compile(rb"GET (/[!-~]*) HTTP/1\.1\Z")
#: Every ``field-name ":" field-value CRLF`` line at once (one pass in C); values
#: carry no control characters but HTAB, so no bare CR or LF either.
_FIELDS = re.compile(rb"(?:[!#$%&'*+\-.^_`|~0-9A-Za-z]+:[^\x00-\x08\x0a-\x1f\x7f]*\r\n)*")
#: Fields that mean a body follows, or that h11 must judge when repeated.
_DECLINE = frozenset({"content-length", "transfer-encoding"})
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

HEAD_END = b"\r\n\r\n"


@dataclass(frozen=True, slots=True)
class UpgradeRequest:
    """A WebSocket upgrade's request target and fields (names lower-cased)."""

    target: str
    headers: dict[str, str]


def parse_upgrade(head: bytes) -> UpgradeRequest | None:
    """The upgrade in *head* (up to, not including, the blank line); None to decline."""
    first, _, fields = head.partition(b"\r\n")
    request_line = _REQUEST_LINE.match(first)
    if request_line is None or _FIELDS.fullmatch(fields + b"\r\n") is None:
        return None
    headers: dict[str, str] = {}
    for line in fields.split(b"\r\n"):
        raw_name, _, raw_value = line.partition(b":")
        name = raw_name.decode("ascii").lower()
        value = raw_value.strip(b" \t").decode("latin-1")
        if name in headers:
            if name == "host":
                return None
            headers[name] = f"{headers[name]}, {value}"
        else:
            headers[name] = value
    if (
        "host" not in headers
        or "websocket" not in headers.get("upgrade", "").lower()
        or not _DECLINE.isdisjoint(headers)
    ):
        return None
    return UpgradeRequest(request_line[1].decode("ascii"), headers)


def accept_token(key: str) -> bytes:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode("latin-1") + _GUID).digest())


def switching_protocols(key: str, subprotocol: str | None) -> bytes:
    """The 101 response completing an upgrade."""
    lines = [
        b"HTTP/1.1 101 Switching Protocols",
        b"upgrade: websocket",
        b"connection: Upgrade",
        b"sec-websocket-accept: " + accept_token(key),
    ]
    if subprotocol is not None:
        lines.append(b"sec-websocket-protocol: " + subprotocol.encode("latin-1"))
    return b"\r\n".join(lines) + HEAD_END


def refusal(status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> bytes:
    """A complete plain-text error response that closes the connection."""
    body = message.encode("utf-8")
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\n"
        f"{extra}connection: close\r\n\r\n"
    ).encode("latin-1") + body


def valid_key(key: str) -> bool:
    """Whether *key* is a ``Sec-WebSocket-Key``: 16 bytes in base64 (RFC 6455 §4.1)."""
    if len(key) != 24:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False
