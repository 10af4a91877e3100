"""Expensive documents are refused before they cost, while a bystander streams.

The attacks (security issue items 1 and 2): fragments that each spread the
next twice (validation exponential in the levels), thousands of aliases,
megabyte documents filling the document cache, nested lists multiplying
execution, same-named fields (validation quadratic in them), and a burst of
new documents pipelined to hold the event loop. Each is refused (or, for the
burst, spread out) within a time bound, over both WebSocket protocols and
HTTP where it matters, and the bystander's ticks never stop.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import trio

from meshsub_trio import App, Server
from meshsub_trio.examples.countdown import ticks

from ..interop.conftest import cli_server
from ..rawws import masked_frame, open_raw_websocket
from ..wsclient import LEGACY, TRANSPORT, open_raw_client
from .conftest import bystander

StartServer = Callable[..., Any]

#: How long a refusal may take, end to end over loopback (a new connection, the
#: request, the answer). Alone these take a few ms; inside the full suite on two
#: busy cores a collection of its large heap can land in one. The attacks took
#: 2 s (aliases) to 10 s (fragments) before they were refused up front.
SOON = 1.5


def exponential(levels: int) -> str:
    """Each fragment spreads the next twice: 2**levels fields, under 1 KB."""
    parts = ["{ ...F0 }"]
    for i in range(levels):
        parts.append(f"fragment F{i} on Query {{ ...F{i + 1} ...F{i + 1} }}")
    parts.append(f"fragment F{levels} on Query {{ __typename }}")
    return " ".join(parts)


def aliases(count: int, name: str = "__typename") -> str:
    return "{ " + " ".join(f"a{i}: {name}" for i in range(count)) + " }"


async def ask_ws(port: int, protocol: str, query: str) -> dict[str, Any]:
    """The first reply to *query* as a subscription over a fresh connection."""
    async with open_raw_client(port, subprotocols=[protocol]) as client:
        await client.init()
        kind = "subscribe" if protocol == TRANSPORT else "start"
        await client.send({"id": "1", "type": kind, "payload": {"query": query}})
        while True:
            reply = await client.receive()
            if reply["type"] != "ka":  # graphql-ws keep-alive
                return reply


async def ask_http(server: Server, query: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.url) as http:
        return await http.post("/api", json={"query": query})


async def error_messages(server: Server, transport: str, query: str) -> list[str]:
    """The error messages *query* gets over *transport*, asserting it is refused."""
    if transport == "http":
        response = await ask_http(server, query)
        body = response.json()
        assert "data" not in body, body
        return [error["message"] for error in body["errors"]]
    reply = await ask_ws(server.port, transport, query)
    assert reply["type"] == "error" and reply["id"] == "1", reply
    payload = reply["payload"]
    # graphql-transport-ws sends every error; graphql-ws the first one.
    return [error["message"] for error in (payload if transport == TRANSPORT else [payload])]


TRANSPORTS = [TRANSPORT, LEGACY, "http"]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_exponential_fragments_are_refused_at_once(server: Server, transport: str) -> None:
    query = exponential(22)
    assert len(query) < 1024
    async with bystander(server.port):
        with trio.fail_after(SOON):
            messages = await error_messages(server, transport, query)
    assert messages[0] == (
        "Operation 'anonymous' selects 4194304 fields; the limit is 2000 (max_fields)."
    )


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_twenty_thousand_aliases_are_refused_unparsed(server: Server, transport: str) -> None:
    query = aliases(20_000)
    async with bystander(server.port):
        with trio.fail_after(SOON):
            messages = await error_messages(server, transport, query)
    assert messages == [
        f"Document has {len(query)} characters; the limit is 32000 (16 per token of max_tokens)."
    ]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_parser_stops_at_the_token_cap(server: Server, transport: str) -> None:
    query = "{ " + "a " * 3000 + "}"  # 6 KB, 3,002 tokens
    async with bystander(server.port):
        with trio.fail_after(SOON):
            messages = await error_messages(server, transport, query)
    assert messages == ["Document has more than 2000 tokens; the limit is 2000 (max_tokens)."]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_same_named_fields_abort_validation_early(server: Server, transport: str) -> None:
    """Compared pairwise by graphql-core: 650 of them were ~60 ms of validation."""
    query = "{ " + "a: __typename " * 650 + "}"
    async with bystander(server.port):
        with trio.fail_after(SOON):
            messages = await error_messages(server, transport, query)
    assert messages == ["Validation aborted."]


async def test_refused_megabyte_documents_stay_out_of_the_cache(server: Server) -> None:
    """Six ~1 MB alias documents each kept ~55 MB of AST in the cache (+340 MB)."""
    documents = server.state.engine.documents
    rss_before = resident_bytes()
    async with bystander(server.port), httpx.AsyncClient(base_url=server.url) as http:
        cached = (len(documents), documents.bytes)  # the bystander's document
        for n in range(6):
            query = aliases(50_000, "__typename")[:-1] + f" last{n}: __typename }}"
            assert 900_000 < len(query) < 1_000_000
            with trio.fail_after(SOON):
                response = await http.post("/api", json={"query": query})
            assert "max_tokens" in response.json()["errors"][0]["message"]
    assert (len(documents), documents.bytes) == cached
    assert resident_bytes() - rss_before < 64 * 1024 * 1024


def resident_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


# ---- cost: lists multiply what they hold -----------------------------------------

LISTS_SCHEMA = """
type Query { items(first: Int): [Item!]! }
type Item { id: Int! children(first: Int): [Item!]! }
type Subscription { ticks(everyMs: Int = 50): Int! }
"""


def items(_root: Any, _info: Any, first: int = 10) -> list[dict[str, int]]:
    return [{"id": i} for i in range(first)]


def lists_app() -> App:
    return App(
        LISTS_SCHEMA,
        resolvers={"Query": {"items": items}, "Item": {"children": items}},
        streamers={"ticks": ticks},
    )


@pytest.mark.parametrize("transport", [TRANSPORT, "http"])
async def test_nested_lists_over_the_cost_limit_are_refused(
    start_server: StartServer, transport: str
) -> None:
    """A million items from 60 bytes of query: refused before execution."""
    server = await start_server(app=lists_app())
    query = "{ items(first: 1000) { children(first: 1000) { id } } }"
    async with bystander(server.port):
        with trio.fail_after(SOON):
            messages = await error_messages(server, transport, query)
    assert messages == [
        "Operation 'anonymous' costs 1001001 (each field 1, times the sizes of the lists"
        " above it); the limit is 100000 (max_cost)."
    ]


async def test_nested_lists_within_the_cost_limit_run(start_server: StartServer) -> None:
    server = await start_server(app=lists_app())
    response = await ask_http(server, "{ items(first: 50) { children(first: 50) { id } } }")
    body = response.json()
    assert "errors" not in body
    assert len(body["data"]["items"]) == 50


async def test_the_cost_limit_is_configurable(start_server: StartServer) -> None:
    server = await start_server(app=lists_app(), max_cost=None, max_fields=10)
    response = await ask_http(server, "{ items(first: 1000) { children(first: 5) { id } } }")
    assert len(response.json()["data"]["items"]) == 1000
    response = await ask_http(server, aliases(11, "items { id }"))
    assert response.json()["errors"][0]["message"] == (
        "Operation 'anonymous' selects 22 fields; the limit is 10 (max_fields)."
    )


# ---- a burst of new documents cannot hold the loop ---------------------------------


async def pipeline_attack(
    port: int, query: Callable[[int], str], clients: int, per_client: int, max_gap: float
) -> list[dict[str, Any]]:
    """Each of *clients* writes *per_client* new documents in one go while a
    bystander streams (no gap over *max_gap*); every reply, in order."""
    attackers = [await open_raw_websocket(port) for _ in range(clients)]
    replies = []
    try:
        for attacker in attackers:
            await attacker.init()
        async with bystander(port, max_gap=max_gap):
            with trio.fail_after(30):
                for index, attacker in enumerate(attackers):
                    frames = b"".join(
                        masked_frame(
                            json.dumps(
                                {
                                    "id": str(i),
                                    "type": "subscribe",
                                    "payload": {"query": query(index * 100 + i)},
                                }
                            ).encode()
                        )
                        for i in range(per_client)
                    )
                    await attacker.stream.send_all(frames)
                for attacker in attackers:
                    for _ in range(per_client):
                        replies.append(await attacker.receive_json())
    finally:
        for attacker in attackers:
            await attacker.aclose()
    return replies


def costly(n: int) -> str:
    """About 6 KB of 600 same-named fields, distinct per *n*: a full parse and
    validation up to field merging's budget (before it was lowered and split
    off, 1,990 unknown fields cost 30-40 ms in one go)."""
    return "{ " + f"x{n}: hello " + "a: hello " * 600 + "}"


async def test_a_pipelined_burst_of_new_documents_is_spread_out(server: Server) -> None:
    """Each attacker writes 15 costly documents at once (~60 KB, one read for the
    server): prepared back to back they would hold the loop for ~2 s."""
    per_client, clients = 15, 3
    # Unspread, the bystander waits 2.0-2.2 s; spread, 0.14-0.18 s.
    replies = await pipeline_attack(server.port, costly, clients, per_client, max_gap=1.0)
    assert {reply["payload"][0]["message"] for reply in replies} == {"Validation aborted."}
    assert server.state.engine.documents.misses >= per_client * clients


async def test_variables_holding_too_many_values_are_refused_before_coercion(
    start_server: StartServer,
) -> None:
    # graphql-core coerces every value in Python: 240,000 list items (one 1 MiB
    # body) held the loop 300 ms a request. Refused by count, cheaply, instead.
    from meshsub_trio.meshery import create_app

    server = await start_server(app=create_app(simulator=False))
    query = "query($ids: [String!]) { getAvailableNamespaces(k8sClusterIDs: $ids) { namespace } }"
    async with httpx.AsyncClient(base_url=server.url) as http:
        with trio.fail_after(SOON):
            refused = await http.post(
                "/api", json={"query": query, "variables": {"ids": ["x"] * 10_001}}
            )
            served = await http.post(
                "/api",
                json={"query": query, "variables": {"ids": ["x"] * 9_999}},  # with "ids": 10,000
            )
    [error] = refused.json()["errors"]
    assert error["message"] == "Variables hold more than 10000 values"
    assert error["extensions"] == {"code": "VARIABLES_TOO_LARGE"}
    assert served.json() == {"data": {"getAvailableNamespaces": []}}


# ---- documents costly for graphql-core's own rules cannot hold the loop -------------


def spread_fragments(n: int, count: int = 180) -> str:
    """*count* fragments spread side by side, each selecting the same alias:
    graphql-core compares every pair of them (made distinct per *n* by a comment)."""
    spreads = " ".join(f"...F{i}" for i in range(count))
    fragments = " ".join(f"fragment F{i} on Query {{ a: __typename }}" for i in range(count))
    return f"# {n}\n{{ {spreads} }} {fragments}"


def one_alias_many_fields(n: int, count: int = 500) -> str:
    """*count* different fields of the schema under one alias: every pair conflicts."""
    fields = ["__typename", "hello"]
    return f"# {n}\n{{ " + " ".join(f"a: {fields[i % 2]}" for i in range(count)) + " }"


@pytest.mark.parametrize("shape", [spread_fragments, one_alias_many_fields])
async def test_documents_costly_to_validate_do_not_hold_the_loop(
    shape: Callable[[int], str],
) -> None:
    """Four clients pipelining such documents to ``meshsub-trio serve`` (its own
    collector settings, nothing else in the process) held a bystander 0.35-0.38 s
    here (1.2 s in a tester's run): each was validated in one go, 90-160 ms
    apiece. In pieces, with field merging's budget at 10,000: 0.03-0.10 s."""
    async with cli_server("meshsub_trio.examples.countdown:app") as cli:
        port = int(cli.url.rsplit(":", 1)[1].split("/")[0])
        replies = await pipeline_attack(port, shape, clients=4, per_client=8, max_gap=0.25)
    assert {reply["type"] for reply in replies} == {"error"}
