"""Subprotocol choice: the client's first supported offer wins."""

from __future__ import annotations

from meshsub_trio._wire import choose_subprotocol, parse_offer


def test_first_supported_offer_wins() -> None:
    assert choose_subprotocol(["this", "graphql-transport-ws", "one"]) == (
        "graphql-transport-ws",
        "graphql-transport-ws",
    )
    assert choose_subprotocol(["graphql-ws", "graphql-transport-ws"]) == (
        "graphql-ws",
        "graphql-ws",
    )


def test_no_offer_speaks_legacy_without_echo() -> None:
    assert choose_subprotocol([]) == ("graphql-ws", None)


def test_only_unsupported_offers_are_refused() -> None:
    for offer in (["notme"], ["graphql-transport-wsgibberish"], ["graphql-TransPort-ws"]):
        assert choose_subprotocol(offer) == (None, None)


def test_disabled_protocols_are_not_chosen() -> None:
    assert choose_subprotocol(["graphql-ws"], ("graphql-transport-ws",)) == (None, None)
    assert choose_subprotocol([], ("graphql-transport-ws",)) == (None, None)


def test_offer_header_values_are_split_and_trimmed() -> None:
    assert parse_offer(["a, b ,c", "d"]) == ["a", "b", "c", "d"]
