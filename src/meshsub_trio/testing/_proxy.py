"""A fault-injecting TCP proxy for tests.

Put :class:`FaultProxy` between any TCP client and server to prove that network
trouble is handled deterministically: partitions (both ways or one way), RST and
FIN aborts, latency and jitter, bandwidth caps, tiny fragmented writes and a
reader that stops reading (slow consumer).

Faults are plain synchronous method calls, so a test can apply them at any
moment from the Trio thread. A fault set on the proxy becomes the default for
future connections and is applied to every live one; a fault set on one
:class:`ProxiedConnection` affects only that connection.

Partition semantics: by default a partition *holds* data (nothing is forwarded,
bytes wait in the proxy and in kernel buffers) and :meth:`heal` delivers it in
order, which is what TCP retransmission makes a real, healed partition look
like. ``partition(discard=True)`` instead reads and throws the bytes away, which
leaves a gap in the stream (a broken middlebox rather than a lossy network).
End-of-stream (FIN) is always held, never discarded. A connection accepted
while the proxy is partitioned does not reach the server until the heal.
"""

from __future__ import annotations

import contextlib
import random
import socket as _socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio

from ._proxy_connection import ProxiedConnection
from ._proxy_faults import (
    _C2S,
    _NO_FAULTS,
    _S2C,
    Direction,
    DirectionFaults,
    _FaultControls,
    _single,
)

__all__ = [
    "Direction",
    "DirectionFaults",
    "FaultProxy",
    "ProxiedConnection",
    "open_fault_proxy",
]


class FaultProxy(_FaultControls):
    """A TCP proxy from ``listen_host:listen_port`` to ``target_host:target_port`` with faults.

    Start it with ``port = await nursery.start(proxy.run)`` or use
    :func:`open_fault_proxy`. ``rcvbuf`` sets SO_RCVBUF on the proxy's own
    sockets (both sides) so :meth:`stop_reading` stalls the sender quickly;
    ``seed`` makes jitter reproducible. Call fault methods from the Trio thread.
    """

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        listen_port: int = 0,
        rcvbuf: int | None = 16 * 1024,
        read_size: int = 64 * 1024,
        queue_chunks: int = 8,
        seed: int | None = None,
    ) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.listen_host = listen_host
        self._listen_port = listen_port
        self._rcvbuf = rcvbuf
        self._read_size = read_size
        self._queue_chunks = queue_chunks
        self._rng = random.Random(seed)
        self._defaults = {_C2S: _NO_FAULTS, _S2C: _NO_FAULTS}
        self._live: list[ProxiedConnection] = []
        self._accepted: list[ProxiedConnection] = []
        self._accept_changed = trio.Event()
        self._cancel_scope: trio.CancelScope | None = None
        self._stopped = trio.Event()
        self._port: int | None = None

    # -- inspection ---------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound listening port (available once :meth:`run` has started)."""
        if self._port is None:
            raise RuntimeError("the proxy is not listening yet")
        return self._port

    @property
    def connections(self) -> list[ProxiedConnection]:
        """Live connections, oldest first (a copy)."""
        return list(self._live)

    @property
    def accepted_count(self) -> int:
        """How many client connections were accepted since the proxy started."""
        return len(self._accepted)

    def faults(self, direction: Direction | str) -> DirectionFaults:
        """The faults new connections start with."""
        return self._defaults[_single(direction)]

    def bytes_forwarded(self, direction: Direction | str = Direction.BOTH) -> int:
        """Bytes forwarded by all connections, closed ones included."""
        return sum(conn.bytes_forwarded(direction) for conn in self._accepted)

    def bytes_discarded(self, direction: Direction | str = Direction.BOTH) -> int:
        return sum(conn.bytes_discarded(direction) for conn in self._accepted)

    async def wait_for_connections(self, count: int = 1) -> list[ProxiedConnection]:
        """Wait until ``count`` connections have been accepted; return the first ``count``."""
        while len(self._accepted) < count:
            await self._accept_changed.wait()
        return self._accepted[:count]

    # -- faults -------------------------------------------------------------

    def _apply(self, directions: tuple[Direction, ...], **changes: Any) -> None:
        for direction in directions:
            self._defaults[direction] = replace(self._defaults[direction], **changes)
        for conn in self._live:
            conn._apply(directions, **changes)

    def reset(self) -> None:
        """Abort every live connection with RST; keep listening."""
        for conn in self._live:
            conn.reset()

    def close(self) -> None:
        """Close every live connection with FIN; keep listening (see :meth:`aclose`)."""
        for conn in self._live:
            conn.close()

    # -- lifecycle ----------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and proxy until cancelled or :meth:`aclose`; reports the bound port."""
        if self._cancel_scope is not None:
            raise RuntimeError("FaultProxy.run() may only be called once")
        self._cancel_scope = trio.CancelScope()
        try:
            with self._cancel_scope:
                listener = await self._open_listener()
                try:
                    async with trio.open_nursery() as nursery:
                        task_status.started(self.port)
                        await self._accept_loop(listener, nursery)
                finally:
                    listener.socket.close()
        finally:
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop the proxy: stop listening, close every connection, wait for all tasks."""
        if self._cancel_scope is None:
            return
        self._cancel_scope.cancel()
        await self._stopped.wait()

    async def _open_listener(self) -> trio.SocketListener:
        infos = await trio.socket.getaddrinfo(
            self.listen_host, self._listen_port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE
        )
        family, type_, proto, _, sockaddr = infos[0]
        sock = trio.socket.socket(family, type_, proto)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if self._rcvbuf is not None:  # inherited by accepted sockets
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, self._rcvbuf)
            await sock.bind(sockaddr)
            sock.listen(128)
        except BaseException:
            sock.close()
            raise
        self._port = sock.getsockname()[1]
        return trio.SocketListener(sock)

    async def _accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            stream = await listener.accept()
            conn = ProxiedConnection(self, stream, self._defaults)
            self._live.append(conn)
            self._accepted.append(conn)
            self._accept_changed.set()
            self._accept_changed = trio.Event()
            nursery.start_soon(conn._serve)

    async def _open_upstream(self) -> trio.SocketStream:
        """Connect to the target with SO_RCVBUF set before connect (so the window stays small)."""
        infos = await trio.socket.getaddrinfo(
            self.target_host, self.target_port, type=_socket.SOCK_STREAM
        )
        error: OSError = OSError(f"cannot resolve {self.target_host}:{self.target_port}")
        for family, type_, proto, _, sockaddr in infos:
            sock = trio.socket.socket(family, type_, proto)
            try:
                if self._rcvbuf is not None:
                    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, self._rcvbuf)
                await sock.connect(sockaddr)
            except OSError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            return trio.SocketStream(sock)
        raise error

    def _forget(self, conn: ProxiedConnection) -> None:
        with contextlib.suppress(ValueError):
            self._live.remove(conn)


@asynccontextmanager
async def open_fault_proxy(
    target_host: str,
    target_port: int,
    *,
    listen_host: str = "127.0.0.1",
    listen_port: int = 0,
    rcvbuf: int | None = 16 * 1024,
    read_size: int = 64 * 1024,
    queue_chunks: int = 8,
    seed: int | None = None,
) -> AsyncIterator[FaultProxy]:
    """Run a :class:`FaultProxy` for the duration of the block; everything is closed on exit."""
    proxy = FaultProxy(
        target_host,
        target_port,
        listen_host=listen_host,
        listen_port=listen_port,
        rcvbuf=rcvbuf,
        read_size=read_size,
        queue_chunks=queue_chunks,
        seed=seed,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        try:
            yield proxy
        finally:
            nursery.cancel_scope.cancel()
