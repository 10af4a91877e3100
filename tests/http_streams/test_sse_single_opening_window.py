"""graphql-sse single connection mode while a stream opens, on two servers of one cluster.

A stream opening on the server that did not issue its token must first ask
that token's home for the reservation ("open"). Meanwhile requests for the
token keep coming, to either server; each must be decided where the
reservation is, never refused because it is on its way.
"""

from __future__ import annotations

import httpx
import trio

from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server  # noqa: F401 (a fixture)

from ._sse_two_servers_kit import (
    EVENT_STREAM,
    TOKEN,
    HeldBack,
    post,
    reserve,
    two_servers,
    url,
)
from .conftest import Events, Tracker
from .streams_app import make_stream_app


async def test_posts_on_the_opening_server_wait_for_the_home_s_answer(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    app = make_stream_app(Tracker())
    async with two_servers(nats_server, app) as (home, holder), httpx.AsyncClient() as client:
        token = await reserve(client, home)
        held = HeldBack(home, "open")
        streams: list[Events] = []
        opened = trio.Event()

        async def open_stream() -> None:
            headers = {"accept": EVENT_STREAM, TOKEN: token}
            async with client.stream("GET", url(holder), headers=headers) as response:
                assert response.status_code == 200
                streams.append(Events(response))
                opened.set()
                await trio.sleep_forever()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(open_stream)
            with trio.fail_after(5):
                await held.arrived.wait()
            # The holder has the token registered, its home has not handed it over:
            # the home decides (it holds them for the stream), not a 404 here.
            assert (await post(client, holder, token, "early")).status_code == 202
            assert (await post(client, holder, token, "dropped")).status_code == 202
            stopped = await client.delete(
                url(holder), params={"operationId": "dropped"}, headers={TOKEN: token}
            )
            assert stopped.status_code == 200
            assert (await post(client, home, token, "at-home")).status_code == 202
            held.release()
            with trio.fail_after(5):
                await opened.wait()
            [events] = streams
            seen = {}
            while len(seen) < 2:
                kind, data = await events.next()
                if kind == "next":
                    seen[data["id"]] = data["payload"]
            assert seen == {i: {"data": {"hello": "world"}} for i in ("early", "at-home")}
            nursery.cancel_scope.cancel()
