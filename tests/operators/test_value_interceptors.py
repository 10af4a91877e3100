"""Gates on a subscription's values (Throttle, Filter) over real sockets, for
every kind of source: a subscribe generator, an own streamer, a shared one.

Each source emits 0..9 at once (no time passes between them), so a
``Throttle(3)`` lets exactly the first three through and the test needs no
clock; the sliding window itself is checked with a fake clock.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Context, Server, Streamer
from meshsub_trio.interceptors import (
    SKIP,
    Filter,
    Interceptor,
    OperationInfo,
    Throttle,
)

from ..wsclient import LEGACY, TRANSPORT, RawClient
from .test_interceptors import Recorder, client, subscribe

StartServer = Callable[..., Awaitable[Server]]

SCHEMA = """
type Query { hello: String! }
type Subscription { generated: Int!  own: Int!  shared: Int! }
"""
SOURCES = ("generated", "own", "shared")


def build_app(interceptors: list[Interceptor]) -> App:
    """Three sources of 0..9; the shared one stays open after its values."""

    async def generated(_root: Any, _info: Any) -> AsyncIterator[int]:
        for n in range(10):
            yield n

    async def own(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        for n in range(10):
            emit(n)

    async def shared(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        for n in range(10):
            emit(n)
        await trio.sleep_forever()

    return App(
        SCHEMA,
        resolvers={
            "Query": {"hello": lambda _root, _info: "world"},
            "Subscription": {"generated": generated},
        },
        streamers={"own": own, "shared": Streamer(shared, share="events")},
        authenticate=_user,
        interceptors=interceptors,
    )


async def _user(ctx: Context) -> Any:
    return (ctx.connection_params or {}).get("user") or ctx.headers.get("x-user")


async def values(ws: RawClient, op_id: str, count: int) -> list[int]:
    """The next *count* values for *op_id* (other operations' messages are ignored)."""
    got: list[int] = []
    with trio.fail_after(5):
        while len(got) < count:
            message = await ws.receive()
            if message.get("id") == op_id:
                assert message["type"] in ("next", "data"), message
                got.append(next(iter(message["payload"]["data"].values())))
    return got


async def until_end(ws: RawClient, op_id: str) -> tuple[list[int], dict[str, Any]]:
    """Every value for *op_id* up to its ``complete`` or ``error``, and that last message."""
    got: list[int] = []
    with trio.fail_after(5):
        while True:
            message = await ws.receive()
            if message.get("id") != op_id:
                continue
            if message["type"] not in ("next", "data"):
                return got, message
            got.append(next(iter(message["payload"]["data"].values())))


def is_gated(op: OperationInfo) -> bool:
    return op.id.startswith("gated")


def even(_op: OperationInfo, value: Any) -> bool:
    return int(value) % 2 == 0


@pytest.mark.parametrize("source", ["generated", "own"])
@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_filter_and_throttle_on_a_subscriptions_own_source(
    start_server: StartServer, source: str, protocol: str
) -> None:
    recorder = Recorder("r", [])
    server = await start_server(build_app([recorder, Filter(even), Throttle(3)]))
    async with client(server, protocol=protocol) as ws:
        await subscribe(ws, "s", f"subscription {{ {source} }}")
        got, end = await until_end(ws, "s")
        assert got == [0, 2, 4]  # evens first, then at most three of them
        assert end["type"] == "complete"
        outcome = await recorder.wait_ended("s")
        assert (outcome.reason, outcome.skipped, outcome.sent) == ("complete", 7, 4)
        # Queries never pass through a gate.
        await subscribe(ws, "q", "{ hello }")
        assert (await until_end(ws, "q"))[1]["type"] == "complete"


async def test_a_gated_subscription_runs_a_shared_streamer_on_its_own(
    start_server: StartServer,
) -> None:
    recorder = Recorder("r", [])
    gates = [Filter(even, when=is_gated), Throttle(2, when=is_gated)]
    server = await start_server(build_app([recorder, *gates]))
    query = "subscription { shared }"
    async with client(server) as ws:
        await subscribe(ws, "gated-first", query)  # starts no cohort
        assert await values(ws, "gated-first", 2) == [0, 2]
        assert len(server.state.cohorts) == 0
        await subscribe(ws, "plain", query)
        assert await values(ws, "plain", 10) == list(range(10))
        assert len(server.state.cohorts) == 1
        # Same document, variables and user: it would join that cohort (whose
        # values are all gone) if its gate did not keep it out.
        await subscribe(ws, "gated", query)
        assert await values(ws, "gated", 2) == [0, 2]
        assert len(server.state.cohorts) == 1
        await subscribe(ws, "plain-too", query)  # an ungated one still joins
        with trio.fail_after(5):
            while sum(len(c.members) for c in server.state.cohorts._cohorts.values()) < 2:
                await trio.lowlevel.checkpoint()
        await ws.send({"id": "gated", "type": "complete"})
        outcome = await recorder.wait_ended("gated")
        assert (outcome.reason, outcome.skipped) == ("stopped", 8)


@pytest.mark.parametrize("source", SOURCES)
async def test_a_gate_that_raises_fails_its_operation_only(
    start_server: StartServer, source: str
) -> None:
    def refuse_three(_op: OperationInfo, value: Any) -> bool:
        if value == 3:
            raise RuntimeError("gate bug")
        return True

    server = await start_server(build_app([Filter(refuse_three)]))
    async with client(server) as ws:
        await subscribe(ws, "s", f"subscription {{ {source} }}")
        got, end = await until_end(ws, "s")
        assert got == [0, 1, 2]
        assert end["type"] == "error"
        await subscribe(ws, "q", "{ hello }")
        assert (await until_end(ws, "q"))[1]["type"] == "complete"


async def test_a_gate_may_replace_a_value(start_server: StartServer) -> None:
    class Double:
        async def enter(self, op: OperationInfo) -> None:
            pass

        def leave(self, op: OperationInfo, outcome: Any) -> None:
            pass

        def gate(self, op: OperationInfo) -> Callable[[Any], Any]:
            return lambda value: SKIP if value > 2 else value * 10

    server = await start_server(build_app([Double()]))
    async with client(server) as ws:
        for source in SOURCES:
            await subscribe(ws, source, f"subscription {{ {source} }}")
            assert await values(ws, source, 3) == [0, 10, 20]


async def test_http_streams_are_gated_too(start_server: StartServer) -> None:
    server = await start_server(build_app([Filter(even), Throttle(2)]))
    headers = {"accept": "text/event-stream", "x-user": "carol"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        response = await http.post("/api", json={"query": "subscription { own }"}, headers=headers)
    assert response.status_code == 200, response.text
    assert response.text.count("event: next") == 2
    assert '{"data":{"own":0}}' in response.text and '{"data":{"own":2}}' in response.text


def _info() -> OperationInfo:
    return OperationInfo(
        id="1",
        document="subscription { own }",
        variables={},
        operation_name=None,
        kind="subscription",
        context=Context(),
        protocol=TRANSPORT,
        transport="ws",
    )


def test_throttle_is_a_sliding_window_per_subscription() -> None:
    now = [0.0]
    throttle = Throttle(2, per=1.0, clock=lambda: now[0])
    gate, other = throttle.gate(_info()), throttle.gate(_info())
    assert gate is not None and other is not None
    assert [gate(n) for n in range(3)] == [0, 1, SKIP]
    assert other("x") == "x"  # each subscription has its own window
    now[0] = 0.5
    assert gate(3) is SKIP
    now[0] = 1.0  # the first two leave the window together
    assert [gate(n) for n in (4, 5, 6)] == [4, 5, SKIP]


def test_value_interceptors_apply_to_subscriptions_they_choose() -> None:
    info = _info()
    assert Throttle(1, when=lambda op: False).gate(info) is None
    info.kind = "query"
    assert Throttle(1).gate(info) is None and Filter(even).gate(info) is None
    with pytest.raises(ValueError):
        Throttle(0)
