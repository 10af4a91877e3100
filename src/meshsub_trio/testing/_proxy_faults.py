"""The fault vocabulary of the fault proxy: directions, per-direction faults, the controls.

Kept apart from the sockets so the proxy and each connection share one
definition of what a fault is and how it is set.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Direction", "DirectionFaults"]


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
