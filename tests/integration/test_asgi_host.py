"""The same core served by hypercorn's Trio worker through ``ASGIApp``.

hypercorn is started with ``nursery.start`` on 127.0.0.1:0 and reports its
bound URL. Covered: GraphQL over HTTP, WebSocket subscriptions on both
subprotocols, cleanup on client ``complete``/``stop`` and on disconnect, the
4406 close, the ASGI lifespan, and the documented keep-alive limitation: this
host sends no ping frames, so graphql-transport-ws dead-peer detection uses the
protocol ``ping`` message and its ``pong``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Context

from ..hypercorn_host import Hosted, start_hypercorn
from ..wsclient import LEGACY, TRANSPORT, RawClient, open_raw_client

GR = "application/graphql-response+json"
JSON = "application/json"
MESHERY = "/graphql"
SOON = 5.0  # generous bound for "happens"
SLACK = 0.5  # scheduling allowance on top of a configured deadline

SCHEMA = """
type Query { hello: String! }
type Subscription {
  countdown(to: Int!): Int!
  held: Int!
}
"""


@dataclass
class Probe:
    """What the streamers saw: how many ``held`` streams ran their ``finally``."""

    cleanups: int = 0
    cleaned: trio.Event = field(default_factory=trio.Event)


def make_app(probe: Probe, **hooks: Any) -> App:
    """``countdown`` is finite; ``held`` emits once and then waits to be cancelled."""

    async def countdown(_ctx: Context, args: dict[str, Any], emit: Callable[[Any], None]) -> None:
        for n in range(args["to"], -1, -1):
            emit(n)

    async def held(_ctx: Context, _args: dict[str, Any], emit: Callable[[Any], None]) -> None:
        try:
            emit(0)
            await trio.sleep_forever()
        finally:
            probe.cleanups += 1
            probe.cleaned.set()

    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _root, _info: "Hello"}},
        streamers={"countdown": countdown, "held": held},
        **hooks,
    )


@pytest.fixture
def probe() -> Probe:
    return Probe()


@pytest.fixture
async def hosted(nursery: trio.Nursery, probe: Probe) -> Hosted:
    return await start_hypercorn(nursery, make_app(probe))


@asynccontextmanager
async def ws_client(
    hosted: Hosted, subprotocols: list[str] | None, path: str = "/ws"
) -> AsyncIterator[RawClient]:
    async with open_raw_client(hosted.port, path=path, subprotocols=subprotocols) as client:
        yield client


# ---- protocol vocabulary ----------------------------------------------------


def start_message(protocol: str, op_id: str, query: str) -> dict[str, Any]:
    kind = "subscribe" if protocol == TRANSPORT else "start"
    return {"id": op_id, "type": kind, "payload": {"query": query}}


def stop_message(protocol: str, op_id: str) -> dict[str, Any]:
    return {"id": op_id, "type": "complete" if protocol == TRANSPORT else "stop"}


def data_type(protocol: str) -> str:
    return "next" if protocol == TRANSPORT else "data"


# ---- HTTP --------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One HTTP request to hypercorn and what must come back."""

    name: str
    method: str
    path: str
    status: int
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] | None = None
    media: str = JSON
    payload: dict[str, Any] | None = None
    no_data: bool = False


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


HELLO = {"data": {"hello": "Hello"}}
CT_JSON = {"content-type": JSON}
HTTP_CASES = [
    Case("post", "POST", "/api", 200, _json({"query": "{ hello }"}), CT_JSON, payload=HELLO),
    Case("meshery-post", "POST", MESHERY, 200, _json({"query": "{ hello }"}), CT_JSON,
         payload=HELLO),
    Case("get", "GET", "/api", 200, params={"query": "{ hello }"}, payload=HELLO),
    Case("gr-json", "POST", "/api", 200, _json({"query": "{ hello }"}),
         {**CT_JSON, "accept": GR}, media=GR, payload=HELLO),
    Case("parse-error-json", "POST", "/api", 200, _json({"query": "{"}),
         {**CT_JSON, "accept": JSON}),
    Case("parse-error-gr", "POST", "/api", 400, _json({"query": "{"}),
         {**CT_JSON, "accept": GR}, media=GR, no_data=True),
    Case("bad-json", "POST", "/api", 400, b'{ "not a JSON', CT_JSON, no_data=True),
    Case("no-content-type", "POST", "/api", 415, _json({"query": "{ hello }"}), no_data=True),
    Case("not-acceptable", "POST", "/api", 406, _json({"query": "{ hello }"}),
         {**CT_JSON, "accept": "text/html"}, no_data=True),
    Case("too-large", "POST", "/api", 413,
         _json({"query": "{ hello }", "pad": "x" * (1 << 20)}), CT_JSON, no_data=True),
    Case("subscription", "POST", "/api", 400,
         _json({"query": "subscription { countdown(to: 1) }"}), CT_JSON, no_data=True),
    Case("healthz", "GET", "/healthz", 200, payload={"status": "ok"}),
    Case("ws-only-path", "GET", "/ws", 426, no_data=True),
    Case("unknown-path", "GET", "/nope", 404, no_data=True),
]  # fmt: skip


@pytest.mark.parametrize("case", HTTP_CASES, ids=[case.name for case in HTTP_CASES])
async def test_graphql_over_http_under_hypercorn(hosted: Hosted, case: Case) -> None:
    """GraphQL over HTTP answers exactly as on the native host."""
    async with httpx.AsyncClient(base_url=hosted.url, timeout=SOON) as http:
        response = await http.request(
            case.method, case.path, content=case.body, headers=case.headers, params=case.params
        )
    assert response.status_code == case.status, response.text[:300]
    assert response.headers.get("content-type", "").split(";")[0] == case.media
    payload = json.loads(response.content.decode("utf-8"))
    if case.payload is not None:
        assert payload == case.payload
    if case.no_data:
        assert "data" not in payload and payload["errors"], payload
    if case.name == "subscription":
        assert "/ws" in payload["errors"][0]["message"]
    if case.name == "ws-only-path":
        assert response.headers.get("upgrade", "").lower() == "websocket"


async def test_metrics_and_playground_under_hypercorn(hosted: Hosted) -> None:
    async with httpx.AsyncClient(base_url=hosted.url, timeout=SOON) as http:
        metrics = await http.get("/metrics")
        playground = await http.get("/playground")
    assert metrics.status_code == 200
    assert "meshsub_connections" in metrics.text
    assert "meshsub_active_operations" in metrics.text
    assert playground.status_code == 200
    assert playground.headers["content-type"].startswith("text/html")


# ---- WebSocket subscriptions ---------------------------------------------------


@pytest.mark.parametrize(
    ("offer", "protocol"),
    [([TRANSPORT], TRANSPORT), ([LEGACY], LEGACY), (None, LEGACY)],
    ids=["transport-ws", "legacy", "no-offer"],
)
@pytest.mark.parametrize("path", ["/ws", MESHERY])
async def test_subscription_over_websocket(
    hosted: Hosted, offer: list[str] | None, protocol: str, path: str
) -> None:
    """A finite subscription streams every value and then ``complete``, on both protocols."""
    async with ws_client(hosted, offer, path) as client:
        assert client.subprotocol == (offer[0] if offer else None)
        assert (await client.init())["type"] == "connection_ack"
        await client.send(start_message(protocol, "c", "subscription { countdown(to: 3) }"))
        messages = await client.receive_until("complete")
    assert [m["type"] for m in messages] == [data_type(protocol)] * 4 + ["complete"]
    assert all(m["id"] == "c" for m in messages)
    assert [m["payload"]["data"]["countdown"] for m in messages[:-1]] == [3, 2, 1, 0]
    with trio.fail_after(SOON):
        await hosted.metrics.wait_idle()


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_client_complete_runs_the_cleanup(
    hosted: Hosted, probe: Probe, protocol: str
) -> None:
    """Client ``complete`` (``stop`` in legacy) cancels the operation and runs its cleanup."""
    metrics = hosted.metrics
    async with ws_client(hosted, [protocol]) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.send(start_message(protocol, "h", "subscription { held }"))
        first = await client.receive_until(data_type(protocol))
        assert first[-1]["payload"] == {"data": {"held": 0}}
        assert metrics.live_operations == 1
        assert metrics.cleanups_run == 0

        await client.send(stop_message(protocol, "h"))
        if protocol == LEGACY:  # legacy acknowledges a ``stop`` with ``complete``
            assert await client.receive_until("complete") == [{"id": "h", "type": "complete"}]
        with trio.fail_after(SOON):
            await metrics.wait_for(lambda m: m.live_operations == 0 and m.cleanups_run == 1)
            await probe.cleaned.wait()
        assert probe.cleanups == 1

        # The socket lives on, and nothing more is sent for the stopped id.
        await client.send(start_message(protocol, "q", "{ hello }"))
        after = await client.receive_until("complete")
        assert all(m["id"] == "q" for m in after), after
        assert [m["type"] for m in after] == [data_type(protocol), "complete"]
        assert after[0]["payload"] == {"data": {"hello": "Hello"}}
        assert metrics.live_connections == 1
    assert metrics.operations_started == 2


@pytest.mark.parametrize("protocol", [TRANSPORT, LEGACY])
async def test_disconnect_runs_the_cleanup(hosted: Hosted, probe: Probe, protocol: str) -> None:
    """A client that goes away mid-subscription: the operation's cleanup still runs."""
    async with ws_client(hosted, [protocol]) as client:
        assert (await client.init())["type"] == "connection_ack"
        await client.send(start_message(protocol, "h", "subscription { held }"))
        await client.receive_until(data_type(protocol))
    with trio.fail_after(SOON):
        await hosted.metrics.wait_idle()
        await probe.cleaned.wait()
    assert hosted.metrics.cleanups_run == 1


@pytest.mark.parametrize("offer", [["graphql-foo"], ["chat", "GRAPHQL-WS"]])
async def test_unsupported_subprotocol_offer_closes_4406(hosted: Hosted, offer: list[str]) -> None:
    """Only unsupported subprotocols offered: accepted, then closed 4406."""
    async with ws_client(hosted, offer) as client:
        assert client.subprotocol is None
        code, reason = await client.expect_close()
    assert (code, reason) == (4406, "Subprotocol not acceptable")
    registry = hosted.metrics.registry
    assert registry.get_sample_value("meshsub_closes_total", {"code": "4406"}) == 1
    assert hosted.metrics.live_connections == 0


# ---- lifespan -----------------------------------------------------------------


async def test_lifespan_runs_under_hypercorn(probe: Probe) -> None:
    """The app's lifespan is entered before serving and exited on shutdown."""
    entered, exited = trio.Event(), trio.Event()

    @asynccontextmanager
    async def lifespan() -> AsyncIterator[None]:
        entered.set()
        try:
            yield
        finally:
            exited.set()

    with trio.fail_after(SOON):
        async with trio.open_nursery() as nursery:
            hosted = await start_hypercorn(nursery, make_app(probe, lifespan=lifespan))
            assert entered.is_set()
            assert not exited.is_set()
            async with httpx.AsyncClient(base_url=hosted.url) as http:
                response = await http.get("/healthz")
            assert response.status_code == 200
            assert not exited.is_set()
            hosted.stop.set()
        # hypercorn's serve() has returned.
    assert exited.is_set()
    assert hosted.asgi.state.shutting_down


# ---- keep-alive: no ping frames, so transport-ws probes with ``ping`` --------------

KEEPALIVE = 0.25
PONG_DEADLINE = 0.25


@pytest.fixture
async def keepalive_host(nursery: trio.Nursery, probe: Probe) -> Hosted:
    return await start_hypercorn(
        nursery, make_app(probe), keepalive=KEEPALIVE, pong_timeout=PONG_DEADLINE
    )


async def test_silent_transport_ws_client_is_dropped(keepalive_host: Hosted) -> None:
    """A client that never answers the protocol ``ping`` goes within keepalive + deadline."""
    metrics = keepalive_host.metrics
    async with ws_client(keepalive_host, [TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        acked = trio.current_time()
        ping = await client.receive(timeout=KEEPALIVE + SLACK)
        assert ping == {"type": "ping"}
        assert metrics.live_connections == 1
        await client.expect_close(timeout=PONG_DEADLINE + SLACK)
        elapsed = trio.current_time() - acked
    assert elapsed <= KEEPALIVE + PONG_DEADLINE + SLACK, elapsed
    with trio.fail_after(SOON):
        await metrics.wait_idle()


async def test_answering_transport_ws_client_stays(keepalive_host: Hosted) -> None:
    """A client that answers every ``ping`` with ``pong`` outlives several deadlines."""
    metrics = keepalive_host.metrics
    rounds = 3
    async with ws_client(keepalive_host, [TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
        acked = trio.current_time()
        for _ in range(rounds):
            message = await client.receive(timeout=KEEPALIVE + PONG_DEADLINE + SLACK)
            assert message == {"type": "ping"}
            await client.send({"type": "pong"})
        # Longer than one interval + deadline has passed: a silent peer would be gone.
        assert trio.current_time() - acked > KEEPALIVE + PONG_DEADLINE
        await client.send(start_message(TRANSPORT, "q", "{ hello }"))
        replies = [m for m in await client.receive_until("complete") if m["type"] != "ping"]
        assert [m["type"] for m in replies] == ["next", "complete"]
        assert metrics.live_connections == 1


async def test_legacy_client_gets_ka_and_is_not_probed(keepalive_host: Hosted) -> None:
    """Legacy ``ka`` asks for no answer: with no ping frames, a silent legacy peer stays."""
    metrics = keepalive_host.metrics
    rounds = 3
    async with ws_client(keepalive_host, [LEGACY]) as client:
        await client.send({"type": "connection_init"})
        assert (await client.receive())["type"] == "connection_ack"
        acked = trio.current_time()
        kas = 0
        while kas < rounds + 1:  # the first ``ka`` follows the ack at once
            message = await client.receive(timeout=KEEPALIVE + SLACK)
            assert message == {"type": "ka"}
            kas += 1
        assert trio.current_time() - acked > KEEPALIVE + PONG_DEADLINE
        assert metrics.live_connections == 1
