"""Every refusal reaches the change it refuses, and only that change's caller.

On a real nats-server whose MESHERY stream refuses messages (full with
``discard: new``, or over ``max_msg_size``):

* more refusals than the broker ever kept at once (it kept the newest
  1,024) are all taken back, by the sweep and by a flush: none stays
  applied on this replica alone, and nothing stays pending;
* two mutations flushing at once are each told about their own change: the
  one the log refused gets BROKER_UNAVAILABLE, the one it stored does not.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from typing import Any

import pytest
import trio
import trio.testing
from nats.js.api import DiscardPolicy

from meshsub_trio.meshery import LOCAL_USER_ID, BrokerUnavailable
from meshsub_trio.testing import NatsServer

from ._kit import SOON, Replica, open_replica
from .test_refused_write_rollback import state, stream_config

#: More refusals than the broker's old bounded list held (1,024).
MANY = 1_100


async def fill_the_stream(replica: Replica) -> None:
    """From now on the log refuses every new message (a full stream)."""
    js: Any = replica.broker._js
    info = await replica.broker._aio(js.stream_info)("MESHERY")
    await stream_config(replica, max_msgs=info.state.messages, discard=DiscardPolicy.NEW)


async def answered(replica: Replica) -> None:
    """Until the log answered every change published so far (stored or refused)."""
    outbox = replica.broker._outbox
    newest = outbox._tickets
    with trio.fail_after(SOON):
        while outbox.settled_through < newest:
            await outbox._progress.wait()


@pytest.mark.parametrize("taken_back_by", ["sweep", "flush"])
async def test_more_refusals_than_were_ever_kept_are_all_taken_back(
    nats_server: NatsServer, taken_back_by: str
) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_replica(nats_server))
        b = await stack.enter_async_context(open_replica(nats_server))
        bus = a.app.replication
        assert bus is not None
        await a.sync()
        await b.sync()
        before = state(b)
        await fill_the_stream(a)

        model = a.app.model
        for n in range(MANY):  # a writer that does not flush (a feed, the simulator)
            model.save_pattern(LOCAL_USER_ID, {"id": "p", "name": f"v{n}", "pattern_file": "x"})
        assert bus.stats()["pending"] == MANY
        if taken_back_by == "sweep":
            await answered(a)
            assert bus._own.sweep_once(a.broker, cutoff=-math.inf) == MANY
        else:
            with pytest.raises(BrokerUnavailable, match="did not store it"):
                await model.flush()
        assert bus.stats()["pending"] == 0 and bus.stats()["rolled_back"] == MANY
        assert model.patterns_of(LOCAL_USER_ID) == []
        assert state(a) == before


async def test_each_mutation_hears_only_of_its_own_changes(nats_server: NatsServer) -> None:
    async with AsyncExitStack() as stack:
        a = await stack.enter_async_context(open_replica(nats_server))
        b = await stack.enter_async_context(open_replica(nats_server))
        await a.sync()
        await stream_config(a, max_msg_size=2048)
        model = a.app.model
        outcomes: dict[str, str] = {}
        both_committed = trio.Event()

        async def mutation(name: str, pattern_file: str, task_status: Any) -> None:
            model.save_pattern(
                LOCAL_USER_ID, {"id": name, "name": name, "pattern_file": pattern_file}
            )
            task_status.started()
            await both_committed.wait()  # so that both flush while both are in flight
            try:
                await model.flush()
                outcomes[name] = "saved"
            except BrokerUnavailable as error:
                outcomes[name] = f"refused: {error}"

        with trio.fail_after(SOON):
            async with trio.open_nursery() as nursery:
                await nursery.start(mutation, "big", "x" * 4096)  # over max_msg_size
                await nursery.start(mutation, "small", "y")
                both_committed.set()
        assert outcomes["small"] == "saved", outcomes
        assert outcomes["big"].startswith("refused: "), outcomes
        assert [p["id"] for p in model.patterns_of(LOCAL_USER_ID)] == ["small"]
        await a.sync()
        await b.sync()
        assert state(a) == state(b)


def test_what_the_bus_keeps_of_the_logs_answers_stays_bounded() -> None:
    """Answers lost with a connection leave no trace for long: the sweep after
    the one that saw a later ticket answered forgets them. A refusal of a
    change no longer pending is kept nowhere."""
    from .test_rollback_convergence import Replica as FakeReplica

    replica = FakeReplica("r0")
    confirms = replica.bus._confirms
    assert confirms is not None
    for n in range(3):
        replica.model.save_pattern(LOCAL_USER_ID, {"id": f"p{n}", "name": "n", "pattern_file": "x"})
    lost, _ = replica.shared.outbox.popleft()  # its answer never comes
    assert replica.shared.next_out(refuse=True) is None
    assert replica.shared.next_out(refuse=False) is not None
    assert list(confirms._unanswered) == [lost]
    assert confirms.sweep_once(-math.inf) == 1  # the refused one; the lost one is not yet given up
    assert list(confirms._unanswered) == [lost]
    confirms.sweep_once(-math.inf)
    assert confirms._unanswered == {}
    assert all(change.refused is None for change in replica.bus._own.pending)


def test_a_task_started_after_a_commit_hears_only_of_its_own_changes() -> None:
    """Tasks inherit their parent's context, flight included: a child (a
    connection handler started after a commit at start-up) must not add to,
    nor be told of, its parent's changes."""
    from .test_rollback_convergence import Replica as FakeReplica

    replica = FakeReplica("r0")
    outcomes: list[str] = []

    async def flush() -> None:
        try:
            await replica.bus.flush()
            outcomes.append("saved")
        except BrokerUnavailable as error:
            outcomes.append(type(error).__name__)

    async def child() -> None:
        replica.model.save_pattern(LOCAL_USER_ID, {"id": "c", "name": "n", "pattern_file": "x"})
        assert replica.shared.next_out(refuse=True) is None  # the parent's
        assert replica.shared.next_out(refuse=False) is not None  # the child's
        await flush()
        replica.model.save_pattern(LOCAL_USER_ID, {"id": "d", "name": "n", "pattern_file": "x"})
        await flush()  # its own change, never answered: not "saved"

    async def parent() -> None:
        replica.model.save_pattern(LOCAL_USER_ID, {"id": "p", "name": "n", "pattern_file": "x"})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)  # commits nothing (a batch whose first message is bad)
            nursery.start_soon(child)

    trio.run(parent, clock=trio.testing.MockClock(autojump_threshold=0))
    assert outcomes == ["saved", "saved", "ChangeUnconfirmed"]
    # Left: the child's stored change, until its echo. The parent's refused one
    # went with the child's last flush (a refused change goes, whoever flushes).
    assert [change.ticket for change in replica.bus._own.pending] == [2]
