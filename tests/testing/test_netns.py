"""Real partitions between two network namespaces (needs root and iproute2; CI has both).

Traffic only ever flows between addresses inside the namespaces the tests create.
Stalls are shown with ``move_on_after``; recoveries are bounded by ``fail_after``
(generous, because they wait for a TCP retransmission timer).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import trio

from meshsub_trio.testing import DropMethod, Namespace, NetnsError, NetnsPair, _netns

QUIET = 0.5  # how long a stall is watched for
RECOVER = 15.0  # bound for TCP retransmission to get data through after a heal

_ECHO_SERVER = r"""
import socket, sys, threading
server = socket.create_server((sys.argv[1], 0))
print(server.getsockname()[1], flush=True)
def echo(conn):
    with conn:
        while data := conn.recv(65536):
            conn.sendall(data)
while True:
    conn, _ = server.accept()
    threading.Thread(target=echo, args=(conn,), daemon=True).start()
"""


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


async def connect_from(ns: Namespace, address: str, port: int) -> trio.SocketStream:
    """Open a TCP connection whose socket lives in ``ns``."""
    sock = trio.socket.from_stdlib_socket(ns.socket())
    try:
        await sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return trio.SocketStream(sock)


async def read_into(stream: trio.SocketStream, buffer: bytearray, count: int) -> None:
    """Read until ``buffer`` holds ``count`` bytes; the buffer keeps partial reads."""
    while len(buffer) < count:
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError("peer closed")
        buffer += data


async def start_echo_server(ns: Namespace) -> tuple[subprocess.Popen[str], int]:
    process = ns.popen(
        [sys.executable, "-c", _ECHO_SERVER, ns.address], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    with trio.fail_after(10):
        line = await trio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True)
    return process, int(line)


async def assert_connect_does_not_succeed(ns: Namespace, address: str, port: int) -> None:
    with trio.move_on_after(QUIET):
        try:
            stream = await connect_from(ns, address, port)
        except OSError:
            return  # e.g. "network unreachable" while the link is down
        await stream.aclose()
        pytest.fail("connected across a cut link")


def test_pair_is_isolated_and_cleaned_up_even_after_an_error() -> None:
    with pytest.raises(RuntimeError, match="boom"), NetnsPair() as pair:
        assert {pair.a.name, pair.b.name} <= netns_names()
        assert pair.a.address in pair.a.run("ip", "-o", "addr").stdout
        assert pair.b.address in pair.b.run("ip", "-o", "addr").stdout
        host = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True, check=True)
        assert pair.a.address not in host.stdout  # exists only inside the namespaces
        assert pair.a.interface not in host.stdout
        raise RuntimeError("boom")
    assert not {pair.a.name, pair.b.name} & netns_names()


def test_failed_setup_removes_what_it_created(monkeypatch: pytest.MonkeyPatch) -> None:
    real_run = _netns._run

    def failing_run(args: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        if "veth" in args:
            raise NetnsError("simulated veth failure")
        return real_run(args, check=check)

    monkeypatch.setattr(_netns, "_run", failing_run)
    pair = NetnsPair()
    with pytest.raises(NetnsError, match="simulated"), pair:
        pytest.fail("the block must not run when setup failed")
    assert not {pair.a.name, pair.b.name} & netns_names()


@pytest.mark.parametrize("method", ["auto", "tbf"])  # auto is netem where the kernel has it
async def test_drop_stalls_tcp_and_heal_restores_it(method: DropMethod) -> None:
    with NetnsPair(drop_method=method) as pair:
        server, port = await start_echo_server(pair.a)
        with trio.fail_after(10):
            stream = await connect_from(pair.b, pair.a.address, port)
            echoed = bytearray()
            await stream.send_all(b"before")
            await read_into(stream, echoed, 6)
        assert echoed == b"before"

        pair.drop()
        assert pair.drop_method in (("netem", "tbf") if method == "auto" else (method,))
        await stream.send_all(b"during")
        with trio.move_on_after(QUIET):
            await read_into(stream, echoed, 12)
        assert echoed == b"before", "data crossed a dropped link"
        await assert_connect_does_not_succeed(pair.b, pair.a.address, port)

        pair.heal()
        with trio.fail_after(RECOVER):
            await read_into(stream, echoed, 12)  # TCP retransmits what was lost
            fresh = await connect_from(pair.b, pair.a.address, port)
        assert echoed == b"beforeduring"
        await fresh.aclose()
        await stream.aclose()
    assert server.poll() is not None, "the pair must kill the processes it started"


async def test_link_down_stalls_tcp_and_link_up_restores_it() -> None:
    with NetnsPair() as pair:
        _, port = await start_echo_server(pair.a)
        with trio.fail_after(10):
            stream = await connect_from(pair.b, pair.a.address, port)
        echoed = bytearray()

        pair.link_down()
        await stream.send_all(b"ping")
        with trio.move_on_after(QUIET):
            await read_into(stream, echoed, 4)
        assert echoed == b""
        await assert_connect_does_not_succeed(pair.b, pair.a.address, port)

        pair.link_up()
        with trio.fail_after(RECOVER):
            await read_into(stream, echoed, 4)
        assert echoed == b"ping"
        await stream.aclose()


async def test_one_way_drop_loses_only_that_direction() -> None:
    with NetnsPair() as pair:
        listener = trio.socket.from_stdlib_socket(pair.a.socket())
        await listener.bind((pair.a.address, 0))
        listener.listen()
        port = listener.getsockname()[1]
        with trio.fail_after(10):
            client = await connect_from(pair.b, pair.a.address, port)
            server_sock, _ = await listener.accept()
        server = trio.SocketStream(server_sock)

        pair.drop("a_to_b")
        await client.send_all(b"ping")
        await server.send_all(b"pong")
        at_server, at_client = bytearray(), bytearray()
        with trio.fail_after(10):
            await read_into(server, at_server, 4)  # b -> a still flows
        assert at_server == b"ping"
        with trio.move_on_after(QUIET):
            await read_into(client, at_client, 4)
        assert at_client == b""

        pair.heal()
        with trio.fail_after(RECOVER):
            await read_into(client, at_client, 4)
        assert at_client == b"pong"
        for stream in (client, server):
            await stream.aclose()
        listener.close()
