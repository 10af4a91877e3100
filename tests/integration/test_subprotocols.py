"""Subprotocol negotiation over real sockets, on both WebSocket endpoints.

TWS-01/02/03 and LEG-01 from ``/work/shared/reference/protocols.md``, with the
project's decisions: the client's first supported offer wins, offers of only
unsupported protocols close 4406, and no offer at all speaks legacy graphql-ws.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected

from meshsub_trio import Server

from ..wsclient import LEGACY, TRANSPORT, RawClient
from .test_transport_ws import Connect, bare_upgrade, until_close

ENDPOINTS = ["/ws", "/graphql"]
QUERY = {"query": "{ hello }"}


async def speaks_transport_ws(client: RawClient) -> None:
    """Prove graphql-transport-ws: ping/pong, a bare ack, then ``next`` + ``complete``."""
    await client.send({"type": "ping"})
    assert await client.receive() == {"type": "pong"}
    assert await client.init() == {"type": "connection_ack"}
    await client.send({"id": "1", "type": "subscribe", "payload": QUERY})
    messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == ["next", "complete"]


async def speaks_legacy(client: RawClient) -> None:
    """Prove legacy graphql-ws: ack then ``ka``, ``start`` gives ``data`` + ``complete``."""
    await client.send({"type": "connection_init"})
    assert await client.receive() == {"type": "connection_ack"}
    assert await client.receive() == {"type": "ka"}
    await client.send({"id": "1", "type": "start", "payload": QUERY})
    messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == ["data", "complete"]


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_tws_01_transport_ws_selected_among_other_offers(connect: Connect, path: str) -> None:
    """Offering ``this, graphql-transport-ws, one`` selects graphql-transport-ws and stays open."""
    async with connect(subprotocols=["this", TRANSPORT, "one"], path=path) as client:
        assert client.subprotocol == TRANSPORT
        await client.expect_silence(0.03)
        await speaks_transport_ws(client)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "header",
    ["this,graphql-transport-ws,one", "  this ,  graphql-transport-ws  , one "],
    ids=["no-spaces", "padded"],
)
async def test_tws_01_offer_values_are_trimmed(server: Server, path: str, header: str) -> None:
    """Tokens of a comma-separated header are trimmed before the exact match."""
    async with bare_upgrade(
        server.port, path=path, headers=[("Sec-WebSocket-Protocol", header)]
    ) as bare:
        assert bare.status == 101
        assert bare.headers.get("sec-websocket-protocol") == TRANSPORT
        await bare.send_json({"type": "ping"})
        with trio.fail_after(5):
            assert await bare.receive_json() == {"type": "pong"}


async def test_tws_01_offers_in_separate_headers(server: Server) -> None:
    """An offer split over two Sec-WebSocket-Protocol headers is read as one list."""
    async with bare_upgrade(
        server.port,
        headers=[("Sec-WebSocket-Protocol", "this"), ("Sec-WebSocket-Protocol", TRANSPORT)],
    ) as bare:
        assert bare.status == 101
        assert bare.headers.get("sec-websocket-protocol") == TRANSPORT


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    "offer",
    [
        ["notme"],
        ["graphql", "json"],
        ["graphql-transport-wsgibberish"],
        ["graphql-TransPort-ws"],
        ["GRAPHQL-WS"],
        ["graphql-subscriptions"],
    ],
    ids=["notme", "graphql-json", "suffix", "mixed-case", "legacy-upper", "subscriptions-alias"],
)
async def test_tws_02_unsupported_offers_close_4406(
    connect: Connect, path: str, offer: list[str]
) -> None:
    """Offers with no supported protocol: no subprotocol selected, then close 4406."""
    try:
        async with connect(subprotocols=offer, path=path) as client:
            assert client.subprotocol is None
            seen, code, reason = await until_close(client)
    except ConnectionRejected:
        return  # refusing the handshake is the other allowed outcome
    assert seen == []
    assert (code, reason) == (4406, "Subprotocol not acceptable")


async def test_tws_02_unsupported_offer_response_names_no_subprotocol(server: Server) -> None:
    """The handshake response for an unsupported offer carries no Sec-WebSocket-Protocol."""
    async with bare_upgrade(
        server.port, headers=[("Sec-WebSocket-Protocol", "graphql-TransPort-ws")]
    ) as bare:
        assert "sec-websocket-protocol" not in bare.headers
        if bare.status == 101:
            with trio.fail_after(5):
                opcode, payload = await bare.receive_frame()
            assert opcode == 0x8
            assert int.from_bytes(payload[:2], "big") == 4406
        else:
            assert bare.status >= 400


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_tws_02_no_offer_speaks_legacy(connect: Connect, path: str) -> None:
    """No offer at all: transport-ws is not selected; legacy graphql-ws is spoken."""
    async with connect(subprotocols=None, path=path) as client:
        assert client.subprotocol is None
        await speaks_legacy(client)


@pytest.mark.parametrize("path", ENDPOINTS)
@pytest.mark.parametrize(
    ("offer", "chosen"),
    [
        ([LEGACY, TRANSPORT], LEGACY),
        ([TRANSPORT, LEGACY], TRANSPORT),
        (["nope", LEGACY, TRANSPORT], LEGACY),
        (["nope", TRANSPORT, LEGACY], TRANSPORT),
    ],
    ids=["legacy-first", "transport-first", "legacy-after-junk", "transport-after-junk"],
)
async def test_tws_03_first_supported_offer_wins(
    connect: Connect, path: str, offer: list[str], chosen: str
) -> None:
    """The client's first supported protocol is selected and then actually spoken."""
    async with connect(subprotocols=offer, path=path) as client:
        assert client.subprotocol == chosen
        if chosen == TRANSPORT:
            await speaks_transport_ws(client)
        else:
            await speaks_legacy(client)


@pytest.mark.parametrize("path", ENDPOINTS)
async def test_leg_01_graphql_ws_offer_selects_legacy(connect: Connect, path: str) -> None:
    """Offering ``graphql-ws`` selects and speaks the legacy protocol."""
    async with connect(subprotocols=[LEGACY], path=path) as client:
        assert client.subprotocol == LEGACY
        await speaks_legacy(client)


async def test_leg_01_transport_only_server_refuses_legacy_with_4406(
    start_server: Any, connect: Connect
) -> None:
    """A server configured for graphql-transport-ws only closes a legacy offer with 4406."""
    server = await start_server(subprotocols=(TRANSPORT,))
    async with connect(subprotocols=[LEGACY], target=server) as client:
        assert client.subprotocol is None
        _, code, _ = await until_close(client)
    assert code == 4406
    async with connect(subprotocols=[TRANSPORT], target=server) as client:
        await speaks_transport_ws(client)


async def test_websocket_upgrade_on_unknown_path_is_refused(connect: Connect) -> None:
    """Upgrades are only accepted on the configured endpoints."""
    with pytest.raises(ConnectionRejected) as refused:
        async with connect(subprotocols=[TRANSPORT], path="/nope"):
            pass
    assert refused.value.status_code == 404


async def test_plain_http_get_on_ws_endpoint_gets_426(server: Server) -> None:
    """A plain HTTP GET on /ws is told to upgrade: 426 with ``Upgrade: websocket``."""
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/ws")
    assert response.status_code == 426
    assert response.headers["upgrade"].lower() == "websocket"
    assert response.json()["errors"][0]["message"]
