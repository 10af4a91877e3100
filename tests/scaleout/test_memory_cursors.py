"""Without NATS (the in-memory default) cursors still resume, within one process."""

from __future__ import annotations

import trio

from meshsub_trio import Config, serve
from meshsub_trio.meshery import LOCAL_USER_ID, create_app

from ._kit import EVENTS, Reader, descriptions


async def test_cursors_resume_within_one_process_and_a_restart_refuses_them() -> None:
    app = create_app(simulator=False)
    publish = app.model.publish_event
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve, app, Config(port=0, keepalive=0, close_timeout=1.0))
        first = Reader(EVENTS, "first")
        await first.start(nursery, server.port, cursor="0")  # from the start: no race
        for n in range(5):
            publish(LOCAL_USER_ID, {"severity": "debug", "description": f"e-{n}"})
        await first.wait_count(5)
        for n in range(5, 8):
            publish(LOCAL_USER_ID, {"severity": "debug", "description": f"e-{n}"})
        resumed = Reader(EVENTS, "resumed")
        await resumed.start(nursery, server.port, cursor=first.items[1][0])
        await resumed.wait_count(6)
        assert descriptions(resumed) == [f"e-{n}" for n in range(2, 8)]
        server.shutdown()
    restarted = create_app(simulator=False)  # a new process: an empty log
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            serve, restarted, Config(port=0, keepalive=0, close_timeout=1.0)
        )
        stale = Reader(EVENTS, "stale")
        await stale.start(nursery, server.port, cursor=first.cursor)
        await stale.wait_closed()
        assert stale.error[0]["extensions"]["code"] == "CURSOR_INVALID"
        assert "resubscribe without a cursor" in stale.error[0]["message"]
        server.shutdown()
