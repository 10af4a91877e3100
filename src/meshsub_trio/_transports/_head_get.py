"""``HEAD`` answered as ``GET`` would be, without the body (RFC 9110 §9.3.2).

The ASGI app routes a ``HEAD`` as a ``GET``: every GET route (health,
metrics, pages, GraphQL over GET, the app's own routes) answers it with the
same status and header fields, Content-Length included, and no handler has
to know HEAD exists (an app route sees ``GET``). What the route then sends as
its body is dropped here, so neither host ever writes one.

A streaming GET (graphql-sse, multipart, an :class:`~meshsub_trio.EventStream`
route) answers HEAD the same way: its response head (``200
text/event-stream``, or the refusal it would have sent instead), then the end
of the response. It is not refused with 405, because its head is exactly what
a client asks HEAD for (does the stream exist, is it allowed, what type is
it), and a refusal decided before streaming (401, 410 for an expired
``Last-Event-ID``) is only visible this way. The route is cancelled as soon as
its head is out: the operation or stream it began ends at once, as when a
GET's client leaves right after the head, and nothing keeps running for a
response that has ended.

Since every GET route answers HEAD, an ``Allow`` field naming GET names HEAD too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import trio

from ._asgi_ws import Receive, Send

Message = MutableMapping[str, Any]
Route = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


async def answer_head(
    route: Route, scope: MutableMapping[str, Any], receive: Receive, send: Send
) -> None:
    """Run *route* as for a GET; send its response head, then end the response and the route."""
    with trio.CancelScope() as answered:

        async def head_only(message: Message) -> None:
            if message["type"] != "http.response.start" or answered.cancel_called:
                return  # the body, or anything after the end
            await send(message)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            answered.cancel()  # a stream would go on: nothing of it is wanted

        await route({**scope, "method": "GET"}, receive, head_only)


def allowing_head(send: Send) -> Send:
    """*send*, with HEAD added after GET to a response's ``Allow`` that lacks it."""

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers", ())
            if any(name.lower() == b"allow" for name, _ in headers):
                message = {**message, "headers": [_with_head(name, v) for name, v in headers]}
        await send(message)

    return sending


def _with_head(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if name.lower() != b"allow":
        return (name, value)
    methods = [method.strip() for method in value.split(b",")]
    if b"GET" not in methods or b"HEAD" in methods:
        return (name, value)
    methods.insert(methods.index(b"GET") + 1, b"HEAD")
    return (name, b", ".join(methods))
