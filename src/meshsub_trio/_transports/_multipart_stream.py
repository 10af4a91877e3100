"""Apollo's multipart subscriptions over HTTP: the host side (protocols §7).

The request is decided by GraphQL over HTTP (:func:`answer_or_stream`):
whatever is not streamed is answered there, with the same statuses as any
GraphQL-over-HTTP request, because a multipart client (unlike EventSource)
reads error bodies. A subscription becomes an :class:`HttpStream` whose
machine is a :class:`MultipartMachine`: the same nursery, writer, write
deadline, disconnect watcher and exactly-once cleanup as SSE.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from .._app import Context
from .._wire._multipart import HEARTBEAT_INTERVAL, STREAM_HEADERS, MultipartMachine
from ._graphql_http import HttpResponse, answer_or_stream
from ._http_stream import HttpStream, Receive, Send

if TYPE_CHECKING:
    from .._core._state import ServerState

log = logging.getLogger("meshsub_trio.http_stream")

#: The ``protocol`` label of multipart operations on /metrics.
MULTIPART = "multipart"


#: The last part's error when the server shuts down mid-stream.
SHUTTING_DOWN = "Server shutting down"


class MultipartStream(HttpStream):
    """A multipart response that ends the way Apollo's clients expect, even on shutdown.

    Shutdown cancels the operation, which then sends nothing: left at that,
    the body would end on a bare delimiter, which a client takes for a lost
    connection. So the writer ends it with an error part (MP-05) and the
    close (MP-06), after whatever was queued. An operation that already
    completed or failed has closed the body; then nothing is added.
    """

    def _last_words(self) -> bytes | None:
        if self.end != "shutdown" or self.request is None:
            return None
        return self.machine.error(self.request.id, [{"message": SHUTTING_DOWN}])


def heartbeat_interval(keepalive: float) -> float:
    """Seconds between heartbeat parts: 5 s (Apollo Router's), or the server's
    ``keepalive`` when that is shorter; none when keep-alives are off."""
    return min(HEARTBEAT_INTERVAL, keepalive) if keepalive > 0 else 0.0


async def serve_multipart(
    state: ServerState,
    method: str,
    headers: dict[str, str],
    query_string: bytes,
    body: bytes,
    context: Context,
    receive: Receive,
    send: Send,
) -> None:
    """Stream a subscription as multipart parts, or answer the request as JSON."""
    try:
        answer = await answer_or_stream(state, method, headers, query_string, body, context)
    except Exception:
        log.exception("multipart request failed")
        answer = HttpResponse(
            500,
            b'{"errors":[{"message":"Internal server error"}]}',
            [("content-type", "application/json; charset=utf-8")],
        )
    if isinstance(answer, HttpResponse):
        raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        raw.append((b"content-length", str(len(answer.body)).encode()))
        await send({"type": "http.response.start", "status": answer.status, "headers": raw})
        await send({"type": "http.response.body", "body": answer.body})
        return
    stream = MultipartStream(
        state,
        context,
        answer,
        receive,
        send,
        machine=MultipartMachine(),
        headers=STREAM_HEADERS,
        protocol=MULTIPART,
        keepalive=heartbeat_interval(state.config.keepalive),
    )
    await stream.run()
