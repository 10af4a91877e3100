"""A long-poll query or mutation is always answered with its result.

Found by a tester against ``serve --data-dir``: 40 ``publishEvent``
mutations sent as ``wait=0`` polls were all answered ``{"payloads": []}``
and all 40 were stored, so a client could not tell its change was applied
and a retry would duplicate it (the commit waits for the writer thread, and
that wait counted as "settled"). And ``wait=0`` polls each with a new
document came back empty most of the time while other clients sent costly
new documents: waiting for a turn to prepare the document counted as
"settled" too. Now a one-result operation is answered with its result (or
errors) whatever ``wait`` says, and a subscription's ``wait=0`` settles only
once its document is prepared. Real servers on both hosts, real HTTP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from meshsub_trio import App, Context, Server
from meshsub_trio._transports._poll import POLL_MEDIA_TYPE
from meshsub_trio.meshery import create_app

from ..hypercorn_host import start_hypercorn

StartServer = Callable[..., Awaitable[Server]]
SOON = 20.0
POLL = {"accept": POLL_MEDIA_TYPE}

SCHEMA = """
type Query { hello: String! slow: String! stuck: String! }
type Subscription { firstThenSilent: Int! }
"""


class Stuck:
    """A resolver that never returns, and what the test learns of it."""

    def __init__(self) -> None:
        self.entered = trio.Event()
        self.ended = trio.Event()

    async def resolve(self, _root: Any, _info: Any) -> str:
        self.entered.set()
        try:
            await trio.sleep_forever()
        finally:
            self.ended.set()
        raise AssertionError("unreachable")


def make_app(stuck: Stuck) -> App:
    async def slow(_root: Any, _info: Any) -> str:
        await trio.sleep(0.3)  # the work itself takes longer than the poll's wait
        return "done"

    async def first_then_silent(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        emit(1)
        await trio.sleep_forever()

    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _r, _i: "hi", "slow": slow, "stuck": stuck.resolve}},
        streamers={"firstThenSilent": first_then_silent},
    )


async def start(
    host: str, app: App, start_server: StartServer, nursery: trio.Nursery
) -> tuple[int, Callable[[], int]]:
    """*app* on *host*: its port, and its count of live operations."""
    if host == "native":
        server = await start_server(app)
        return server.port, lambda: server.metrics.live_operations
    hosted = await start_hypercorn(nursery, app)
    return hosted.port, lambda: hosted.metrics.live_operations


@pytest.fixture(params=["native", "asgi"])
def host(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=SOON) as client:
        yield client


async def poll(
    client: httpx.AsyncClient, port: int, query: str, wait: str = "0", **body: Any
) -> dict[str, Any]:
    with trio.fail_after(SOON):
        response = await client.post(
            f"http://127.0.0.1:{port}/api?wait={wait}", json={"query": query, **body}, headers=POLL
        )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_wait_0_mutations_through_the_writer_thread_are_answered(
    host: str,
    start_server: StartServer,
    nursery: trio.Nursery,
    client: httpx.AsyncClient,
    tmp_path: Path,
) -> None:
    """The tester's scenario: Meshery with a real data dir, each commit through the writer thread."""
    app = create_app(simulator=False, data_dir=tmp_path / "data")
    try:
        port, _live = await start(host, app, start_server, nursery)
        mutation = (
            "mutation($d: String!) {"
            " publishEvent(input: {severity: warning, description: $d}) { description } }"
        )
        for n in range(8):
            answer = await poll(client, port, mutation, variables={"d": f"m{n}"})
            assert answer["payloads"] == [{"data": {"publishEvent": {"description": f"m{n}"}}}]
            assert answer["complete"] is True
    finally:
        app.close()


@pytest.mark.parametrize("wait", ["0", "0.05"])
async def test_a_query_is_answered_whatever_the_wait(
    host: str,
    wait: str,
    start_server: StartServer,
    nursery: trio.Nursery,
    client: httpx.AsyncClient,
) -> None:
    """A result that takes longer than ``wait`` is still the answer (it answered ``[]``)."""
    port, _live = await start(host, make_app(Stuck()), start_server, nursery)
    answer = await poll(client, port, "{ slow }", wait=wait)
    assert answer["payloads"] == [{"data": {"slow": "done"}}] and answer["complete"] is True


async def test_a_pending_query_holds_its_poll_until_the_client_leaves(
    host: str, start_server: StartServer, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    """Waiting for a result is bounded as a plain request is: the client leaving ends it."""
    stuck = Stuck()
    port, live = await start(host, make_app(stuck), start_server, nursery)
    answered = trio.Event()

    async def ask(task_status: trio.TaskStatus[trio.CancelScope]) -> None:
        with trio.CancelScope() as scope:
            task_status.started(scope)
            await poll(client, port, "{ stuck }")
            answered.set()

    leave = await nursery.start(ask)
    with trio.fail_after(SOON):
        await stuck.entered.wait()
        await trio.testing.wait_all_tasks_blocked(0.05)
    assert not answered.is_set(), "answered without the query's result"
    leave.cancel()  # the client gives up: its connection closes
    with trio.fail_after(SOON):
        await stuck.ended.wait()
    await all_ended(live)


async def all_ended(live: Callable[[], int]) -> None:
    with trio.fail_after(SOON):
        while live():
            await trio.sleep(0.01)  # polled under the deadline: no event to wait on


def costly(tag: int) -> str:
    """A legal new document that takes tens of milliseconds to validate."""
    n = 150
    spreads = " ".join(f"...F{i}" for i in range(n))
    fragments = " ".join(f"fragment F{i} on Query {{ a{tag}x{i}: __typename }}" for i in range(n))
    return f"{{ {spreads} }} {fragments}"


async def under_a_burst_of_costly_documents(
    port: int, polls: Callable[[], Awaitable[None]]
) -> None:
    """Run *polls* while three other clients keep sending costly new documents."""
    stop = trio.Event()
    started = trio.Event()

    async def other_client(first: int) -> None:
        async with httpx.AsyncClient(timeout=SOON) as other:
            tag = first
            while not stop.is_set():
                response = await other.post(
                    f"http://127.0.0.1:{port}/api", json={"query": costly(tag)}
                )
                assert response.status_code == 200, response.text
                started.set()
                tag += 3

    async with trio.open_nursery() as others:
        for first in range(3):
            others.start_soon(other_client, first)
        with trio.fail_after(SOON):
            await started.wait()
            await polls()
        stop.set()


async def test_wait_0_new_queries_are_answered_under_others_costly_documents(
    host: str, start_server: StartServer, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    port, _live = await start(host, make_app(Stuck()), start_server, nursery)
    wrong: list[dict[str, Any]] = []

    async def polls() -> None:
        for n in range(10):  # before the fix most were answered empty
            answer = await poll(client, port, f"{{ q{n}: hello }}")
            if answer["payloads"] != [{"data": {f"q{n}": "hi"}}]:
                wrong.append(answer)

    await under_a_burst_of_costly_documents(port, polls)
    assert wrong == []


async def test_wait_0_new_subscriptions_settle_after_their_document_is_prepared(
    host: str, start_server: StartServer, nursery: trio.Nursery, client: httpx.AsyncClient
) -> None:
    """Waiting for a turn to prepare the document is not the operation waiting."""
    port, live = await start(host, make_app(Stuck()), start_server, nursery)
    wrong: list[dict[str, Any]] = []

    async def polls() -> None:
        for n in range(10):  # before the fix most were answered empty
            answer = await poll(client, port, f"subscription {{ v{n}: firstThenSilent }}")
            if answer["payloads"] != [{"data": {f"v{n}": 1}}] or answer["complete"]:
                wrong.append(answer)

    await under_a_burst_of_costly_documents(port, polls)
    assert wrong == []
    await all_ended(live)
