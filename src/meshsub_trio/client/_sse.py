"""The SSE link: graphql-sse's distinct connections mode over httpx, one HTTP stream per operation.

Where a WebSocket cannot go (a proxy strips ``Upgrade``, an edge refuses
it), each operation is its own ``POST`` with ``Accept: text/event-stream``;
``event: next`` payloads reach the session exactly as WebSocket ``next``
payloads do, ``event: complete`` ends the operation. One link is one
nursery holding one task per stream, so the session above the seam
(reconnecting, failing over, resuming cursors) is the same for every wire:

* A stream that breaks (reset, EOF before ``complete``, a non-200 answer)
  ends the whole link; the session then resubscribes every operation on the
  next link, cursor streams with ``extensions.cursor`` of the last payload
  they delivered.
* A request-level error (``next`` carrying ``errors`` and no ``data``, as
  graphql-sse streams it) is the operation's ``error``: the same
  :class:`OperationError`/:class:`CursorLost` as on WebSocket.
* Heartbeat: the server writes a ``:`` comment every ``keepalive`` seconds,
  so a stream that delivers no bytes at all for ``ping_interval +
  pong_timeout`` (a partition, or a proxy that buffers responses) is dead
  and the link is aborted. The server's keep-alive must be shorter than
  that bound (meshsub-trio's default 12 s is, against 10 s + 5 s). A stream
  whose 200 head arrived but not one body byte (not even the ``:`` the
  server writes at once) is held by a buffering proxy: :attr:`SseLink.held_by_proxy`
  tells ``auto`` to climb down to long-poll rather than retry SSE.
* There is no handshake: the link is ready at once, and what cannot be
  reached shows when the first stream fails.
* ``complete`` (leaving ``subscribe``'s block) closes that stream's
  connection; the server sees the disconnect and runs the operation's cleanup.

The event-stream bytes are parsed by the server's own sans-IO
:class:`~meshsub_trio._wire._sse.SseParser`.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio

from .._wire._sse import EVENT_STREAM, SseParser
from ._closecodes import ABNORMAL, BAD_RESPONSE
from ._transport import Disconnect, LinkHandler, LinkSettings

if TYPE_CHECKING:
    import httpx

#: What the ``subprotocol`` of an SSE link reads.
SSE = "sse"
_SCHEMES = {"ws": "http", "wss": "https", "http": "http", "https": "https"}


def http_url(url: str) -> str:
    """*url* with a ws(s) scheme turned into http(s); other schemes are refused."""
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None or not parts.hostname:
        raise ValueError(f"not a ws://, wss://, http:// or https:// URL: {url!r}")
    return urlunsplit((scheme, parts.netloc, parts.path or "/", parts.query, ""))


def _import_httpx() -> Any:
    try:
        import httpx
    except ImportError as error:
        raise ImportError(
            "the SSE transport needs httpx: pip install 'meshsub-trio[client]'"
        ) from error
    return httpx


def is_request_error(payload: dict[str, Any]) -> bool:
    """A ``next`` payload that is really the operation's ``error`` (no ``data`` key at all:
    the request never executed), as graphql-sse streams request-level errors."""
    return "data" not in payload and isinstance(payload.get("errors"), list)


class SseTransport:
    """Links of one HTTP stream per operation (graphql-sse distinct connections mode)."""

    def __init__(self) -> None:
        _import_httpx()

    def open_link(self, url: str, settings: LinkSettings, handler: LinkHandler) -> SseLink:
        return SseLink(url, settings, handler)


class SseLink:
    """One attempt at one URL over SSE; see the module docstring."""

    def __init__(self, url: str, settings: LinkSettings, handler: LinkHandler) -> None:
        self.url = url
        self.ready = trio.Event()
        self.subprotocol: str | None = SSE
        self._http_url = http_url(url)
        self._settings = settings
        self._handler = handler
        self._nursery: trio.Nursery | None = None
        self._http: httpx.AsyncClient | None = None
        self._streams: dict[str, trio.CancelScope] = {}
        self._abort_scope = trio.CancelScope()
        self._ending: Disconnect | None = None
        self._closing = False
        self._started_at: float | None = None
        #: Whether any stream was answered 200 (the server is there).
        self._answered = False
        #: A stream's head arrived and then no byte of its body within the bound.
        self.held_by_proxy = False

    # ---- what the session calls ----------------------------------------
    def subscribe(self, op_id: str, payload: dict[str, Any]) -> None:
        if self._nursery is None or not self.ready.is_set():
            raise RuntimeError("operations start once the link is ready")
        scope = trio.CancelScope()
        self._streams[op_id] = scope
        self._nursery.start_soon(self._stream, op_id, payload, scope)

    def complete(self, op_id: str) -> None:
        """Close that operation's HTTP stream (the server's cleanup runs)."""
        scope = self._streams.pop(op_id, None)
        if scope is not None:
            scope.cancel()

    def close(self) -> None:
        """End every stream now; ``run`` returns a by-client 1000."""
        if self._closing:
            return
        self._closing = True
        self._abort(self._disconnect(1000, "closed by the client"))

    async def run(self) -> Disconnect:
        httpx = _import_httpx()
        settings = self._settings
        timeout = httpx.Timeout(
            connect=settings.connect_timeout, read=None, write=settings.connect_timeout, pool=None
        )
        verify: Any = settings.ssl_context if settings.ssl_context is not None else True
        with self._abort_scope:
            async with (
                httpx.AsyncClient(timeout=timeout, verify=verify) as http,
                trio.open_nursery() as nursery,
            ):
                self._http = http
                self._nursery = nursery
                self._started_at = trio.current_time()
                self.ready.set()
                await trio.sleep_forever()
        self._nursery = None
        assert self._ending is not None  # only _abort cancels the scope
        return self._ending

    # ---- internals -----------------------------------------------------
    def _abort(self, ending: Disconnect) -> None:
        if self._ending is None:
            self._ending = ending
        self._abort_scope.cancel()

    def _disconnect(self, code: int | None, reason: str = "", **extra: Any) -> Disconnect:
        began = self._started_at
        lived = 0.0 if began is None or not self._answered else trio.current_time() - began
        return Disconnect(
            self.url,
            code=code,
            reason=reason,
            acknowledged=self._answered,
            by_client=self._closing,
            lived=lived,
            **extra,
        )

    def _headers(self) -> dict[str, str]:
        headers = dict(self._settings.headers)
        headers["accept"] = EVENT_STREAM
        headers["accept-encoding"] = "identity"  # raw bytes: every ':' counts as life
        return headers

    async def _stream(self, op_id: str, payload: dict[str, Any], scope: trio.CancelScope) -> None:
        """One operation's HTTP stream; any failure ends the link (the session resumes)."""
        httpx = _import_httpx()
        settings = self._settings
        bound = settings.ping_interval + settings.pong_timeout
        # Silence is measured from the request on: no bytes, not even a ':' comment.
        silence = trio.CancelScope(
            deadline=trio.current_time() + bound if settings.ping_interval > 0 else math.inf
        )
        assert self._http is not None  # set before ready
        heard = _Heard()
        with scope:
            try:
                with silence:
                    async with self._http.stream(
                        "POST", self._http_url, json=payload, headers=self._headers()
                    ) as response:
                        ending = await self._read(op_id, response, silence, bound, heard)
                        if ending is None:
                            return  # completed (or a request-level error): the link lives on
                        self._abort(ending)
                        return
            except httpx.TransportError as error:
                cause = f"{type(error).__name__}: {error}".rstrip(": ")
                if self._answered:
                    self._abort(self._disconnect(ABNORMAL, "stream broken", cause=cause))
                else:
                    self._abort(self._disconnect(None, cause=cause))
                return
            finally:
                if self._streams.get(op_id) is scope:
                    del self._streams[op_id]
            if silence.cancelled_caught:
                if heard.head and not heard.body:
                    self.held_by_proxy = True
                self._abort(self._disconnect(ABNORMAL, f"nothing heard within {bound:g} s"))

    async def _read(
        self,
        op_id: str,
        response: httpx.Response,
        silence: trio.CancelScope,
        bound: float,
        heard: _Heard,
    ) -> Disconnect | None:
        """Deliver the stream's events; None once it completed, else why it broke."""
        if response.status_code != 200:
            body = (await response.aread())[:200].decode("utf-8", "replace").strip()
            return self._disconnect(None, body, status=response.status_code)
        media = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media != EVENT_STREAM:
            return self._disconnect(BAD_RESPONSE, f"answered {media or 'no content-type'}, not SSE")
        self._answered = True
        heard.head = True
        handler = self._handler
        parser = SseParser()
        async for chunk in response.aiter_raw():
            heard.body = True
            if silence.deadline != math.inf:
                silence.deadline = trio.current_time() + bound
            for event in parser.receive_data(chunk):
                if event.event == "complete":
                    handler.on_complete(op_id)
                    return None
                if event.event != "next":
                    continue  # graphql-sse sends nothing else; ignore what we do not know
                try:
                    data = json.loads(event.data)
                except ValueError:
                    return self._disconnect(BAD_RESPONSE, "a next event that is not JSON")
                if not isinstance(data, dict):
                    return self._disconnect(BAD_RESPONSE, "a next event that is not an object")
                if is_request_error(data):
                    handler.on_error(op_id, data["errors"])
                    return None  # the complete that follows is moot
                handler.on_next(op_id, data)
        return self._disconnect(ABNORMAL, "the stream ended without complete")


class _Heard:
    """What one stream has heard so far: its head, and any byte of its body."""

    __slots__ = ("body", "head")

    def __init__(self) -> None:
        self.head = False
        self.body = False
