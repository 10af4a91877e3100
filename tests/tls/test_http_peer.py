"""The client certificate on plain HTTP over TLS: GraphQL over HTTP, graphql-sse
streams and app routes see ``Context.tls_peer`` as WebSockets do, each request
its own connection's certificate (never another's), and None without one."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio

from meshsub_trio import App, Context, HttpRequest, HttpResponse, Server, subject_of
from meshsub_trio._wire._sse import SseParser

from .certs import Certs
from .conftest import TlsServerFactory, client_context

SCHEMA = """
type Query { peer: String }
type Subscription { peer: String, heldPeer: String }
"""

#: What the authenticate hook saw, per protocol: the hook runs before any body is read.
seen_by_hook: list[tuple[str, str | None]] = []


def _name(ctx: Context) -> str | None:
    return subject_of(ctx.tls_peer).get("commonName")


async def _authenticate(ctx: Context) -> Any:
    seen_by_hook.append((ctx.protocol, _name(ctx)))
    return _name(ctx)


async def _peer_stream(ctx: Context, _args: dict[str, Any], emit: Any) -> None:
    """One value, the certificate's name, then complete."""
    emit(_name(ctx))


#: Set by a test to end every ``heldPeer`` stream (one per test: a Trio Event).
release: list[trio.Event] = []


async def _held_peer_stream(ctx: Context, _args: dict[str, Any], emit: Any) -> None:
    """The certificate's name, then open until the test releases it."""
    emit(_name(ctx))
    await release[-1].wait()


async def _route(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, json.dumps({"peer": _name(request.context)}).encode())


PEER_APP = App(
    SCHEMA,
    resolvers={"Query": {"peer": lambda _root, info: _name(info.context)}},
    streamers={"peer": _peer_stream, "heldPeer": _held_peer_stream},
    authenticate=_authenticate,
    http_routes={"/whoami": _route},
)

QUERY = {"query": "{ peer }"}
SUBSCRIPTION = {"query": "subscription { peer }"}


async def _sse_values(
    http: httpx.AsyncClient, url: str, body: dict[str, Any] = SUBSCRIPTION, first: Any = None
) -> list[Any]:
    """The ``next`` values of one graphql-sse stream, read to its ``complete``
    (*first*, if given, is called once the first value arrived)."""
    parser = SseParser()
    values: list[Any] = []
    headers = {"accept": "text/event-stream"}
    async with http.stream("POST", url, json=body, headers=headers) as response:
        assert response.status_code == 200
        async for chunk in response.aiter_bytes():
            for event in parser.receive_data(chunk):
                if event.event == "complete":
                    return values
                data = json.loads(event.data)["data"]
                values.append(next(iter(data.values())))
                if first is not None and len(values) == 1:
                    await first()
    raise AssertionError(f"the stream ended without complete after {values}")


async def test_http_query_sse_and_routes_see_the_client_certificate(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    seen_by_hook.clear()
    server = await start_tls_server(app=PEER_APP, ca_certs=str(certs.ca), client_cert="optional")
    # One client (httpx keeps its connection alive): every kind of request sees alice.
    async with httpx.AsyncClient(verify=client_context(certs, certs.client)) as alice:
        with trio.fail_after(10):
            query = await alice.post(f"{server.url}/api", json=QUERY)
            streamed = await _sse_values(alice, f"{server.url}/api")
            route = await alice.get(f"{server.url}/whoami")
            again = await alice.post(f"{server.url}/api", json=QUERY)
    assert query.json() == {"data": {"peer": "alice"}}
    assert streamed == ["alice"]
    assert route.json() == {"peer": "alice"}
    assert again.json() == {"data": {"peer": "alice"}}
    assert seen_by_hook == [("http", "alice")] * 4


async def test_a_connection_without_certificate_sees_none_beside_one_with(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    """While alice's stream is open on one connection, an anonymous client's requests
    on another see no certificate: the peer is per connection, never leaked."""
    release.append(trio.Event())
    server = await start_tls_server(app=PEER_APP, ca_certs=str(certs.ca), client_cert="optional")
    results: dict[str, Any] = {}
    async with (
        httpx.AsyncClient(verify=client_context(certs, certs.client)) as alice,
        httpx.AsyncClient(verify=client_context(certs)) as anonymous,
    ):

        async def meanwhile() -> None:
            """Alice's stream is live: ask as the anonymous client, then let alice finish."""
            results["anonymous-query"] = (
                await anonymous.post(f"{server.url}/api", json=QUERY)
            ).json()
            results["anonymous-sse"] = await _sse_values(anonymous, f"{server.url}/api")
            release[-1].set()

        held = {"query": "subscription { heldPeer }"}
        with trio.fail_after(10):
            results["alice-sse"] = await _sse_values(alice, f"{server.url}/api", held, meanwhile)
            results["alice-query"] = (await alice.post(f"{server.url}/api", json=QUERY)).json()
    assert results == {
        "alice-sse": ["alice"],
        "alice-query": {"data": {"peer": "alice"}},
        "anonymous-query": {"data": {"peer": None}},
        "anonymous-sse": [None],
    }


async def test_no_client_certificates_asked_means_none(
    start_tls_server: TlsServerFactory, certs: Certs
) -> None:
    """TLS without ``ca_certs``: HTTP contexts carry None (not an empty dict)."""
    server: Server = await start_tls_server(app=PEER_APP)
    async with httpx.AsyncClient(verify=client_context(certs)) as http:
        with trio.fail_after(10):
            query = await http.post(f"{server.url}/api", json=QUERY)
    assert query.json() == {"data": {"peer": None}}
