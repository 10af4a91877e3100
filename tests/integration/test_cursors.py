"""Cursors: emitted with a value, carried in ``extensions``, read back on resume."""

from __future__ import annotations

from typing import Any

from meshsub_trio import App, Context, Streamer

from ..wsclient import TRANSPORT, open_raw_client

SCHEMA = """
type Query { hello: String }
type Subscription { numbers: Int!, sharedNumbers: Int! }
"""


async def numbers(ctx: Context, _args: dict[str, Any], emit: Any) -> None:
    start = int(ctx.resume_cursor or 0)
    for n in range(start + 1, start + 4):
        emit(n, cursor=n)


APP = App(
    SCHEMA,
    streamers={"numbers": numbers, "sharedNumbers": Streamer(numbers, share="events")},
)


async def test_cursor_travels_in_extensions_and_resume_reads_it(start_server: Any) -> None:
    server = await start_server(APP)
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        await client.init()
        await client.send({"id": "1", "type": "subscribe", "payload": {"query": "subscription { numbers }"}})
        first = await client.receive_until("complete")
        assert first[0] == {
            "id": "1", "type": "next",
            "payload": {"data": {"numbers": 1}, "extensions": {"cursor": "1"}},
        }
        last_cursor = first[-2]["payload"]["extensions"]["cursor"]
        for query in ("subscription { numbers }", "subscription { sharedNumbers }"):
            await client.send({
                "id": "2", "type": "subscribe",
                "payload": {"query": query, "extensions": {"cursor": last_cursor}},
            })
            resumed = await client.receive_until("complete")
            values = [m["payload"]["data"] for m in resumed[:-1]]
            assert [next(iter(v.values())) for v in values] == [4, 5, 6]
