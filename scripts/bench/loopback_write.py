"""What one small TCP write costs the writer on loopback, and how much of it is the reader's.

Why: on loopback the kernel runs the receiver's TCP work (and the wake-up of
the process reading) inside the sender's system call, so a server's fan-out
over loopback pays for its clients' receive path too. Over a network that
work happens on the receiving machine. Receive Packet Steering on ``lo``
(``/sys/class/net/lo/queues/rx-0/rps_cpus``) moves it to the readers' core,
which shows how much of a write is the server's own.

One process (pinned to ``--writer-cpu``) writes 100 bytes to each of N
loopback connections per round; a child (pinned to ``--reader-cpu``) reads
them all with a plain epoll loop. Reported: the writer's CPU time per write
(best and median of the rounds), with steering off and then on. Needs root to
change ``rps_cpus``; the original mask is restored on exit.

    .venv/bin/python scripts/bench/loopback_write.py --connections 5000 --rounds 15
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import socket
import statistics
import time
from pathlib import Path

RPS = Path("/sys/class/net/lo/queues/rx-0/rps_cpus")
MESSAGE = b"x" * 99 + b"!"


def reader(port: int, count: int, rounds: int, cpu: int, ready: int) -> None:
    """(child) Connect *count* sockets, then read every message of every round."""
    os.sched_setaffinity(0, {cpu})
    socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    poller = select.epoll()
    for sock in socks:
        sock.setblocking(False)
        poller.register(sock.fileno(), select.EPOLLIN)
    os.write(ready, b"r")
    expected, seen = count * rounds, 0
    while seen < expected:
        for fd, _ in poller.poll():
            with contextlib.suppress(BlockingIOError):
                seen += os.read(fd, 65536).count(b"!")
    os.write(ready, b"d")
    os._exit(0)


def measure(count: int, rounds: int, writer_cpu: int, reader_cpu: int) -> list[float]:
    """Microseconds of writer CPU per write, one figure per round."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(count)
    port = listener.getsockname()[1]
    signal_read, signal_write = os.pipe()
    child = os.fork()
    if child == 0:
        listener.close()
        reader(port, count, rounds, reader_cpu, signal_write)
    os.sched_setaffinity(0, {writer_cpu})
    conns = [listener.accept()[0] for _ in range(count)]
    for conn in conns:
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    os.read(signal_read, 1)
    fds = [conn.fileno() for conn in conns]
    per_write: list[float] = []
    for _ in range(rounds):
        began = time.process_time()
        for fd in fds:
            os.write(fd, MESSAGE)
        per_write.append((time.process_time() - began) / count * 1e6)
        time.sleep(0.2)  # let the reader drain before the next round (not a sync point)
    os.read(signal_read, 1)
    os.waitpid(child, 0)
    for conn in conns:
        conn.close()
    listener.close()
    return per_write


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--writer-cpu", type=int, default=0)
    parser.add_argument("--reader-cpu", type=int, default=1)
    args = parser.parse_args()
    original = RPS.read_text().strip()
    steered = format(1 << args.reader_cpu, "x")
    try:
        for label, mask in (("in the writer's call (default)", "0"), ("steered", steered)):
            RPS.write_text(mask)
            figures = measure(args.connections, args.rounds, args.writer_cpu, args.reader_cpu)
            print(
                f"receive work {label:32s} rps_cpus={mask}: writer CPU per write "
                f"best {min(figures):.2f} us, median {statistics.median(figures):.2f} us"
            )
    finally:
        RPS.write_text(original)


if __name__ == "__main__":
    main()
