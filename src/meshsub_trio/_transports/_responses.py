"""A whole HTTP response in two ASGI messages: the head (with its length), then the body.

Every route that answers at once (refusals, JSON errors, tokens, pages) sends
its answer this way, on both hosts; streams have their own driver.
"""

from __future__ import annotations

from collections.abc import Sequence

from .._encoding import dumps
from ._asgi_ws import Send

#: The content type of every JSON answer.
JSON = "application/json; charset=utf-8"


async def send_whole(
    send: Send,
    status: int,
    body: bytes,
    content_type: str | None,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> None:
    """*body* with *status*: *extra_headers*, then its type and length."""
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra_headers]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode("latin-1")))
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(message: str) -> bytes:
    """``{"errors": [{"message": ...}]}``, as GraphQL over HTTP answers a refusal."""
    return dumps({"errors": [{"message": message}]})
