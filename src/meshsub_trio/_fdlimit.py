"""When the process runs out of file descriptors: shed, do not stall.

Each connection is a descriptor. With the table full, ``accept`` fails with
EMFILE and the pending connections sit in the kernel's queue: their clients
wait with no answer, and the server retries the failing ``accept`` in a loop.
Two remedies, both cheap:

- :func:`raise_fd_limit` lifts the soft limit to the hard one at start, so the
  ceiling is the one the operator set, not a low default;
- :class:`SpareDescriptor` keeps one descriptor in reserve. On EMFILE it is
  let go for a moment to accept one waiting connection, answer it ``503``
  with ``Retry-After`` and close it, so clients hear "busy" at once and can
  retry (or fail over) instead of timing out.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket

#: What a connection shed for want of descriptors is told (HTTP, since every
#: client starts with a request: a WebSocket handshake fails cleanly on it).
BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def raise_fd_limit() -> int:
    """Raise the soft descriptor limit to the hard one; return the limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


class SpareDescriptor:
    """One descriptor held back so that a full table can still shed connections."""

    def __init__(self) -> None:
        self._fd: int | None = self._reserve()

    @staticmethod
    def _reserve() -> int | None:
        try:
            return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def shed(self, listening: socket.socket, limit: int) -> int:
        """Accept and turn away up to *limit* waiting connections; how many went.

        The spare is taken back after each one, once the turned-away socket
        has given its slot up: taken back any earlier, it finds no room, and
        the next full table would have nothing to shed with.
        """
        shed = 0
        while shed < limit:
            if self._fd is None:
                self._fd = self._reserve()  # a connection closed since: reserve again
                if self._fd is None:
                    return shed
            os.close(self._fd)
            self._fd = None
            try:
                accepted, _ = listening.accept()
            except OSError:  # nothing waiting (or still no room): done
                self._fd = self._reserve()
                return shed
            with accepted, contextlib.suppress(OSError):
                accepted.setblocking(False)
                accepted.send(BUSY)
                accepted.shutdown(socket.SHUT_WR)
                # Unread request bytes at close make the kernel reset the
                # connection, which can discard the 503 before the client reads it.
                accepted.recv(65536)
            self._fd = self._reserve()
            shed += 1
        return shed

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
