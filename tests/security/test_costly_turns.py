"""Costly new documents are prepared one at a time, in turn per connection.

One connection that pipelines twenty documents costing 100 ms each used to
put every other connection's costly document behind all of them (first come,
first served): 2 s here, six seconds for sixty. The lock now goes round the
connections waiting for it.
"""

from __future__ import annotations

import json

import trio

from meshsub_trio import Server

from ..rawws import masked_frame, open_raw_websocket
from ..wsclient import TRANSPORT, open_raw_client
from .test_document_cost import spread_fragments

FLOOD = 20


async def test_a_flood_of_costly_documents_delays_another_connection_by_one(
    server: Server,
) -> None:
    # spread_fragments(n): ~100 ms of field merging each, then refused;
    # 60 fragments: ~40 ms, and valid: a costly document a real page may send.
    flooder = await open_raw_websocket(server.port)
    answered = 0
    try:
        await flooder.init()
        frames = b"".join(
            masked_frame(
                json.dumps(
                    {"id": str(i), "type": "subscribe", "payload": {"query": spread_fragments(i)}}
                ).encode()
            )
            for i in range(FLOOD)
        )
        await flooder.stream.send_all(frames)
        with trio.fail_after(30):
            # Two answered: the rest of the flood is queued for the lock by now.
            while answered < 2:
                await flooder.receive_json()
                answered += 1
            async with trio.open_nursery() as nursery:
                at_other: list[int] = []

                async def count_flood() -> None:
                    nonlocal answered
                    while answered < FLOOD:
                        await flooder.receive_json()
                        answered += 1

                async def other_connection() -> None:
                    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
                        await client.init()
                        query = spread_fragments(1_000, count=60)
                        await client.send(
                            {"id": "b", "type": "subscribe", "payload": {"query": query}}
                        )
                        reply = await client.receive(timeout=20)
                        at_other.append(answered)
                        assert reply["type"] == "next", reply
                        assert reply["payload"]["data"]["a"] == "Query"

                nursery.start_soon(count_flood)
                nursery.start_soon(other_connection)
    finally:
        await flooder.aclose()
    # First come, first served: all twenty go first (measured: 20). In turn:
    # those prepared before it asked, the one being prepared and one more
    # (measured: 6-7), whatever the flood's length.
    assert at_other[0] <= FLOOD // 2, f"the other connection waited for {at_other[0]} of {FLOOD}"
