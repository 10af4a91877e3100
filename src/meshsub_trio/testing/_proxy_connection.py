"""One connection through the fault proxy: its faults, counters and byte pumps.

Each direction is a reader task and a writer task joined by a bounded channel;
latency, pacing, partitions and stopped reads are applied between the two.
"""

from __future__ import annotations

import contextlib
import enum
import socket as _socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import trio

from ._proxy_faults import (
    _C2S,
    _S2C,
    Direction,
    DirectionFaults,
    _expand,
    _FaultControls,
    _single,
)

if TYPE_CHECKING:
    from ._proxy import FaultProxy

__all__ = ["ProxiedConnection"]

# Bandwidth pacing sends at most this many seconds' worth of bytes per write,
# so a cap shapes the stream smoothly instead of in one burst then a long pause.
_PACING_SLICE = 0.02
_LINGER_ABORT = struct.pack("ii", 1, 0)


class _Close(enum.Enum):
    GRACEFUL = "graceful"
    RESET = "reset"


@dataclass(frozen=True)
class _Chunk:
    data: bytes  # b"" marks end of stream
    due: float  # Trio time at which latency allows the chunk out


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
