"""A stream's "closed" notice lost between two servers of one cluster.

The server holding a stream for a token another issued tells that token's
home when the stream ends, and the home frees the token. If the notice is
lost (a broker outage, the holder killed first), the home asks the holder
again after ``HANDED_OVER_TTL`` and frees the token then: it is neither kept
forever (a leak per lost notice) nor refused forever.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from meshsub_trio._transports import _reservations
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server  # noqa: F401 (a fixture)

from ._sse_two_servers_kit import (
    EVENT_STREAM,
    TOKEN,
    registry_of,
    relay_of,
    reserve,
    two_servers,
    url,
)
from .conftest import Tracker
from .streams_app import make_stream_app


async def test_a_lost_closed_notice_frees_the_token_after_a_while(
    nats_server: NatsServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_reservations, "HANDED_OVER_TTL", 0.5)
    app = make_stream_app(Tracker())
    async with two_servers(nats_server, app) as (home, holder), httpx.AsyncClient() as client:
        relay = relay_of(home)
        desk = relay.handler
        assert desk is not None
        lost: list[str] = []

        async def losing(kind: str, message: dict[str, Any]) -> dict[str, Any] | None:
            if kind == "closed":
                lost.append(message["t"])
                return None
            return await desk(kind, message)

        relay.handler = losing
        token = await reserve(client, home)
        headers = {"accept": EVENT_STREAM, TOKEN: token}
        async with client.stream("GET", url(holder), headers=headers) as response:
            assert response.status_code == 200
        with trio.fail_after(5):
            while not lost:  # polling state: the holder's notice has come (and gone)
                await trio.sleep(0.01)
        assert len(registry_of(holder)) == 0
        again = await client.put(url(home), headers={TOKEN: token})
        assert again.status_code == 409  # the home still thinks the stream runs
        with trio.fail_after(5):
            while len(registry_of(home)):  # until the home has asked the holder again
                await trio.sleep(0.01)
        fresh = await client.put(url(home), headers={TOKEN: token})
        assert fresh.status_code == 201 and fresh.text != token
