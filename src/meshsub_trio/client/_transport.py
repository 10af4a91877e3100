"""The seam between the client's session logic and the wire that carries it.

A :class:`Transport` opens :class:`Link` objects; a link is one attempt to
reach one URL and carries any number of operations until it ends, and then
says why in a :class:`Disconnect`. Everything above the seam (reconnecting,
failing over, resuming with cursors, buffers, limits) is shared by every
transport; everything below it is the wire's business (framing, keep-alive,
the handshake).

Today: ``"ws"`` (graphql-transport-ws) and ``"legacy"`` (Apollo's
graphql-ws) over one multiplexed WebSocket; ``"sse"`` (graphql-sse's
distinct connections mode, one HTTP stream per operation: a link's
``subscribe`` opens a request in the link's own nursery, and a failed
request ends the link, so the session resumes every operation as it does
for a WebSocket); ``"poll"`` (long-poll, :mod:`._poll`: a loop of requests
per operation that resumes by cursor between polls); ``"auto"``, the ladder
(:mod:`._ladder`): WebSocket offering both protocols, down to SSE for a URL
whose upgrade is refused, down to long-poll where a proxy holds the stream.
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import trio

from ._closecodes import Verdict, close_verdict, status_verdict

TransportName = Literal["auto", "ws", "legacy", "sse", "poll"]
#: Transports this client speaks today, and those planned behind the same seam.
AVAILABLE: tuple[str, ...] = ("auto", "ws", "legacy", "sse", "poll")
PLANNED: tuple[str, ...] = ()

#: A value, or a function (plain or async) returning it, called before each attempt.
Provider = Any


@dataclass(frozen=True)
class Disconnect:
    """Why one link ended (or never became ready)."""

    url: str
    #: WebSocket close code; 1006 when the socket ended without a close frame.
    code: int | None = None
    reason: str = ""
    #: The HTTP status when the upgrade was refused.
    status: int | None = None
    #: A legacy ``connection_error`` payload (the server refused init).
    refusal: Any = None
    #: Whether ``connection_ack`` had arrived (operations were running).
    acknowledged: bool = False
    #: Whether this client closed it (idle grace, or the client closing).
    by_client: bool = False
    #: Seconds from the acknowledgement to the end (0 if never acknowledged).
    lived: float = 0.0
    #: The local exception behind it (unreachable host, timeout), as text.
    cause: str = ""

    @property
    def verdict(self) -> Verdict:
        """Retry, or stop because of auth, or stop for another reason (see the table)."""
        if self.refusal is not None:
            return Verdict.AUTH
        if self.status is not None:
            return status_verdict(self.status)
        if self.code is None:
            return Verdict.RETRY  # never reached a WebSocket: unreachable, timed out
        return close_verdict(self.code)

    def __str__(self) -> str:
        if self.status is not None:
            what = f"HTTP {self.status}"
        elif self.code is not None:
            what = f"close {self.code}"
        else:
            what = "unreachable"
        detail = self.reason or self.cause or (str(self.refusal) if self.refusal else "")
        return f"{self.url}: {what}{' ' + detail if detail else ''}"


class LinkHandler(Protocol):
    """What a link reports, from its own task; every method returns at once."""

    def on_next(self, op_id: str, payload: dict[str, Any]) -> None: ...

    def on_error(self, op_id: str, errors: list[dict[str, Any]]) -> None: ...

    def on_complete(self, op_id: str) -> None: ...

    def on_transport_changed(self, url: str, transport: str, reason: str) -> None:
        """The ladder moved *url* to another transport (down to SSE or poll, or back up)."""
        ...


class Link(Protocol):
    """One attempt at one URL, carrying operations until it ends."""

    #: Set once operations may be sent (after ``connection_ack``).
    ready: trio.Event

    @property
    def subprotocol(self) -> str | None:
        """The protocol spoken, once known (``sse`` for an SSE link)."""
        ...

    async def run(self) -> Disconnect:
        """Connect, serve until the link ends, and return why. Never raises for
        network trouble; cancelling it aborts the link."""
        ...

    def subscribe(self, op_id: str, payload: dict[str, Any]) -> None:
        """Start an operation (queued; sent in order). Only once ``ready``."""
        ...

    def complete(self, op_id: str) -> None:
        """Stop an operation if it is live (queued; sent in order)."""
        ...

    def close(self) -> None:
        """Begin a clean close (1000) after what is queued; ``run`` then returns."""
        ...


@dataclass(frozen=True)
class LinkSettings:
    """What every link of one client needs to know (resolved before each attempt)."""

    transport: str = "auto"
    connection_params: dict[str, Any] | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    ping_interval: float = 10.0
    pong_timeout: float = 5.0
    connect_timeout: float = 10.0
    close_timeout: float = 2.0
    max_message_size: int = 4 * 1024 * 1024
    ssl_context: ssl.SSLContext | None = None
    #: ``auto``: seconds a URL stays on SSE after its upgrade was refused.
    websocket_retry_after: float = 300.0
    #: ``poll``: how long the server may hold each poll (``?wait=``, at most 60).
    poll_wait: float = 25.0


class Transport(Protocol):
    """Makes links for one kind of wire."""

    def open_link(self, url: str, settings: LinkSettings, handler: LinkHandler) -> Link: ...


def transport_for(name: str) -> Transport:
    """The transport called *name* (``auto``, ``ws``, ``legacy``, ``sse``, ``poll``)."""
    if name == "auto":
        from ._ladder import LadderTransport

        return LadderTransport()
    if name == "sse":
        from ._sse import SseTransport

        return SseTransport()
    if name == "poll":
        from ._poll import PollTransport

        return PollTransport()
    if name in AVAILABLE:
        from ._websocket import WebSocketTransport

        return WebSocketTransport()
    if name in PLANNED:
        raise NotImplementedError(
            f"transport {name!r} is planned (the server's HTTP streams come first); "
            f"use one of {', '.join(AVAILABLE)}"
        )
    raise ValueError(f"unknown transport {name!r}; use one of {', '.join(AVAILABLE)}")


async def resolve(provider: Provider) -> Any:
    """A provider's current value: the value itself, or what its function returns
    (awaited if it is a coroutine)."""
    if callable(provider):
        value = provider()
        if inspect.isawaitable(value):
            value = await value
        return value
    return provider


ParamsProvider = (
    dict[str, Any]
    | Callable[[], dict[str, Any] | None]
    | Callable[[], Awaitable[dict[str, Any] | None]]
    | None
)
TokenProvider = str | Callable[[], str | None] | Callable[[], Awaitable[str | None]] | None
HeadersProvider = (
    Mapping[str, str]
    | Callable[[], Mapping[str, str]]
    | Callable[[], Awaitable[Mapping[str, str]]]
    | None
)
