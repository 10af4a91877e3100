"""The client against real server processes that die: SIGKILL, restart, SIGTERM, scale-out.

With a NATS broker the cursor is the shared JetStream log's sequence, valid
on every process and across restarts, so the client must resume exactly; with
the in-memory broker a restarted process does not know the cursor and must
say so (the client raises :class:`CursorLost`, or restarts when asked to).
"""

from __future__ import annotations

import trio

from meshsub_trio.client import CursorLost, Restarted, open_client
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from ._kit import EVENTS, SLACK, SOON, Notices, Reader, assert_exactly, fast, ws_url
from ._procs import post_events, processes, start_serve

__all__ = ["nats_server"]  # the fixture


async def test_sigkill_then_restart_on_the_same_port_resumes_exactly(
    nats_server: NatsServer,
) -> None:
    notices = Notices()
    expected = [f"k{n}" for n in range(20)]
    async with processes() as procs:
        first = await start_serve("--broker", nats_server.url)
        procs.append(first)
        async with (
            open_client(ws_url(first.port), on_notice=notices, **fast()) as client,
            trio.open_nursery() as nursery,
        ):
            reader = Reader()
            await reader.start(nursery, client, EVENTS, cursor="0")
            async with first.http() as http:
                await post_events(http, expected[:10])
            await reader.wait_count(10)

            killed = trio.current_time()
            first.kill()
            lost_at = await notices.wait_lost(1, timeout=SLACK)
            assert lost_at - killed <= SLACK  # the kernel closed the socket: noticed at once
            second = await start_serve("--broker", nats_server.url, port=first.port)
            procs.append(second)
            async with second.http() as http:
                await post_events(http, expected[10:])
            await reader.wait_count(len(expected))
            assert_exactly(reader, expected)
            assert client.connections == 2
            assert reader.stream is not None and reader.stream.resumes == 1
            nursery.cancel_scope.cancel()


async def test_a_restarted_memory_process_refuses_the_cursor_clearly() -> None:
    async with processes() as procs:
        first = await start_serve()
        procs.append(first)
        notices = Notices()
        async with (
            open_client(ws_url(first.port), on_notice=notices, **fast()) as client,
            trio.open_nursery() as nursery,
        ):
            strict, restarting = Reader(), Reader()
            await strict.start(nursery, client, EVENTS, cursor="0")
            await restarting.start(nursery, client, EVENTS, cursor="0", on_cursor_lost="restart")
            async with first.http() as http:
                await post_events(http, ["before"])
            await strict.wait_count(1)
            await restarting.wait_count(1)
            first.kill()
            second = await start_serve(port=first.port)
            procs.append(second)
            await strict.wait_ended()
            assert isinstance(strict.error, CursorLost)
            assert strict.error.code == "CURSOR_INVALID" and strict.error.cursor == "1"
            await notices.wait(lambda n: bool(n.of(Restarted)))
            # Restarted without a cursor: it is live again (probe until it hears one).
            async with second.http() as http:
                with trio.fail_after(SOON):
                    while len(restarting.payloads) < 2:
                        await post_events(http, ["after"])
                        with trio.move_on_after(0.1):
                            await restarting.wait_count(2)
            assert restarting.descriptions()[:2] == ["before", "after"]
            assert restarting.stream is not None and restarting.stream.restarts == 1
            nursery.cancel_scope.cancel()


async def test_sigterm_gives_1001_and_the_client_moves_to_the_next_url(
    nats_server: NatsServer,
) -> None:
    notices = Notices()
    expected = [f"t{n}" for n in range(20)]
    async with processes() as procs:
        for _ in range(2):
            procs.append(await start_serve("--broker", nats_server.url))
        first, second = procs
        urls = [ws_url(first.port), ws_url(second.port)]
        async with (
            open_client(urls, on_notice=notices, **fast()) as client,
            trio.open_nursery() as nursery,
            second.http() as http,
        ):
            reader = Reader()
            await reader.start(nursery, client, EVENTS, cursor="0")
            await post_events(http, expected[:10])
            await reader.wait_count(10)
            assert client.connected_url == urls[0]
            first.terminate()
            await notices.wait_lost(1)
            assert await first.wait() == 0
            await post_events(http, expected[10:])
            await reader.wait_count(len(expected))
            assert_exactly(reader, expected)
            ((_, lost),) = notices.lost()
            assert lost.disconnect.code == 1001 and lost.next_url == urls[1]
            assert client.connected_url == urls[1]
            nursery.cancel_scope.cancel()


async def test_scale_out_first_process_killed_mid_stream_nothing_lost_nothing_repeated(
    nats_server: NatsServer,
) -> None:
    """Two processes on one NATS; the client is given both URLs; the first is
    SIGKILLed while events keep being published through the second."""
    notices = Notices()
    expected = [f"s{n}" for n in range(150)]
    async with processes() as procs:
        for _ in range(2):
            procs.append(await start_serve("--broker", nats_server.url))
        first, second = procs
        async with (
            open_client([ws_url(p.port) for p in procs], on_notice=notices, **fast()) as client,
            trio.open_nursery() as nursery,
            second.http() as http,
        ):
            reader = Reader()
            await reader.start(nursery, client, EVENTS, cursor="0")
            publishing = trio.Event()

            async def publish_all() -> None:
                await post_events(http, expected)
                publishing.set()

            nursery.start_soon(publish_all)
            await reader.wait_count(30)
            killed = trio.current_time()
            first.kill()
            await notices.wait_lost(1, timeout=SLACK)
            await notices.wait_connected(2)
            resumed_in = trio.current_time() - killed
            with trio.fail_after(SOON):
                await publishing.wait()
            await reader.wait_count(len(expected))
            assert_exactly(reader, expected)
            assert client.connected_url == ws_url(second.port)
            assert resumed_in < 2.0, resumed_in
            nursery.cancel_scope.cancel()
