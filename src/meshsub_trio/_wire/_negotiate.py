"""Choosing a GraphQL WebSocket subprotocol from the client's offer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from ._legacy_ws import SUBPROTOCOL as LEGACY
from ._transport_ws import SUBPROTOCOL as TRANSPORT

SUPPORTED: tuple[str, ...] = (TRANSPORT, LEGACY)


def parse_offer(header_values: Iterable[str]) -> list[str]:
    """Split ``Sec-WebSocket-Protocol`` values into trimmed tokens, in order."""
    offered: list[str] = []
    for value in header_values:
        offered.extend(token.strip() for token in value.split(",") if token.strip())
    return offered


def choose_subprotocol(
    offered: Sequence[str], enabled: Sequence[str] = SUPPORTED
) -> tuple[str | None, str | None]:
    """Return ``(protocol to speak, subprotocol to echo)``.

    The client's first supported offer wins (exact, case-sensitive match).
    No offer at all speaks legacy ``graphql-ws`` without echoing a header, as
    gqlgen does. Offers of only unsupported protocols give ``(None, None)``:
    the driver accepts and then closes 4406.
    """
    if not offered:
        return (LEGACY, None) if LEGACY in enabled else (None, None)
    for candidate in offered:
        if candidate in enabled:
            return candidate, candidate
    return None, None
