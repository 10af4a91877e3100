"""graphql-sse single connection mode: a ``HEAD`` on a reserved stream.

A ``HEAD`` is answered as a ``GET`` without a body (``_head_get``), so on the
stream's route it would open the stream, start what was posted for it and
end it, using the reservation up. It must show the stream's head only: the
real ``GET`` after it opens the stream, with everything posted before, on
the token's own server and on another one of the cluster.
"""

from __future__ import annotations

import httpx
import trio

from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server  # noqa: F401 (a fixture)

from ._sse_two_servers_kit import (
    EVENT_STREAM,
    TOKEN,
    registry_of,
    reserve,
    two_servers,
    url,
)
from .conftest import Events, Tracker
from .streams_app import make_stream_app

COUNTDOWN = "subscription { countdown(to: 1) }"


async def test_a_head_on_the_stream_leaves_the_reservation_for_the_get(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    tracker = Tracker()
    app = make_stream_app(tracker)
    async with two_servers(nats_server, app) as (home, holder), httpx.AsyncClient() as client:
        for where in (home, holder):  # the token's own server, then the other one
            token = await reserve(client, home)
            body = {"query": COUNTDOWN, "extensions": {"operationId": "1"}}
            posted = await client.post(url(home), json=body, headers={TOKEN: token})
            assert posted.status_code == 202
            head = await client.head(url(where), headers={"accept": EVENT_STREAM, TOKEN: token})
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-type"].startswith(EVENT_STREAM)
            assert tracker.cleanups == []  # nothing posted for the stream has run
            headers = {"accept": EVENT_STREAM, TOKEN: token}
            async with client.stream("GET", url(where), headers=headers) as response:
                assert response.status_code == 200
                events = Events(response)
                assert await events.next() == (
                    "next",
                    {"id": "1", "payload": {"data": {"countdown": 1}}},
                )
            with trio.fail_after(5):
                while len(registry_of(home)) or len(registry_of(holder)):
                    await trio.sleep(0.01)  # polling state, not timing: the stream has ended
            tracker.cleanups.clear()
