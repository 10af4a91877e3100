"""A log reader whose start meets an outage waits for the link, then starts from its cursor.

Starting a reader is two JetStream requests (the stream's bounds, then the
consumer). When the server goes away in between, or before the answer comes
back, the answer is lost with the link: the reader must not fail with
nats-py's timeout but start once the link is back, from the cursor it asked
for, with nothing lost and nothing twice. A request JetStream refuses (the
stream cannot be created) still fails, at once and in the broker's words.

The server really freezes (SIGSTOP: the broker's stale probe drops the link)
or dies (SIGKILL) while the reader's first request is unanswered.
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import trio
import trio.testing

from meshsub_trio.brokers import ConnectionState, Delivery, NatsBroker
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import SOON, connect, take, wait_for_state

__all__ = ["nats_server"]

TOPIC = "meshery.events.user-1"
CONNECTED = ConnectionState.CONNECTED
RECONNECTING = ConnectionState.RECONNECTING


async def publish_stored(broker: NatsBroker, phase: str, count: int) -> list[dict[str, Any]]:
    """Publish *count* messages and wait until the log stored them all."""
    messages = [{"phase": phase, "n": n} for n in range(count)]
    ticket = 0
    for message in messages:
        ticket = broker.publish(TOPIC, message, stored=True)
    with trio.fail_after(SOON):
        await broker.wait_stored(ticket)
    return messages


async def a_cursor(publisher: NatsBroker, reader: NatsBroker) -> tuple[int, list[Any]]:
    """Five logged messages; a cursor after the second (as a reader saw it) and
    the three messages after it."""
    async with reader.subscribe_log(TOPIC) as log:
        sent = await publish_stored(publisher, "before", 5)
        seen: list[Delivery[Any]] = await take(log, 5)
    assert [d.message for d in seen] == sent
    return seen[1].seq, sent[2:]


def all_threads_stopped(pid: int) -> bool:
    """Whether every thread of *pid* is stopped (state ``T`` in ``/proc``)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as stat:
            if stat.read().rsplit(")", 1)[1].split()[0] not in ("T", "t"):
                return False
    return True


async def freeze(server: NatsServer) -> None:
    """SIGSTOP the server and wait until it is really stopped.

    ``kill`` returns before every thread has stopped: a request sent right
    after it was seen answered (about 1 in 20 tries)."""
    assert server.pid is not None
    os.kill(server.pid, signal.SIGSTOP)
    with trio.fail_after(SOON):
        while not all_threads_stopped(server.pid):
            await trio.sleep(0.001)  # polled: a process stopping signals nothing


def thaw(server: NatsServer) -> None:
    if server.pid is not None:
        os.kill(server.pid, signal.SIGCONT)


class Reader:
    """A log reader from *cursor*: ready once started, then takes *count* entries."""

    def __init__(self, broker: NatsBroker, cursor: int, count: int) -> None:
        self.broker = broker
        self.cursor = cursor
        self.count = count
        self.ready = trio.Event()
        self.got: list[Delivery[Any]] = []

    async def run(self) -> None:
        async with self.broker.subscribe_log(TOPIC, after=self.cursor, capacity=100) as log:
            self.ready.set()
            self.got.extend(await take(log, self.count))


@pytest.mark.parametrize("outage", ["frozen", "killed"])
async def test_a_reader_starting_as_the_link_drops_starts_once_it_is_back(
    nats_server: NatsServer, outage: str
) -> None:
    async with (
        # The publisher's probe is off: its link is not what is under test.
        connect(nats_server, stale_timeout=0) as a,
        # The reader's probe is what notices a frozen server (it drops the link).
        connect(nats_server, stale_timeout=1.0) as b,
    ):
        cursor, before = await a_cursor(a, b)
        reader = Reader(b, cursor, len(before) + 3)

        try:
            await freeze(nats_server)  # nothing the reader asks from now on is answered
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.run)
                await trio.testing.wait_all_tasks_blocked()  # its first request is out
                if outage == "killed":
                    await nats_server.stop(kill=True)  # SIGKILL ends a stopped process too
                await wait_for_state(b, RECONNECTING)  # the link dropped under the start
                assert not reader.ready.is_set()
                if outage == "killed":
                    await nats_server.start()
                else:
                    thaw(nats_server)
                await wait_for_state(b, CONNECTED)
                with trio.fail_after(SOON):
                    await reader.ready.wait()
                after = await publish_stored(a, "after", 3)
        finally:
            thaw(nats_server)
        assert b.stats()["log_start_retries"] >= 1  # the first attempt was lost with the link
    assert [d.message for d in reader.got] == before + after
    seqs = [d.seq for d in reader.got]
    assert seqs == sorted(set(seqs)) and seqs[0] > cursor


async def test_a_reader_outlasts_requests_a_silent_server_never_answers(
    nats_server: NatsServer,
) -> None:
    """No probe: the link looks up all along, and each request times out;
    the reader asks again (and again) until the server answers."""
    async with (
        connect(nats_server, stale_timeout=0) as a,
        connect(nats_server, stale_timeout=0) as b,
    ):
        cursor, before = await a_cursor(a, b)
        reader = Reader(b, cursor, len(before) + 3)

        try:
            await freeze(nats_server)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(reader.run)
                with trio.fail_after(SOON):
                    while not b.stats()["log_start_retries"]:
                        await trio.sleep(0.05)  # polled: a request timing out tells Trio nothing
                assert b.state is CONNECTED and not reader.ready.is_set()
                thaw(nats_server)
                with trio.fail_after(SOON):
                    await reader.ready.wait()
                after = await publish_stored(a, "after", 3)
        finally:
            thaw(nats_server)
    assert [d.message for d in reader.got] == before + after


async def test_a_reader_waiting_for_the_link_ends_with_its_cancel_scope(
    nats_server: NatsServer,
) -> None:
    async with connect(nats_server, stale_timeout=0) as b:
        try:
            await freeze(nats_server)  # the link looks up: the reader's request goes unanswered
            with trio.CancelScope() as scope:
                async with trio.open_nursery() as nursery:

                    async def reader() -> None:
                        async with b.subscribe_log(TOPIC):
                            raise AssertionError("started against a frozen server")

                    nursery.start_soon(reader)
                    await trio.testing.wait_all_tasks_blocked()
                    assert b.stats()["log_starting"] == 1
                    scope.cancel()
            assert scope.cancelled_caught
            assert b.stats()["log_starting"] == 0 and b.stats()["log_readers"] == 0
        finally:
            thaw(nats_server)
        # Still usable once the server answers again.
        async with b.subscribe_log(TOPIC) as log:
            b.publish(TOPIC, {"n": 1})
            assert [d.message for d in await take(log, 1)] == [{"n": 1}]


async def test_a_reader_recreates_a_missing_stream(nats_server: NatsServer) -> None:
    async with connect(nats_server) as b:
        await b._aio(b._js.delete_stream)("MESHERY")
        async with b.subscribe_log(TOPIC) as log:
            b.publish(TOPIC, {"n": 1})
            assert [d.message for d in await take(log, 1)] == [{"n": 1}]


async def test_a_stream_that_cannot_be_created_fails_the_reader_at_once(
    nats_server: NatsServer,
) -> None:
    async with connect(nats_server) as b:
        js: Any = b._js
        await b._aio(js.delete_stream)("MESHERY")
        # Another stream holds the subjects: JetStream refuses to create ours.
        await b._aio(js.add_stream)(name="SQUATTER", subjects=["meshery.>"])
        with trio.fail_after(SOON), pytest.raises(RuntimeError, match="MESHERY") as info:
            async with b.subscribe_log(TOPIC):
                raise AssertionError("started without its stream")
        assert "nats" not in type(info.value).__module__
        assert "subjects overlap" in str(info.value)
        assert b.stats()["log_starting"] == 0
