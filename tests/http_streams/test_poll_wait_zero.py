"""The generic long-poll with ``wait=0``: "answer with what is there now".

Found by a tester: a poll with ``wait=0`` answered before its operation had
produced anything, so a subscription whose first values were ready at once
still came back empty. ``wait=0`` now runs the scheduler until every task of
the operation waits on something (or it ended), then answers with what it
produced: never what it would only produce after waiting (a timer, I/O).
Real servers on both hosts, real HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Context, Server, streamer
from meshsub_trio._transports import _settle
from meshsub_trio._transports._poll import POLL_MEDIA_TYPE

from ..hypercorn_host import start_hypercorn

StartServer = Callable[..., Awaitable[Server]]
SOON = 5.0

SCHEMA = """
type Query { hello: String! }
type Subscription {
  countdown(to: Int!): Int!
  firstThenSilent: Int!
  afterATimer: Int!
  endless: Int!
  shared: Int!
}
"""


def make_app() -> App:
    async def countdown(_ctx: Context, args: dict[str, Any], emit: Any) -> None:
        for n in range(args["to"], -1, -1):
            emit(n)
            await trio.lowlevel.checkpoint()  # a turn of the scheduler, no waiting

    async def first_then_silent(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        await trio.lowlevel.checkpoint()
        emit(1)
        await trio.sleep_forever()

    async def after_a_timer(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        await trio.sleep(0.001)  # waiting, however short: not part of a wait=0 answer
        emit(1)
        await trio.sleep_forever()

    async def endless(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        n = 0
        while True:  # never waits: only the bound ends a wait=0 poll
            emit(n)
            n += 1
            await trio.lowlevel.checkpoint()

    @streamer(share="state")
    async def shared(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        # Runs in the cohort's own task (not the operation's), started by the first poll.
        await trio.lowlevel.checkpoint()
        emit(7)
        await trio.sleep_forever()

    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _r, _i: "hi"}},
        streamers={
            "countdown": countdown,
            "firstThenSilent": first_then_silent,
            "afterATimer": after_a_timer,
            "endless": endless,
            "shared": shared,
        },
    )


class Polled:
    """A server on one host: its port and its live operations."""

    def __init__(self, port: int, live: Callable[[], int]) -> None:
        self.port = port
        self.live = live

    async def poll(self, query: str, wait: str = "0") -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=SOON) as client:
            with trio.fail_after(SOON):
                response = await client.post(
                    f"http://127.0.0.1:{self.port}/api?wait={wait}",
                    json={"query": query},
                    headers={"accept": POLL_MEDIA_TYPE},
                )
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    async def all_ended(self) -> None:
        with trio.fail_after(SOON):
            while self.live():
                await trio.sleep(0.01)  # polled under the deadline: no event to wait on


@pytest.fixture(params=["native", "asgi"])
async def polled(
    request: pytest.FixtureRequest, start_server: StartServer, nursery: trio.Nursery
) -> Polled:
    if request.param == "native":
        server = await start_server(make_app())
        return Polled(server.port, lambda: server.metrics.live_operations)
    hosted = await start_hypercorn(nursery, make_app())
    return Polled(hosted.port, lambda: hosted.metrics.live_operations)


def data(answer: dict[str, Any], field: str) -> list[Any]:
    return [payload["data"][field] for payload in answer["payloads"]]


async def test_wait_0_answers_what_the_operation_produces_without_waiting(
    polled: Polled,
) -> None:
    """Six values, each a turn of the scheduler after the last, then the end: all of them.

    It answered ``[]`` and ``complete: false``: the zero deadline fired
    before the operation had run.
    """
    answer = await polled.poll("subscription { countdown(to: 5) }")
    assert data(answer, "countdown") == [5, 4, 3, 2, 1, 0]
    assert answer["complete"] is True
    await polled.all_ended()


async def test_wait_0_answers_a_first_value_then_stops_at_the_wait(polled: Polled) -> None:
    answer = await polled.poll("subscription { firstThenSilent }")
    assert data(answer, "firstThenSilent") == [1]
    assert answer["complete"] is False
    await polled.all_ended()


async def test_wait_0_answers_a_shared_streamers_first_value(polled: Polled) -> None:
    """The value comes from the cohort's task, which the operation started: it counts."""
    answer = await polled.poll("subscription { shared }")
    assert data(answer, "shared") == [7]


async def test_wait_0_does_not_wait_for_a_timer(polled: Polled) -> None:
    answer = await polled.poll("subscription { afterATimer }")
    assert answer == {"payloads": [], "complete": False, "seen": None}
    await polled.all_ended()
    # The same subscription with a wait answers its value: the stream was fine.
    waited = await polled.poll("subscription { afterATimer }", wait="5")
    assert data(waited, "afterATimer") == [1]


async def test_wait_0_answers_a_query(polled: Polled) -> None:
    answer = await polled.poll("{ hello }")
    assert answer["payloads"] == [{"data": {"hello": "hi"}}] and answer["complete"] is True


async def test_wait_0_bounds_an_operation_that_never_waits(polled: Polled) -> None:
    """An operation that never waits is answered after a bounded number of
    scheduler passes, with what it produced in them; then it is ended."""
    answer = await polled.poll("subscription { endless }")
    values = data(answer, "endless")
    assert values and values == list(range(values[0], values[0] + len(values)))
    assert answer["complete"] is False
    await polled.all_ended()


async def test_wait_0_leaves_no_instrument_behind(polled: Polled) -> None:
    """The scheduler is watched only while a wait=0 poll settles, by one shared instrument."""
    async with trio.open_nursery() as nursery:
        for _ in range(5):
            nursery.start_soon(polled.poll, "subscription { firstThenSilent }")
    assert not _settle.watching_now()
    await polled.all_ended()
