"""The long-poll link: the bottom rung, for paths where even an event stream is held back.

Each operation is a loop of ``POST`` requests with ``Accept:
application/x-meshsub-poll+json`` and ``?wait=poll_wait``: the server runs
the operation for one request and answers ``{"payloads", "complete",
"seen"}`` as soon as something is ready. Between polls the link itself
resumes: the next request carries ``extensions.cursor`` of the last payload
that had one (nothing lost or repeated on cursor streams) and
``extensions.seen`` (an unchanged state snapshot is not answered again, so a
state stream waits for a change instead of spinning). A cursor-less event
stream may miss what happens between two polls; that is the rung's price.

Everything else is the SSE link's (:class:`~._sse.SseLink`): one nursery per
link, one task per operation, a failure ends the link and the session
resumes every operation on the next one. The heartbeat is the answer itself:
a poll not answered within ``poll_wait + ping_interval + pong_timeout`` is
dead. Under ``auto`` a poll link ends itself (``by_client``: no backoff, no
"lost" notice) once ``websocket_retry_after`` has passed, so the ladder tries
WebSocket again; between two polls that costs nothing.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import trio

from ._closecodes import ABNORMAL, BAD_RESPONSE
from ._operations import cursor_of
from ._sse import SseLink, _import_httpx, is_request_error
from ._transport import Disconnect, LinkHandler, LinkSettings

if TYPE_CHECKING:
    import httpx

#: What the ``subprotocol`` of a poll link reads.
POLL = "poll"
#: The media type the server answers a long-poll for (see docs/long-poll.md).
POLL_MEDIA_TYPE = "application/x-meshsub-poll+json"


class PollTransport:
    """Links of long-poll loops, one per operation."""

    def __init__(self) -> None:
        _import_httpx()

    def open_link(self, url: str, settings: LinkSettings, handler: LinkHandler) -> PollLink:
        return PollLink(url, settings, handler)


class PollLink(SseLink):
    """One attempt at one URL over long-poll; see the module docstring."""

    def __init__(
        self,
        url: str,
        settings: LinkSettings,
        handler: LinkHandler,
        *,
        climb_after: float | None = None,
    ) -> None:
        super().__init__(url, settings, handler)
        self.subprotocol = POLL
        #: Seconds after which the link ends itself so ``auto`` can climb (None: never).
        self._climb_after = climb_after

    async def run(self) -> Disconnect:
        climb = self._climb_after
        if climb is None:
            return await super().run()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._climb_later, climb)
            ending = await super().run()
            nursery.cancel_scope.cancel()
        return ending

    async def _climb_later(self, delay: float) -> None:
        await self.ready.wait()
        await trio.sleep(max(delay, 0.0))
        if not self._closing:
            self._closing = True  # our own decision: the session reconnects at once
            self._abort(self._disconnect(1000, "climbing back up the ladder"))

    def _headers(self) -> dict[str, str]:
        headers = dict(self._settings.headers)
        headers["accept"] = POLL_MEDIA_TYPE
        return headers

    async def _stream(self, op_id: str, payload: dict[str, Any], scope: trio.CancelScope) -> None:
        """One operation's polls, until it completes or the link ends."""
        httpx = _import_httpx()
        settings = self._settings
        wait = settings.poll_wait
        if settings.ping_interval > 0:
            bound = wait + settings.ping_interval + settings.pong_timeout
        else:
            bound = math.inf
        body = dict(payload)
        extensions = dict(body.get("extensions") or {})
        params = {"wait": f"{wait:g}"}
        assert self._http is not None  # set before ready
        with scope:
            try:
                while True:
                    if extensions:
                        body["extensions"] = extensions
                    with trio.move_on_after(bound) as timer:
                        response = await self._http.post(
                            self._http_url, params=params, json=body, headers=self._headers()
                        )
                    if timer.cancelled_caught:
                        self._abort(self._disconnect(ABNORMAL, f"no answer within {bound:g} s"))
                        return
                    answer = self._answer(response)
                    if isinstance(answer, Disconnect):
                        self._abort(answer)
                        return
                    if self._deliver(op_id, answer, extensions):
                        return
            except httpx.TransportError as error:
                cause = f"{type(error).__name__}: {error}".rstrip(": ")
                if self._answered:
                    self._abort(self._disconnect(ABNORMAL, "poll broken", cause=cause))
                else:
                    self._abort(self._disconnect(None, cause=cause))
            finally:
                if self._streams.get(op_id) is scope:
                    del self._streams[op_id]

    def _answer(self, response: httpx.Response) -> dict[str, Any] | Disconnect:
        """The answer's JSON object, or why it is not one."""
        if response.status_code != 200:
            text = response.text[:200].strip()
            return self._disconnect(None, text, status=response.status_code)
        try:
            answer = json.loads(response.content)
        except ValueError:
            return self._disconnect(BAD_RESPONSE, "a poll answer that is not JSON")
        if not isinstance(answer, dict) or not isinstance(answer.get("payloads"), list):
            return self._disconnect(BAD_RESPONSE, "a poll answer without a payloads list")
        self._answered = True
        return answer

    def _deliver(self, op_id: str, answer: dict[str, Any], extensions: dict[str, Any]) -> bool:
        """Hand the answer's payloads on; True once the operation is over."""
        handler = self._handler
        payloads = answer["payloads"]
        for data in payloads:
            if not isinstance(data, dict):
                self._abort(self._disconnect(BAD_RESPONSE, "a payload that is not an object"))
                return True
            if is_request_error(data):
                handler.on_error(op_id, data["errors"])
                return True
            cursor = cursor_of(data)
            if cursor is not None:
                extensions["cursor"] = cursor
            handler.on_next(op_id, data)
        if answer.get("complete") is True:
            handler.on_complete(op_id)
            return True
        seen = answer.get("seen")
        if payloads and isinstance(seen, str):
            extensions["seen"] = seen
        return False
