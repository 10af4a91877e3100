"""Long-poll, the last rung of the ladder: ``GET /api/system/events?after=CURSOR&wait=S``.

For clients that can hold neither a WebSocket nor an event stream. The answer
is at once when events follow the cursor, else as soon as one arrives, else
when ``wait`` seconds (default 25, at most 30; 0 answers at once with what
the server holds) pass: ``200 {"events": [...],
"next": CURSOR}`` with each event (the GraphQL shape, like the rest of this
route) beside its ``cursor``. Pass ``next`` back as ``after``: nothing is
missed or repeated between polls. The same cursors as the SSE ``id:`` lines
and the GraphQL ``extensions.cursor``, so a client can step down the ladder
without a gap. ``after=0`` starts at the oldest retained event. A cursor the
log cannot serve is 410 ``CURSOR_EXPIRED`` (with ``oldest``) or 400
``CURSOR_INVALID``, as on the SSE route.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from typing import Any

import trio
from graphql import GraphQLError

from ..._app import HttpResponse
from ..._encoding import dumps
from ...brokers._buffer import BufferOverflow, Overflow
from .._model import _topics as topics
from .._model._cursors import Entry, open_feed
from .._model._model import Model
from ._sse_routes import cursor_refusal

DEFAULT_WAIT_S = 25.0
MAX_WAIT_S = 30.0
#: Events per answer at most; the rest follow on the next poll, at once.
MAX_EVENTS = 1000


def _wait(query: Mapping[str, str]) -> float:
    raw = query.get("wait", "").strip()
    if not raw:
        return DEFAULT_WAIT_S
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not 0 <= wait <= MAX_WAIT_S:
        raise ValueError(f"wait must be a number of seconds from 0 to {MAX_WAIT_S:g}, got {raw!r}")
    return wait


async def long_poll(model: Model, user_id: str, query: Mapping[str, str]) -> HttpResponse:
    """The caller's events after ``query["after"]``, waiting up to ``wait`` for one."""
    after = query["after"].strip()
    wait = _wait(query)
    batch: list[Entry] = []
    try:
        async with open_feed(
            model.broker,
            topics.events(user_id),
            after,
            capacity=MAX_EVENTS,
            policy=Overflow.CLOSE,
        ) as entries:
            # What is there already first: a wait of 0 would cancel the wait
            # for it at its first checkpoint, before it took anything.
            batch = entries.ready(MAX_EVENTS)
            if not batch:
                # The broker closing, or a flood: answer with what there is.
                with trio.move_on_after(wait), suppress(StopAsyncIteration, BufferOverflow):
                    batch.append(await entries.__anext__())
                if batch:
                    batch += entries.ready(MAX_EVENTS - 1)
    except GraphQLError as error:
        return cursor_refusal(error)
    events: list[dict[str, Any]] = [
        {"cursor": None if cursor is None else str(cursor), "event": message["event"]}
        for cursor, message in batch
    ]
    last = batch[-1][0] if batch else None
    next_cursor = after if last is None else str(last)
    return HttpResponse(200, dumps({"events": events, "next": next_cursor}))
