"""A process that publishes to NATS as fast as it can and says it is alive.

Run as ``python -m tests.chaos._publishing_child URL``. It prints ``state X``
on every link state change and ``tick`` every 20 ms from a Trio task: a
process whose event loop is stuck (an asyncio task spinning without
yielding, on the thread both loops share) stops ticking, which is what the
parent watches for, from outside, since a stuck loop cannot time itself out.
"""

from __future__ import annotations

import contextlib
import sys

import trio

from meshsub_trio.brokers import NatsBroker, PublishQueueFull


async def main(url: str) -> None:
    async with NatsBroker.connect(url, reconnect_wait=0.05) as broker:

        async def states() -> None:
            seen = broker.state
            print(f"state {seen.value}", flush=True)
            while True:
                seen = await broker.wait_state_change(seen)
                print(f"state {seen.value}", flush=True)

        async def ticks() -> None:
            while True:
                print("tick", flush=True)
                await trio.sleep(0.02)

        async def publish() -> None:
            n = 0
            while True:
                # Refused at once while the bounded queue is full in the outage.
                with contextlib.suppress(PublishQueueFull):
                    broker.publish("spin.check", {"n": n})
                n += 1
                await trio.sleep(0)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(states)
            nursery.start_soon(ticks)
            nursery.start_soon(publish)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
