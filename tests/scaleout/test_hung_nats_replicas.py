"""A hung nats-server (SIGSTOPped: alive, silent) as two Meshery replicas see it.

Within ``NatsOptions.stale_timeout`` the replicas must report the link down,
which is what everything else follows: the BROKER controller reads UNKOWN,
and a change is refused at once with BROKER_UNAVAILABLE (503) instead of
waiting out the flush timeout for an answer that cannot come. Once the
server is continued they recover: BROKER reads CONNECTED, changes are taken
and replicated again.
"""

from __future__ import annotations

import os
import signal
from contextlib import AsyncExitStack

import trio

from meshsub_trio import ConnectionState
from meshsub_trio.meshery import LOCAL_USER_ID
from meshsub_trio.testing import NatsServer

from ._kit import CONTROLLERS, SOON, Reader, graphql, http_client, open_replica
from .test_replicas import broker_status

BOUND = 1.0
SLACK = 1.0
SAVE = 'mutation { savePattern(input: {name: "%s", pattern_file: "y"}) { id name } }'


async def test_a_hung_server_is_noticed_and_changes_are_refused_until_it_answers(
    nats_server: NatsServer,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_replica(nats_server, stale_timeout=BOUND))
        b = await stack.enter_async_context(open_replica(nats_server, stale_timeout=BOUND))
        nursery = await stack.enter_async_context(trio.open_nursery())
        http_a = await stack.enter_async_context(http_client(a.port))
        a.app.model.upsert_context({"name": "kind", "server": "https://k"}, owner=LOCAL_USER_ID)
        await a.sync()
        await b.sync()
        status = Reader(CONTROLLERS, "status")
        await status.start(nursery, a.port)
        await status.wait_count(1)
        assert broker_status(status) == "CONNECTED"
        # The flush timeout is far above the bound: a change must not be left
        # waiting for it once the link is known to be down.
        a.app.replication.flush_timeout = b.app.replication.flush_timeout = 30.0  # type: ignore[union-attr]

        assert nats_server.pid is not None
        os.kill(nats_server.pid, signal.SIGSTOP)
        try:
            frozen_at = trio.current_time()
            with trio.fail_after(BOUND + SLACK):
                for replica in (a, b):
                    while replica.broker.state is ConnectionState.CONNECTED:
                        await replica.broker.wait_state_change(ConnectionState.CONNECTED)
            assert trio.current_time() - frozen_at <= BOUND + SLACK
            await status.wait(lambda r: broker_status(r) == "UNKOWN", "BROKER UNKOWN")
            asked_at = trio.current_time()
            reply = await graphql(http_a, SAVE % "during")
            assert trio.current_time() - asked_at < BOUND  # refused at once, not timed out
            [error] = reply["errors"]
            assert error["extensions"]["code"] == "BROKER_UNAVAILABLE", error
            assert "broker unavailable, change not accepted" in error["message"]
            assert a.app.model.patterns_of(LOCAL_USER_ID) == []
        finally:
            os.kill(nats_server.pid, signal.SIGCONT)

        await status.wait(lambda r: broker_status(r) == "CONNECTED", "BROKER CONNECTED again")
        with trio.fail_after(SOON):
            await a.broker.wait_connected()
            await b.broker.wait_connected()
        reply = await graphql(http_a, SAVE % "after")
        assert "errors" not in reply, reply
        await a.sync()
        await b.sync()
        names = [[p["name"] for p in r.app.model.patterns_of(LOCAL_USER_ID)] for r in (a, b)]
        assert names == [["after"], ["after"]]
        assert a.broker.stats()["stale_detections"] == 1
        nursery.cancel_scope.cancel()
