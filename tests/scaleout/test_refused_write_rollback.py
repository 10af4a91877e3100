"""A change the log refuses is taken back on the replica that made it.

A replica applies its own blind writes at once (read-your-writes) and
publishes them; when JetStream then refuses one (a real stream limit here:
a message over ``max_msg_size``, a full stream with ``discard: new``) or
does not answer in time (a SIGSTOPped server), the caller gets
BROKER_UNAVAILABLE and no replica may keep the change: reading back from
the replica that made it must give what every other replica gives.
"""

from __future__ import annotations

import os
import signal
from contextlib import AsyncExitStack
from dataclasses import replace
from typing import Any

import orjson
import trio

from meshsub_trio.meshery import LOCAL_USER_ID
from meshsub_trio.testing import NatsServer

from ._kit import SOON, Replica, graphql, http_client, open_replica

SAVE = """mutation($id: ID, $name: String!, $file: String!) {
  savePattern(input: {id: $id, name: $name, pattern_file: $file}) { id name } }"""
DELETE = "mutation($id: ID!) { deletePattern(id: $id) }"
ADD_CONTEXT = """mutation($name: String!) {
  addK8sContext(input: {name: $name, server: "https://k", connection_id: "conn-x"}) { id } }"""
FETCH = """{ fetchPatterns(selector: {page: "0", pageSize: "50"}) {
  patterns { id name pattern_file } } }"""


def state(replica: Replica) -> tuple[list[bytes], int]:
    """Everything the replica's model holds (as the messages that rebuild it) and
    what it charges the user for it: equal on replicas that agree."""
    model = replica.app.model
    messages = sorted(orjson.dumps(m, option=orjson.OPT_SORT_KEYS) for m in model.state_messages())
    return messages, model.stored_bytes(LOCAL_USER_ID)


async def stream_config(replica: Replica, **changes: Any) -> None:
    """Change the MESHERY stream's limits on the server (a real JetStream refusal)."""
    js: Any = replica.broker._js
    info = await replica.broker._aio(js.stream_info)("MESHERY")
    await replica.broker._aio(js.update_stream)(replace(info.config, **changes))


async def fetched(http: Any) -> list[dict[str, Any]]:
    reply = await graphql(http, FETCH)
    assert "errors" not in reply, reply
    return sorted(reply["data"]["fetchPatterns"]["patterns"], key=lambda p: p["id"])


def refused(reply: dict[str, Any], why: str) -> None:
    [error] = reply["errors"]
    assert error["extensions"]["code"] == "BROKER_UNAVAILABLE", error
    assert why in error["message"], error


async def test_an_update_the_log_refuses_leaves_the_logged_version_everywhere(
    nats_server: NatsServer,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_replica(nats_server))
        b = await stack.enter_async_context(open_replica(nats_server))
        http_a = await stack.enter_async_context(http_client(a.port))
        http_b = await stack.enter_async_context(http_client(b.port))
        saved = await graphql(http_a, SAVE, id="p", name="small", file="y")
        assert "errors" not in saved, saved
        await a.sync()
        await b.sync()
        before = await fetched(http_b)
        assert [p["name"] for p in before] == ["small"]

        await stream_config(a, max_msg_size=2048)
        big = await graphql(http_a, SAVE, id="p", name="big", file="x" * 4096)
        refused(big, "the log did not store it")
        new = await graphql(http_a, SAVE, id="q", name="new", file="x" * 4096)
        refused(new, "the log did not store it")

        # Read back from the worker that made the changes, as its clients do.
        assert await fetched(http_a) == before
        await a.sync()
        await b.sync()
        assert await fetched(http_a) == await fetched(http_b) == before
        assert state(a) == state(b)
        assert a.app.replication is not None
        assert a.app.replication.stats()["pending"] == 0


async def test_a_full_log_takes_back_a_delete_and_a_change_of_many_steps(
    nats_server: NatsServer,
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_replica(nats_server))
        b = await stack.enter_async_context(open_replica(nats_server))
        http_a = await stack.enter_async_context(http_client(a.port))
        saved = await graphql(http_a, SAVE, id="p", name="kept", file="y")
        assert "errors" not in saved, saved
        await a.sync()
        await b.sync()
        before = state(b)

        js: Any = a.broker._js
        info = await a.broker._aio(js.stream_info)("MESHERY")
        from nats.js.api import DiscardPolicy

        await stream_config(a, max_msgs=info.state.messages, discard=DiscardPolicy.NEW)
        refused(await graphql(http_a, DELETE, id="p"), "the log did not store it")
        # A context is several changes (the context, then its controllers).
        refused(await graphql(http_a, ADD_CONTEXT, name="kind"), "the log did not store it")
        assert [p["name"] for p in await fetched(http_a)] == ["kept"]
        assert a.app.model.contexts() == [] and a.app.model.controller_items() == []
        assert state(a) == before

        await stream_config(a, max_msgs=-1, discard=DiscardPolicy.OLD)
        added = await graphql(http_a, ADD_CONTEXT, name="kind")  # the log takes changes again
        assert "errors" not in added, added
        await a.sync()
        await b.sync()
        assert state(a) == state(b) != before


async def test_an_unconfirmed_change_is_not_kept_while_the_log_is_silent(
    nats_server: NatsServer,
) -> None:
    # The link stays "up" (the silence probe is off here): the change goes
    # out, and no answer comes within the flush timeout.
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_replica(nats_server, stale_timeout=0))
        b = await stack.enter_async_context(open_replica(nats_server, stale_timeout=0))
        http_a = await stack.enter_async_context(http_client(a.port))
        await a.sync()
        await b.sync()
        assert a.app.replication is not None
        a.app.replication.flush_timeout = 0.5
        assert nats_server.pid is not None
        os.kill(nats_server.pid, signal.SIGSTOP)
        try:
            reply = await graphql(http_a, SAVE, id="u", name="unconfirmed", file="y")
            refused(reply, "change not confirmed by the log")
            assert await fetched(http_a) == []
            assert state(a) == state(b)
        finally:
            os.kill(nats_server.pid, signal.SIGCONT)
        # It may still reach the log now; if it does, every replica applies it.
        with trio.fail_after(SOON):
            await a.broker.wait_connected()
        await a.sync()
        await b.sync()
        assert state(a) == state(b)
        assert a.app.replication.stats()["pending"] == 0
