"""A peer that vanishes mid-write is a normal disconnect, not a server fault.

Found from outside: a client reset while the server was flushing to it was
logged as an ERROR with a traceback and counted as ``closes_total{code="1011"}``.
"""

from __future__ import annotations

import logging
import socket
import struct

import pytest
import trio

from ..rawws import masked_frame, open_raw_websocket
from .conftest import bystander

_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


async def _vanish_mid_write(port: int, *, pings: int, protocol: str) -> None:
    """Subscribe to a fast stream, queue work that makes the server write, then RST."""
    ws = await open_raw_websocket(port, receive_buffer=4096, subprotocol=protocol)
    await ws.init()
    kind = "subscribe" if protocol == "graphql-transport-ws" else "start"
    await ws.send_json(
        {"id": "1", "type": kind, "payload": {"query": "subscription { ticks(everyMs: 1) }"}}
    )
    await ws.receive_json()
    burst = b"".join(masked_frame(b'{"type":"ping"}') for _ in range(pings))
    burst += b"".join(masked_frame(b"x" * 100, opcode=0x9) for _ in range(pings))
    await ws.stream.send_all(burst)
    ws.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET)
    ws.stream.socket.close()


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
@pytest.mark.parametrize("pings", [1, 50, 500])
async def test_reset_mid_write_is_not_a_server_error(
    start_server, caplog: pytest.LogCaptureFixture, pings: int, protocol: str
) -> None:
    server = await start_server()
    caplog.set_level(logging.INFO, logger="meshsub_trio")
    async with bystander(server.port):
        for _ in range(10):
            await _vanish_mid_write(server.port, pings=pings, protocol=protocol)
        with trio.fail_after(5):  # only the bystander left
            await server.metrics.wait_for(lambda m: m.live_connections == 1)
    codes = dict(server.metrics.closes_by_code.items())
    assert "1011" not in codes, codes
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
