"""The small message-socket interface the connection driver needs from a host.

Each host (native Trio streams, ASGI) is one adapter. Only the connection's
writer task sends; only its reader task receives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeGuard


class SocketClosed(Exception):
    """The peer closed (``code`` from its close frame, 1006 if it just vanished)."""

    def __init__(self, code: int = 1006, reason: str = "") -> None:
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


class MessageTooBig(Exception):
    """An inbound message exceeded the configured maximum size."""


@dataclass(frozen=True, slots=True)
class Message:
    """One complete inbound WebSocket message."""

    data: str | bytes
    binary: bool = False


class MessageSocket(Protocol):
    #: Called on any inbound traffic (messages, pongs): the keep-alive's proof of life.
    on_activity: Callable[[], None]

    async def receive(self) -> Message:
        """The next message; raises :class:`SocketClosed` or :class:`MessageTooBig`."""

    async def send_frames(self, frames: list[bytes]) -> None:
        """Send UTF-8 JSON text messages, in order, as few writes as possible."""

    async def ping(self) -> bool:
        """Send a transport ping frame; False if this host cannot."""

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame."""

    async def abort(self) -> None:
        """Drop the transport now, without a handshake."""


class DirectSocket(MessageSocket, Protocol):
    """A socket that can write without waiting (the native host).

    ``write_frames`` hands frames to the kernel at once, keeping whatever it
    does not take in ``backlog`` (in order) for ``flush`` to finish.
    """

    on_backlog: Callable[[], None]

    @property
    def backlog(self) -> int: ...

    def write_frames(self, frames: list[bytes]) -> None: ...

    def encode_frames(self, frames: list[bytes]) -> bytes:
        """Text frames as wire bytes (the same for every connection of the host)."""

    def write_encoded(self, data: bytes) -> None:
        """Write what :meth:`encode_frames` gave: a fan-out encodes once, writes many."""

    def start_close(self, code: int, reason: str) -> None:
        """Write the close frame without waiting; ``close`` finishes it."""

    def ping_now(self) -> bool:
        """Write a ping frame without waiting; False once closing."""

    async def flush(self) -> None: ...


def is_direct(socket: MessageSocket) -> TypeGuard[DirectSocket]:
    """Whether *socket* can write without waiting (a :class:`DirectSocket`).

    One attribute test, cheaper per connection than a runtime-checkable
    Protocol's ``isinstance``.
    """
    return hasattr(socket, "write_frames")
