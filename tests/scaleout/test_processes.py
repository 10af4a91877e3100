"""Three real ``meshsub-trio serve --broker nats://...`` processes behave as one server.

Clients are spread over the processes and subscribe to events from the start
of the log (cursor "0"), so no test waits for a subscription to be ready:
whatever a reader attached late to, it replays. Events are POSTed to every
process (a 201 means the event reached NATS); each reader must get every
event once, all readers in one order.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import trio

from meshsub_trio.testing import NatsServer

from ._kit import (
    CONTEXTS,
    CONTROLLERS,
    EVENTS,
    Reader,
    check_events,
    graphql,
    http_client,
    open_processes,
    post_event,
    start_process,
)
from .test_replicas import broker_status

ADD_CONTEXT = """mutation { addK8sContext(input: {name: "kind", server: "https://kind"}) { id } }"""


async def publish_round(https: list, published: list[str], rounds: range) -> None:
    for n in rounds:
        for index, http in enumerate(https):
            if http is None:
                continue
            response = await post_event(http, f"p{index}-{n}")
            assert response.status_code == 201, response.text
            published.append(f"p{index}-{n}")


async def test_a_killed_process_s_clients_resume_elsewhere(nats_server: NatsServer) -> None:
    async with (
        open_processes(3, "--broker", nats_server.url, "--no-simulator") as procs,
        AsyncExitStack() as stack,
        trio.open_nursery() as nursery,
    ):
        https = [await stack.enter_async_context(http_client(p.port)) for p in procs]
        readers = [Reader(EVENTS, f"on-p{i // 2}-{i % 2}") for i in range(6)]
        for index, reader in enumerate(readers):
            await reader.start(nursery, procs[index // 2].port, cursor="0")
        published: list[str] = []
        await publish_round(https, published, range(10))
        for reader in readers:
            await reader.wait_count(len(published))

        # p1 and p2 keep publishing while p0 is SIGKILLed mid-stream.
        survivors = [None, https[1], https[2]]
        async with trio.open_nursery() as publishing:
            publishing.start_soon(publish_round, survivors, published, range(10, 40))
            await readers[2].wait_count(len(published) + 6)
            procs[0].kill()
            for victim in readers[:2]:
                await victim.wait_closed()
            # Events the victims cannot have seen: they must come from the replay.
            await readers[2].wait_count(max(len(v.items) for v in readers[:2]) + 4)
            missed = len(readers[2].items) - max(len(v.items) for v in readers[:2])
            for index, victim in enumerate(readers[:2]):
                # Reconnect elsewhere (as a load balancer would) and resume.
                await victim.start(nursery, procs[1 + index].port, cursor=victim.cursor)
        for reader in readers:
            await reader.wait_count(len(published))
        check_events(readers, published)
        assert all(r.connections == 2 for r in readers[:2]) and missed >= 4
        nursery.cancel_scope.cancel()


async def test_processes_ride_out_a_nats_restart(nats_server: NatsServer) -> None:
    async with (
        open_processes(3, "--broker", nats_server.url, "--no-simulator") as procs,
        AsyncExitStack() as stack,
        trio.open_nursery() as nursery,
    ):
        https = [await stack.enter_async_context(http_client(p.port)) for p in procs]
        reply = await graphql(https[1], ADD_CONTEXT)
        assert "errors" not in reply, reply
        statuses = [Reader(CONTROLLERS, f"status-p{i}") for i in range(3)]
        readers = [Reader(EVENTS, f"events-p{i}") for i in range(3)]
        for proc, status, reader in zip(procs, statuses, readers, strict=True):
            await status.start(nursery, proc.port)
            await reader.start(nursery, proc.port, cursor="0")
        for status in statuses:  # the context reached every process, its BROKER connected
            await status.wait(lambda r: broker_status(r) == "CONNECTED", "BROKER CONNECTED")
        published: list[str] = []
        await publish_round(https, published, range(5))
        for reader in readers:
            await reader.wait_count(len(published))

        await nats_server.stop()
        for status in statuses:
            await status.wait(lambda r: broker_status(r) == "UNKOWN", "BROKER not connected")
        # While the log is out of reach a change is refused, not queued: an
        # answer of 201 must mean the log has it.
        refused = await post_event(https[2], "p2-refused")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert "the shared broker is reconnecting" in refused.text
        await nats_server.start()
        for status in statuses:
            await status.wait(lambda r: broker_status(r) == "CONNECTED", "BROKER CONNECTED again")
        await publish_round(https, published, range(8, 12))
        for reader in readers:
            await reader.wait_count(len(published))
        check_events(readers, published)
        assert all("p2-refused" not in str(r.items) for r in readers)
        assert all(not r.closed for r in readers + statuses)  # nobody was disconnected

        # A process started now replays the log: same state, same events.
        late = await start_process("--broker", nats_server.url, "--no-simulator")
        try:
            contexts = [Reader(CONTEXTS, "contexts-p0"), Reader(CONTEXTS, "contexts-late")]
            await contexts[0].start(nursery, procs[0].port)
            await contexts[1].start(nursery, late.port)
            for reader in contexts:
                await reader.wait_count(1)
            assert contexts[0].data()[0] == contexts[1].data()[0]
            assert contexts[1].data()[0]["subscribeK8sContext"]["total_count"] == 1
            replay = Reader(EVENTS, "events-late")
            await replay.start(nursery, late.port, cursor="0")
            await replay.wait_count(len(published))
            check_events([*readers, replay], published)
        finally:
            late.kill()
            await late.process.wait()
            if late.process.stdout is not None:
                await late.process.stdout.aclose()
        nursery.cancel_scope.cancel()
