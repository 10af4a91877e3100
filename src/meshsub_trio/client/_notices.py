"""What a client tells its owner as it goes: connecting, connected, lost, restarted.

Passed to ``open_client(on_notice=...)`` (a plain function, called from the
client's task: it must not block) and logged on ``meshsub_trio.client``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ._transport import Disconnect


@dataclass(frozen=True)
class Connecting:
    """An attempt at *url* begins; *failures* consecutive failures came before it."""

    url: str
    failures: int


@dataclass(frozen=True)
class Connected:
    """*url* acknowledged the connection; operations are (re)sent now."""

    url: str
    subprotocol: str | None
    #: Operations sent on it at once (resubscriptions after a reconnect).
    resuming: int


@dataclass(frozen=True)
class Disconnected:
    """A link ended. ``retry_in`` is the wait before the next attempt (at
    ``next_url``), or None when the client is not retrying (idle close, a
    fatal code, giving up)."""

    disconnect: Disconnect
    retry_in: float | None
    next_url: str | None


@dataclass(frozen=True)
class Restarted:
    """A subscription's cursor could not be resumed from, and (as asked with
    ``on_cursor_lost="restart"``) it was resubscribed without one: events
    between the lost cursor and now are not replayed."""

    operation_name: str | None
    cursor: str | None
    errors: list[dict[str, Any]]


@dataclass(frozen=True)
class TransportChanged:
    """``transport="auto"`` moved *url* down the ladder (to ``sse``, because the
    WebSocket upgrade was refused or stripped) or back up (to a WebSocket
    subprotocol, once the upgrade passes again)."""

    url: str
    transport: str
    reason: str


@dataclass(frozen=True)
class GaveUp:
    """The client stopped trying; every running operation got *error*."""

    error: BaseException


Notice = Connecting | Connected | Disconnected | Restarted | TransportChanged | GaveUp


def describe(notice: Notice) -> str:
    """One human line for a notice (what the command line prints on stderr)."""
    if isinstance(notice, Connecting):
        extra = f" (after {notice.failures} failure(s))" if notice.failures else ""
        return f"connecting to {notice.url}{extra}"
    if isinstance(notice, Connected):
        resumed = f", sending {notice.resuming} operation(s)" if notice.resuming else ""
        return f"connected to {notice.url} ({notice.subprotocol}{resumed})"
    if isinstance(notice, Disconnected):
        if notice.retry_in is None:
            return f"disconnected: {notice.disconnect}"
        return (
            f"disconnected: {notice.disconnect}; reconnecting to {notice.next_url} "
            f"in {notice.retry_in:.2f} s"
        )
    if isinstance(notice, Restarted):
        return (
            f"cursor {notice.cursor} cannot be resumed from "
            f"({notice.errors[0].get('message') if notice.errors else 'lost'}); "
            "restarted without it: events in between are not replayed"
        )
    if isinstance(notice, TransportChanged):
        return f"{notice.url}: now over {notice.transport} ({notice.reason})"
    return f"gave up: {notice.error}"
