"""Resume cursors for the event-shaped subscriptions (events, perf results).

Each emitted value carries its broker log sequence as the cursor (in the
``next`` payload's ``extensions``). A client that reconnects, to this process
or another one sharing the log, sends it back in its subscribe
``extensions.cursor`` and gets everything after it, then live values.

With a replicated bus the cursor is the shared log's sequence, valid on every
process; with a plain MemoryBroker it is that broker's own sequence, valid
within this process only (a restarted process refuses it clearly). A broker
without a log serves live values without cursors, as before.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import trio
from graphql import GraphQLError

from ..._decimal import decimal
from ...brokers._broker import CursorError, CursorExpired, MemoryBroker
from ...brokers._buffer import BufferOverflow, Overflow

#: (cursor or None, message)
Entry = tuple[int | None, Any]


def parse_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    number = decimal(cursor.strip())
    if number is None:
        shown = cursor if len(cursor) <= 40 else cursor[:40] + "..."
        raise GraphQLError(
            f"invalid cursor {shown!r}: send back a cursor this server sent, "
            "or resubscribe without a cursor",
            extensions={"code": "CURSOR_INVALID"},
        )
    return number


def cursor_error(error: CursorError) -> GraphQLError:
    """The GraphQL error a resuming client gets, telling it what to do next."""
    if isinstance(error, CursorExpired):
        return GraphQLError(
            f"cursor {error.cursor} has expired: events after it are no longer retained "
            f"(the oldest resumable cursor is {error.oldest}); resubscribe without a "
            "cursor and reload the history",
            extensions={"code": "CURSOR_EXPIRED", "oldest": str(error.oldest)},
        )
    # Not the broker's reason: it names the log's newest cursor, and cursors are
    # one sequence for every user, so it would let a user count others' writes.
    return GraphQLError(
        f"cursor {error.cursor} is unknown to this server (ahead of its log); "
        "resubscribe without a cursor",
        extensions={"code": "CURSOR_INVALID"},
    )


def _keeps_log(broker: Any) -> bool:
    if not hasattr(broker, "subscribe_log"):
        return False
    return not (isinstance(broker, MemoryBroker) and broker.log_capacity <= 0)


@asynccontextmanager
async def open_feed(
    broker: Any, topic: str, cursor: str | None, *, capacity: int, policy: Overflow
) -> AsyncIterator[_Entries]:
    """*topic*'s messages with their cursors, after *cursor* when given."""
    after = parse_cursor(cursor)
    async with AsyncExitStack() as stack:
        if not _keeps_log(broker):
            if after is not None:
                raise GraphQLError(
                    "this server keeps no event log to resume from: resubscribe without a cursor",
                    extensions={"code": "CURSOR_INVALID"},
                )
            plain = await stack.enter_async_context(
                broker.subscribe(topic, capacity=capacity, policy=policy)
            )
            yield _Entries(plain, cursored=False)
            return
        try:
            log = await stack.enter_async_context(
                broker.subscribe_log(topic, after=after, capacity=capacity, policy=policy)
            )
        except CursorError as error:
            raise cursor_error(error) from None
        yield _Entries(log, cursored=True)


class _Entries:
    """``(cursor, message)`` pairs from a buffer (a plain class, not an async
    generator, so an abandoned iteration leaves nothing to finalize)."""

    def __init__(self, source: Any, *, cursored: bool) -> None:
        self._source = source
        self._cursored = cursored

    def __aiter__(self) -> _Entries:
        return self

    def ready(self, limit: int) -> list[Entry]:
        """Up to *limit* entries already buffered, without waiting (none when the
        source cannot say; an overflow ends the batch: resume from its last cursor)."""
        take = getattr(self._source, "get_nowait", None)
        entries: list[Entry] = []
        while take is not None and len(entries) < limit:
            try:
                item = take()
            except (trio.WouldBlock, trio.EndOfChannel, BufferOverflow):
                break
            entries.append((item.seq, item.message) if self._cursored else (None, item))
        return entries

    async def __anext__(self) -> Entry:
        try:
            item = await self._source.__anext__()
        except CursorExpired as error:  # the log evicted what a resync needed
            raise cursor_error(error) from None
        return (item.seq, item.message) if self._cursored else (None, item)
