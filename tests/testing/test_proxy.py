"""The fault proxy, proven fault by fault with real sockets on 127.0.0.1.

Every wait is bounded by ``fail_after`` (must happen) or ``move_on_after`` (must
not happen); nothing sleeps to synchronise.
"""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from meshsub_trio.testing import Direction, DirectionFaults, FaultProxy, open_fault_proxy

C2S = Direction.CLIENT_TO_SERVER
S2C = Direction.SERVER_TO_CLIENT
QUIET = 0.3  # how long "nothing arrives" is watched for
SOON = 5.0  # generous bound for "arrives"


class Endpoint:
    """One end of a TCP connection, with a background reader recording what arrives."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.received = bytearray()
        self.reads: list[int] = []
        self.eof = False
        self.error: BaseException | None = None
        self._changed = trio.Event()

    async def read_forever(self) -> None:
        try:
            while data := await self.stream.receive_some(65536):
                self.received += data
                self.reads.append(len(data))
                self._notify()
            self.eof = True
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self.error = exc
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, condition: Callable[[], bool]) -> None:
        while not condition():
            await self._changed.wait()

    async def wait_bytes(self, count: int) -> None:
        await self.wait_for(lambda: len(self.received) >= count)

    async def wait_ended(self) -> None:
        await self.wait_for(lambda: self.eof or self.error is not None)

    @property
    def ended(self) -> bool:
        return self.eof or self.error is not None


@dataclass
class Harness:
    """A target server plus a proxy in front of it."""

    proxy: FaultProxy
    server_port: int
    nursery: trio.Nursery
    accepted: trio.MemoryReceiveChannel[trio.SocketStream]
    streams: list[trio.SocketStream] = field(default_factory=list)

    def watch(self, stream: trio.SocketStream) -> Endpoint:
        self.streams.append(stream)
        endpoint = Endpoint(stream)
        self.nursery.start_soon(endpoint.read_forever)
        return endpoint

    async def open_client(self, port: int | None = None) -> Endpoint:
        with trio.fail_after(SOON):
            stream = await trio.open_tcp_stream("127.0.0.1", port or self.proxy.port)
        return self.watch(stream)

    async def next_server(self) -> Endpoint:
        with trio.fail_after(SOON):
            return self.watch(await self.accepted.receive())

    async def connect(self) -> tuple[Endpoint, Endpoint]:
        client = await self.open_client()
        return client, await self.next_server()


async def _accept_forever(
    listener: trio.SocketListener, send: trio.MemorySendChannel[trio.SocketStream]
) -> None:
    while True:
        await send.send(await listener.accept())


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server_port = listener.socket.getsockname()[1]
    send, receive = trio.open_memory_channel[trio.SocketStream](16)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_accept_forever, listener, send)
        async with open_fault_proxy("127.0.0.1", server_port) as proxy:
            h = Harness(proxy, server_port, nursery, receive)
            yield h
        nursery.cancel_scope.cancel()
    for stream in h.streams:
        await stream.aclose()
    await listener.aclose()


def tasks_owned_by(owners: list[object]) -> list[trio.lowlevel.Task]:
    """Every task in this run whose top-level coroutine is a method of one of ``owners``."""
    found, stack = [], [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        frame = task.coro.cr_frame
        if frame is not None and any(frame.f_locals.get("self") is o for o in owners):
            found.append(task)
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return found


async def test_forwards_both_ways_including_half_close(harness: Harness) -> None:
    client, server = await harness.connect()
    payload = os.urandom(300_000)
    await client.stream.send_all(payload)
    await server.stream.send_all(b"world")
    with trio.fail_after(SOON):
        await server.wait_bytes(len(payload))
        await client.wait_bytes(5)
    assert bytes(server.received) == payload
    assert bytes(client.received) == b"world"
    assert harness.proxy.bytes_forwarded(C2S) == len(payload)
    assert harness.proxy.bytes_forwarded(S2C) == 5
    assert len(harness.proxy.connections) == 1

    await client.stream.send_eof()
    with trio.fail_after(SOON):
        await server.wait_ended()
    assert server.eof
    await server.stream.send_all(b"after half-close")
    with trio.fail_after(SOON):
        await client.wait_bytes(5 + 16)
    assert client.received.endswith(b"after half-close")


async def test_partition_holds_both_ways_until_heal(harness: Harness) -> None:
    client, server = await harness.connect()
    (conn,) = await harness.proxy.wait_for_connections(1)
    harness.proxy.partition()
    await client.stream.send_all(b"ping")
    await server.stream.send_all(b"pong")
    with trio.move_on_after(QUIET):
        await server.wait_for(lambda: bool(server.received or client.received))
    assert server.received == b"" and client.received == b""
    assert not (conn.closed or client.ended or server.ended)  # sockets stay open

    harness.proxy.heal()
    with trio.fail_after(SOON):
        await server.wait_bytes(4)
        await client.wait_bytes(4)
    assert (server.received, client.received) == (b"ping", b"pong")


async def test_partition_with_discard_loses_the_bytes(harness: Harness) -> None:
    client, server = await harness.connect()
    harness.proxy.partition(C2S, discard=True)
    await client.stream.send_all(b"lost")
    with trio.fail_after(SOON):
        while harness.proxy.bytes_discarded(C2S) < 4:
            await trio.testing.wait_all_tasks_blocked()
    harness.proxy.heal()
    await client.stream.send_all(b"kept")
    with trio.fail_after(SOON):
        await server.wait_bytes(4)
    assert server.received == b"kept"


@pytest.mark.parametrize("blocked", [C2S, S2C])
async def test_one_way_partition_blocks_only_that_way(
    harness: Harness, blocked: Direction
) -> None:
    client, server = await harness.connect()
    harness.proxy.partition(blocked)
    sender, receiver = (client, server) if blocked is C2S else (server, client)
    await sender.stream.send_all(b"held")
    await receiver.stream.send_all(b"flows")
    with trio.fail_after(SOON):
        await sender.wait_bytes(5)
    assert sender.received == b"flows"
    with trio.move_on_after(QUIET):
        await receiver.wait_bytes(1)
    assert receiver.received == b""

    harness.proxy.heal(blocked)
    with trio.fail_after(SOON):
        await receiver.wait_bytes(4)
    assert receiver.received == b"held"


async def test_reset_aborts_both_sides_with_rst(harness: Harness) -> None:
    client, server = await harness.connect()
    (conn,) = await harness.proxy.wait_for_connections(1)
    conn.reset()
    with trio.fail_after(SOON):
        await client.wait_ended()
        await server.wait_ended()
        await conn.wait_closed()
    for end in (client, server):
        assert isinstance(end.error, trio.BrokenResourceError)
        assert isinstance(end.error.__cause__, ConnectionResetError)
    assert harness.proxy.connections == []


async def test_close_sends_fin_to_both_sides(harness: Harness) -> None:
    client, server = await harness.connect()
    await harness.proxy.wait_for_connections(1)
    harness.proxy.close()
    with trio.fail_after(SOON):
        await client.wait_ended()
        await server.wait_ended()
    assert client.eof and server.eof
    assert client.error is None and server.error is None


@pytest.mark.parametrize("direction", [C2S, S2C])
async def test_latency_delays_every_chunk_at_least_the_configured_time(
    harness: Harness, direction: Direction
) -> None:
    client, server = await harness.connect()
    sender, receiver = (client, server) if direction is C2S else (server, client)
    harness.proxy.set_latency(0.2, direction=direction)
    start = trio.current_time()
    await sender.stream.send_all(b"x")
    with trio.fail_after(SOON):
        await receiver.wait_bytes(1)
    assert trio.current_time() - start >= 0.2


async def test_jitter_preserves_order(harness: Harness) -> None:
    client, server = await harness.connect()
    harness.proxy.set_latency(0.01, jitter=0.05)
    expected = b"".join(b"%03d;" % i for i in range(60))
    for i in range(60):
        await client.stream.send_all(b"%03d;" % i)
    with trio.fail_after(SOON):
        await server.wait_bytes(len(expected))
    assert bytes(server.received) == expected


async def test_bandwidth_cap_bounds_throughput(harness: Harness) -> None:
    client, server = await harness.connect()
    harness.proxy.set_bandwidth(100_000, direction=C2S)
    payload = os.urandom(30_000)
    start = trio.current_time()
    await client.stream.send_all(payload)
    with trio.fail_after(SOON):
        await server.wait_bytes(len(payload))
    # Paced in 2 kB slices, so at least 28 kB must wait for the cap: >= 0.28 s.
    assert trio.current_time() - start >= 0.25
    assert bytes(server.received) == payload


async def test_fragmenting_delivers_same_bytes_in_many_small_reads(harness: Harness) -> None:
    client, server = await harness.connect()
    harness.proxy.fragment(1)
    payload = bytes(range(64))
    await client.stream.send_all(payload)
    with trio.fail_after(SOON):
        await server.wait_bytes(len(payload))
    assert bytes(server.received) == payload
    assert len(server.reads) >= 16  # unfragmented, 64 bytes arrive in one read


async def test_stop_reading_stalls_the_servers_send_until_resumed(harness: Harness) -> None:
    client, server = await harness.connect()
    server.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    harness.proxy.stop_reading()  # server -> client
    payload = os.urandom(1024 * 1024)
    sent = trio.Event()

    async def send_payload() -> None:
        await server.stream.send_all(payload)
        sent.set()

    harness.nursery.start_soon(send_payload)
    with trio.move_on_after(0.5):
        await sent.wait()
    assert not sent.is_set(), "the server's send_all should stall"
    assert len(client.received) < len(payload)

    harness.proxy.resume_reading()
    with trio.fail_after(10):
        await sent.wait()
        await client.wait_bytes(len(payload))
    assert bytes(client.received) == payload


async def test_small_receive_buffer_makes_the_stall_quick(harness: Harness) -> None:
    client, server = await harness.connect()
    server.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    harness.proxy.stop_reading()
    accepted_by_kernel = 0
    with trio.fail_after(SOON):
        while True:
            with trio.move_on_after(0.2) as stalled:
                accepted_by_kernel += await server.stream.socket.send(b"x" * 4096)
            if stalled.cancelled_caught:
                break
    # ~40 kB with the proxy's 16 kB SO_RCVBUF; ~170 kB with Linux defaults.
    assert accepted_by_kernel < 100_000
    harness.proxy.resume_reading()
    with trio.fail_after(SOON):
        await client.wait_bytes(accepted_by_kernel)


async def test_proxy_faults_apply_to_future_connections(harness: Harness) -> None:
    harness.proxy.partition()
    client = await harness.open_client()
    await client.stream.send_all(b"early")
    (conn,) = await harness.proxy.wait_for_connections(1)
    with trio.move_on_after(QUIET):
        await harness.accepted.receive()
        pytest.fail("the server must not be reached during a partition")
    assert not conn.established

    harness.proxy.heal()
    server = await harness.next_server()
    with trio.fail_after(SOON):
        await server.wait_bytes(5)
    assert server.received == b"early"


async def test_connection_fault_affects_only_that_connection(harness: Harness) -> None:
    client1, server1 = await harness.connect()
    client2, server2 = await harness.connect()
    conn1, _ = await harness.proxy.wait_for_connections(2)
    conn1.partition()
    await client1.stream.send_all(b"one")
    await client2.stream.send_all(b"two")
    with trio.fail_after(SOON):
        await server2.wait_bytes(3)
    with trio.move_on_after(QUIET):
        await server1.wait_bytes(1)
    assert (server1.received, server2.received) == (b"", b"two")
    conn1.heal()
    with trio.fail_after(SOON):
        await server1.wait_bytes(3)


async def test_clear_faults_restores_a_clean_link(harness: Harness) -> None:
    client, server = await harness.connect()
    (conn,) = await harness.proxy.wait_for_connections(1)
    harness.proxy.partition("client_to_server")  # plain strings work too
    harness.proxy.set_latency(0.05)
    harness.proxy.fragment(3)
    assert conn.faults(C2S).partitioned and conn.faults(S2C).max_chunk == 3
    await client.stream.send_all(b"queued")
    harness.proxy.clear_faults()
    assert harness.proxy.faults(C2S) == conn.faults(C2S) == DirectionFaults()
    assert conn.faults(S2C) == DirectionFaults()
    with trio.fail_after(SOON):
        await server.wait_bytes(6)
    assert server.received == b"queued"
    with pytest.raises(ValueError):
        conn.faults(Direction.BOTH)


async def test_unreachable_target_resets_the_client(harness: Harness) -> None:
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    dead_port = listener.socket.getsockname()[1]
    await listener.aclose()
    async with open_fault_proxy("127.0.0.1", dead_port) as proxy:
        client = await harness.open_client(proxy.port)
        (conn,) = await proxy.wait_for_connections(1)
        with trio.fail_after(SOON):
            await client.wait_ended()
        assert isinstance(conn.error, ConnectionRefusedError)
        assert isinstance(client.error, trio.BrokenResourceError)


async def test_closing_the_proxy_leaves_no_connection_and_no_task(harness: Harness) -> None:
    proxy = FaultProxy("127.0.0.1", harness.server_port)
    port = await harness.nursery.start(proxy.run)
    client = await harness.open_client(port)
    server = await harness.next_server()
    owners: list[object] = [proxy, *await proxy.wait_for_connections(1)]
    assert len(proxy.connections) == 1
    await trio.testing.wait_all_tasks_blocked()
    assert len(tasks_owned_by(owners)) >= 5  # run, serve, 2 x (reader + writer)

    with trio.fail_after(SOON):
        await proxy.aclose()
        await client.wait_ended()
        await server.wait_ended()
    assert proxy.connections == []
    assert tasks_owned_by(owners) == []
    with pytest.raises(OSError), trio.fail_after(SOON):
        await trio.open_tcp_stream("127.0.0.1", port)
