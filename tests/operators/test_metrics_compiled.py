"""Compiled execution is visible on /metrics: events it ran, and what fell back."""

from __future__ import annotations

from typing import Any

import httpx
import trio

from ..wsclient import TRANSPORT, open_raw_client


def _counter(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not on /metrics")


async def test_compiled_events_are_counted(start_server: Any) -> None:
    server = await start_server(compiled_execution=True)  # whatever MESHSUB_COMPILED says
    async with httpx.AsyncClient(base_url=server.url) as http:
        idle = (await http.get("/metrics")).text
        assert _counter(idle, "meshsub_compiled_events_total") == 0
        assert _counter(idle, "meshsub_compiled_fallbacks_total") == 0
        async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
            await client.init()
            await client.send(
                {"id": "1", "type": "subscribe",
                 "payload": {"query": "subscription { countdown(to: 3) }"}}
            )  # fmt: skip
            with trio.fail_after(5):
                await client.receive_until("complete")
        busy = (await http.get("/metrics")).text
    assert _counter(busy, "meshsub_compiled_events_total") == 4
    assert _counter(busy, "meshsub_compiled_fallbacks_total") == 0


async def test_with_compiled_execution_off_nothing_is_compiled(start_server: Any) -> None:
    server = await start_server(compiled_execution=False)
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        await client.init()
        await client.send(
            {"id": "1", "type": "subscribe",
             "payload": {"query": "subscription { countdown(to: 2) }"}}
        )  # fmt: skip
        with trio.fail_after(5):
            messages = await client.receive_until("complete")
    assert [m["payload"] for m in messages[:-1]] == [{"data": {"countdown": n}} for n in (2, 1, 0)]
    text = server.metrics.render().decode()
    assert _counter(text, "meshsub_compiled_events_total") == 0
