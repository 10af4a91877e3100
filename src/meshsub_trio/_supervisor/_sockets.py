"""The listening sockets the workers share: bound by the supervisor, inherited by workers.

The supervisor binds one ``SO_REUSEPORT`` socket per worker (per address) on
one port and keeps its own copy of each. A worker that dies therefore leaves
its socket listening: connections the kernel routes to it wait in its backlog
for the restarted worker instead of being refused. Binding in the supervisor
also makes ``--port 0`` one port for all, and a busy port one error before any
worker starts.
"""

from __future__ import annotations

import contextlib
import errno
import socket
from dataclasses import dataclass

import trio


@dataclass
class SharedSockets:
    """Every worker's listening sockets (one per address), all on one port."""

    port: int
    per_worker: list[list[socket.socket]]

    def fds(self, index: int) -> list[int]:
        return [sock.fileno() for sock in self.per_worker[index]]

    def close(self) -> None:
        for sockets in self.per_worker:
            for sock in sockets:
                sock.close()


def _addresses(host: str, port: int) -> list[tuple[int, tuple[str, int]]]:
    """(family, sockaddr) for each address of *host*, as ``open_tcp_listeners`` binds them."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    seen: list[tuple[int, tuple[str, int]]] = []
    for family, _, _, _, sockaddr in infos:
        entry = (int(family), (str(sockaddr[0]), int(sockaddr[1])))
        if entry not in seen:
            seen.append(entry)
    return seen


def _probe(family: int, address: tuple[str, int]) -> int:
    """Bind without ``SO_REUSEPORT`` to fail on a port already listened on; the port.

    Sockets sharing a port must all set ``SO_REUSEPORT``, so a second
    ``serve --workers`` on the same port would silently take half the
    connections. A plain bind is refused by any listener there, ours or not.
    """
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        probe.bind(address)
        return int(probe.getsockname()[1])


def _listening(family: int, address: tuple[str, int], backlog: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_shared(host: str, port: int, workers: int, backlog: int) -> SharedSockets:
    """*workers* sets of listening sockets on *host*:*port* (0: one free port for all)."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError(errno.EOPNOTSUPP, "--workers needs SO_REUSEPORT (Linux, BSD, macOS)")
    addresses = _addresses(host, port)
    chosen = port
    for family, (address, _) in addresses:
        chosen = _probe(family, (address, chosen))
    shared = SharedSockets(chosen, [[] for _ in range(workers)])
    try:
        for sockets in shared.per_worker:
            for family, (address, _) in addresses:
                sockets.append(_listening(family, (address, chosen), backlog))
    except BaseException:
        shared.close()
        raise
    return shared


def inherited_listeners(fds: list[int]) -> list[trio.SocketListener]:
    """Listeners over the descriptors a supervisor passed this worker."""
    listeners = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        with contextlib.suppress(OSError):
            sock.set_inheritable(False)
        listeners.append(trio.SocketListener(trio.socket.from_stdlib_socket(sock)))
    return listeners
