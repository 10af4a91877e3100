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
import enum
import random
import socket as _socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, replace
from typing import Any

import trio

__all__ = [
    "Direction",
    "DirectionFaults",
    "FaultProxy",
    "ProxiedConnection",
    "open_fault_proxy",
]

# Bandwidth pacing sends at most this many seconds' worth of bytes per write,
# so a cap shapes the stream smoothly instead of in one burst then a long pause.
_PACING_SLICE = 0.02
_LINGER_ABORT = struct.pack("ii", 1, 0)


class Direction(enum.StrEnum):
    """Which way data flows through a proxied connection."""

    CLIENT_TO_SERVER = "client_to_server"
    SERVER_TO_CLIENT = "server_to_client"
    BOTH = "both"


_C2S = Direction.CLIENT_TO_SERVER
_S2C = Direction.SERVER_TO_CLIENT


def _expand(direction: Direction | str) -> tuple[Direction, ...]:
    """Turn a direction (or its string value) into the concrete ones it covers."""
    value = Direction(direction)
    return (_C2S, _S2C) if value is Direction.BOTH else (value,)


def _single(direction: Direction | str) -> Direction:
    value = Direction(direction)
    if value is Direction.BOTH:
        raise ValueError("pass CLIENT_TO_SERVER or SERVER_TO_CLIENT, not BOTH")
    return value


@dataclass(frozen=True)
class DirectionFaults:
    """The faults in effect for one direction of one connection (immutable snapshot)."""

    partitioned: bool = False
    discard: bool = False
    latency: float = 0.0
    jitter: float = 0.0
    bandwidth: float | None = None
    max_chunk: int | None = None
    reading_paused: bool = False


_NO_FAULTS = DirectionFaults()


class _Close(enum.Enum):
    GRACEFUL = "graceful"
    RESET = "reset"


@dataclass(frozen=True)
class _Chunk:
    data: bytes  # b"" marks end of stream
    due: float  # Trio time at which latency allows the chunk out


class _FaultControls:
    """The fault vocabulary shared by the proxy (all connections) and one connection."""

    def _apply(self, directions: tuple[Direction, ...], **changes: Any) -> None:
        raise NotImplementedError

    def faults(self, direction: Direction | str) -> DirectionFaults:
        """Return the faults currently in effect for one concrete direction."""
        raise NotImplementedError

    def partition(
        self, direction: Direction | str = Direction.BOTH, *, discard: bool = False
    ) -> None:
        """Stop forwarding in ``direction``; sockets stay open.

        With ``discard=False`` the held bytes are delivered after :meth:`heal`
        (TCP-like); with ``discard=True`` they are read and dropped.
        """
        self._apply(_expand(direction), partitioned=True, discard=discard)

    def heal(self, direction: Direction | str = Direction.BOTH) -> None:
        """End a partition in ``direction`` and resume forwarding."""
        self._apply(_expand(direction), partitioned=False, discard=False)

    def set_latency(
        self, seconds: float, jitter: float = 0.0, *, direction: Direction | str = Direction.BOTH
    ) -> None:
        """Delay every chunk by ``seconds`` plus uniform ``[0, jitter]``; order is preserved.

        Jitter only adds, so ``seconds`` is a guaranteed minimum delay.
        """
        if seconds < 0 or jitter < 0:
            raise ValueError("latency and jitter must be >= 0")
        self._apply(_expand(direction), latency=float(seconds), jitter=float(jitter))

    def set_bandwidth(
        self, bytes_per_second: float | None, *, direction: Direction | str = Direction.BOTH
    ) -> None:
        """Cap throughput per connection and direction; ``None`` removes the cap."""
        if bytes_per_second is not None and bytes_per_second <= 0:
            raise ValueError("bandwidth must be > 0 or None")
        self._apply(_expand(direction), bandwidth=bytes_per_second)

    def fragment(
        self, max_chunk: int | None, *, direction: Direction | str = Direction.BOTH
    ) -> None:
        """Forward at most ``max_chunk`` bytes per send; ``None`` stops fragmenting."""
        if max_chunk is not None and max_chunk < 1:
            raise ValueError("max_chunk must be >= 1 or None")
        self._apply(_expand(direction), max_chunk=max_chunk)

    def stop_reading(self, direction: Direction | str = Direction.SERVER_TO_CLIENT) -> None:
        """Stop reading the sending side of ``direction`` at once (slow consumer).

        The sender's socket buffers then fill and its sends stall, the way a
        client that stops reading makes a server's writes block.
        """
        self._apply(_expand(direction), reading_paused=True)

    def resume_reading(self, direction: Direction | str = Direction.BOTH) -> None:
        """Undo :meth:`stop_reading`."""
        self._apply(_expand(direction), reading_paused=False)

    def clear_faults(self) -> None:
        """Remove every fault in both directions (held data is then delivered)."""
        self._apply((_C2S, _S2C), **asdict(_NO_FAULTS))


class ProxiedConnection(_FaultControls):
    """One client connection through the proxy, with its own faults and counters."""

    def __init__(
        self,
        proxy: FaultProxy,
        client: trio.SocketStream,
        faults: dict[Direction, DirectionFaults],
    ) -> None:
        self._proxy = proxy
        self._client = client
        self._upstream: trio.SocketStream | None = None
        self._faults = dict(faults)
        self._changed = trio.Event()
        self._scope = trio.CancelScope()
        self._close_mode = _Close.GRACEFUL
        self._read_scopes: dict[Direction, trio.CancelScope | None] = {_C2S: None, _S2C: None}
        self._last_due = {_C2S: 0.0, _S2C: 0.0}
        self._pace_at = {_C2S: 0.0, _S2C: 0.0}
        self._forwarded = {_C2S: 0, _S2C: 0}
        self._discarded = {_C2S: 0, _S2C: 0}
        self._established = trio.Event()
        self._closed = trio.Event()
        self.client_address: Any = client.socket.getpeername()
        #: Why the upstream connection could not be opened, if it could not.
        self.error: OSError | None = None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<ProxiedConnection from {self.client_address!r} {state}>"

    # -- inspection ---------------------------------------------------------

    @property
    def established(self) -> bool:
        """True once the upstream (server) connection is open."""
        return self._established.is_set()

    @property
    def closed(self) -> bool:
        """True once both sockets are closed and every task of this connection ended."""
        return self._closed.is_set()

    async def wait_established(self) -> None:
        await self._established.wait()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    def faults(self, direction: Direction | str) -> DirectionFaults:
        return self._faults[_single(direction)]

    def bytes_forwarded(self, direction: Direction | str = Direction.BOTH) -> int:
        """Bytes written to the destination side so far."""
        return sum(self._forwarded[d] for d in _expand(direction))

    def bytes_discarded(self, direction: Direction | str = Direction.BOTH) -> int:
        """Bytes thrown away by ``partition(discard=True)``."""
        return sum(self._discarded[d] for d in _expand(direction))

    # -- one-shot faults ----------------------------------------------------

    def reset(self) -> None:
        """Abort both sides with RST (SO_LINGER 0 then close)."""
        self._abort(_Close.RESET)

    def close(self) -> None:
        """Close both sides cleanly with FIN; undelivered data is dropped."""
        self._abort(_Close.GRACEFUL)

    # -- internals ----------------------------------------------------------

    def _abort(self, mode: _Close) -> None:
        if self._close_mode is not _Close.RESET:  # a reset is never downgraded
            self._close_mode = mode
        self._scope.cancel()

    def _apply(self, directions: tuple[Direction, ...], **changes: Any) -> None:
        for direction in directions:
            self._faults[direction] = replace(self._faults[direction], **changes)
            read_scope = self._read_scopes[direction]
            if changes.get("reading_paused") and read_scope is not None:
                read_scope.cancel()  # stop a read already waiting for data
        self._changed.set()
        self._changed = trio.Event()

    async def _wait_while(self, condition: Callable[[], bool]) -> None:
        """Block until ``condition`` is false, re-checking whenever a fault changes."""
        while condition():
            await self._changed.wait()

    async def _serve(self) -> None:
        try:
            with self._scope:
                # No route to the server while partitioned: connect after heal.
                await self._wait_while(
                    lambda: any(self._faults[d].partitioned for d in (_C2S, _S2C))
                )
                try:
                    self._upstream = await self._proxy._open_upstream()
                except OSError as exc:
                    self.error = exc
                    self._close_mode = _Close.RESET  # closest thing to "refused"
                    return
                self._established.set()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._pump, _C2S, self._client, self._upstream)
                    nursery.start_soon(self._pump, _S2C, self._upstream, self._client)
        finally:
            self._teardown()

    def _teardown(self) -> None:
        for stream in (self._client, self._upstream):
            if stream is None:
                continue
            sock = stream.socket
            with contextlib.suppress(OSError):
                if self._close_mode is _Close.RESET:
                    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _LINGER_ABORT)
                else:
                    sock.shutdown(_socket.SHUT_WR)  # FIN before close, even with unread data
            sock.close()
        self._closed.set()
        self._proxy._forget(self)

    async def _pump(
        self, direction: Direction, source: trio.SocketStream, dest: trio.SocketStream
    ) -> None:
        send, receive = trio.open_memory_channel[_Chunk](self._proxy._queue_chunks)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._read_side, direction, source, send)
            nursery.start_soon(self._write_side, direction, dest, receive)

    async def _read_side(
        self,
        direction: Direction,
        source: trio.SocketStream,
        send: trio.MemorySendChannel[_Chunk],
    ) -> None:
        async with send:
            while True:
                await self._wait_while(lambda: self._faults[direction].reading_paused)
                scope = self._read_scopes[direction] = trio.CancelScope()
                try:
                    with scope:
                        data = await source.receive_some(self._proxy._read_size)
                except trio.BrokenResourceError:
                    self._abort(_Close.RESET)  # mirror the peer's reset to the other side
                    return
                finally:
                    self._read_scopes[direction] = None
                if scope.cancelled_caught:
                    continue  # stop_reading() interrupted an idle read
                await send.send(_Chunk(bytes(data), self._due_time(direction)))
                if not data:
                    return

    def _due_time(self, direction: Direction) -> float:
        faults = self._faults[direction]
        delay = faults.latency
        if faults.jitter:
            delay += self._proxy._rng.uniform(0.0, faults.jitter)
        due = max(trio.current_time() + delay, self._last_due[direction])
        self._last_due[direction] = due  # never overtake an earlier chunk
        return due

    async def _write_side(
        self,
        direction: Direction,
        dest: trio.SocketStream,
        receive: trio.MemoryReceiveChannel[_Chunk],
    ) -> None:
        async with receive:
            async for chunk in receive:
                await trio.sleep_until(chunk.due)
                try:
                    if chunk.data:
                        await self._deliver(direction, dest, chunk.data)
                    else:
                        await self._wait_while(lambda: self._faults[direction].partitioned)
                        await dest.send_eof()
                        return
                except trio.BrokenResourceError:
                    self._abort(_Close.RESET)
                    return

    async def _deliver(self, direction: Direction, dest: trio.SocketStream, data: bytes) -> None:
        view = memoryview(data)
        offset = 0
        while offset < len(view):
            await self._wait_while(
                lambda: self._faults[direction].partitioned and not self._faults[direction].discard
            )
            faults = self._faults[direction]
            if faults.partitioned:  # discard mode
                self._discarded[direction] += len(view) - offset
                return
            size = len(view) - offset
            if faults.max_chunk is not None:
                size = min(size, faults.max_chunk)
            if faults.bandwidth is not None:
                size = min(size, max(1, int(faults.bandwidth * _PACING_SLICE)))
                await trio.sleep_until(self._pace_at[direction])
            started = trio.current_time()
            await dest.send_all(view[offset : offset + size])
            offset += size
            self._forwarded[direction] += size
            if faults.bandwidth is not None:
                self._pace_at[direction] = started + size / faults.bandwidth


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
