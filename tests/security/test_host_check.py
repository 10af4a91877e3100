"""DNS rebinding: a request is served only for a Host this server answers to.

The attack: a page on ``evil.example`` re-points its name at 127.0.0.1 and
calls the local server from the victim's browser. The browser sends
``Host: evil.example`` and an ``Origin`` on the same host, so the Origin check
alone let it in (a WebSocket with live data, mutations over HTTP). The Host
check refuses it before anything runs: 421 with a JSON error for plain
requests, an HTTP 421 instead of the 101 for upgrades, on both hosts.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from meshsub_trio import App, Server
from meshsub_trio.examples.countdown import countdown, ticks

from ..hypercorn_host import Hosted, start_hypercorn
from .conftest import bystander

StartServer = Callable[..., Awaitable[Server]]

SCHEMA = """
type Query { hello: String! }
type Mutation { bump: Int! }
type Subscription {
  countdown(to: Int!): Int!
  ticks(everyMs: Int = 50): Int!
}
"""


class Bumps:
    """How many times the mutation ran (the attack's payload)."""

    def __init__(self) -> None:
        self.count = 0

    def bump(self, _root: Any, _info: Any) -> int:
        self.count += 1
        return self.count


def make_app(bumps: Bumps) -> App:
    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _r, _i: "hi"}, "Mutation": {"bump": bumps.bump}},
        streamers={"countdown": countdown, "ticks": ticks},
    )


@pytest.fixture
def bumps() -> Bumps:
    return Bumps()


@pytest.fixture
async def app_server(start_server: StartServer, bumps: Bumps) -> Server:
    return await start_server(make_app(bumps))


# ---- raw HTTP ------------------------------------------------------------------


def upgrade_request(host: str | None, *extra: str, path: str = "/ws", h11: bool = False) -> bytes:
    """A WebSocket upgrade; ``h11=True`` adds a field the fast path declines, so h11 parses it."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        *([f"Host: {host}"] if host is not None else []),
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        "Sec-WebSocket-Protocol: graphql-transport-ws",
        *(["Content-Length: 0"] if h11 else []),
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def plain_request(method: str, path: str, host: str | None, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1"]
    if host is not None:
        lines.append(f"Host: {host}")
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send *request*; the response's status, headers and body (by Content-Length)."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        raw = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in raw:
                data = await stream.receive_some(65536)
                assert data, f"closed without an answer: {raw!r}"
                raw += data
            head, _, body = raw.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {}
            for line in lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            while len(body) < length:
                data = await stream.receive_some(65536)
                assert data, "closed mid-body"
                body += data
    return int(status_line.split(" ", 2)[1]), headers, body


async def upgrade_status(port: int, host: str | None, *extra: str, h11: bool = False) -> int:
    status, _, _ = await exchange(port, upgrade_request(host, *extra, h11=h11))
    return status


def mutation(host: str | None) -> bytes:
    return plain_request("POST", "/api", host, json.dumps({"query": "mutation { bump }"}).encode())


# ---- the attack, refused -------------------------------------------------------------


@pytest.mark.parametrize("parser", ["fast", "h11"])
async def test_rebound_page_gets_no_websocket(app_server: Server, parser: str) -> None:
    """Host and Origin both name the rebound host: 421 before the upgrade, never a 101."""
    port = app_server.port
    async with bystander(port):
        status, headers, body = await exchange(
            port,
            upgrade_request(
                f"evil.example:{port}", f"Origin: http://evil.example:{port}", h11=parser == "h11"
            ),
        )
    assert status == 421
    assert "sec-websocket-accept" not in headers
    assert b"Host" in body


async def test_rebound_page_runs_no_mutation(app_server: Server, bumps: Bumps) -> None:
    """A plain request for the rebound host is 421 with a JSON error; nothing executes."""
    port = app_server.port
    async with bystander(port):
        status, headers, body = await exchange(port, mutation(f"evil.example:{port}"))
        get_status, _, _ = await exchange(
            port, plain_request("GET", "/api?query=%7Bhello%7D", "evil.example")
        )
    assert status == 421 and get_status == 421
    assert headers["content-type"].startswith("application/json")
    assert "Misdirected" in json.loads(body)["errors"][0]["message"]
    assert headers.get("connection") == "close"
    assert bumps.count == 0


async def test_the_same_mutation_from_loopback_runs(app_server: Server, bumps: Bumps) -> None:
    """The control: the default allow-list serves the address the client dialled."""
    status, _, body = await exchange(app_server.port, mutation(f"127.0.0.1:{app_server.port}"))
    assert status == 200 and json.loads(body) == {"data": {"bump": 1}}
    assert bumps.count == 1


# ---- the default allow-list (bound to 127.0.0.1) ----------------------------------------

SERVED = ["127.0.0.1:{port}", "127.0.0.1", "localhost", "localhost:3000", "LOCALHOST.:80",
          "[::1]:{port}", "[::1]", "10.1.2.3:8080"]  # fmt: skip
REFUSED = ["evil.example", "evil.example:{port}", "localhost.evil.example", "127.0.0.1.nip.io",
           "evil.localhost", "a:b:c", "[::1", "localhost:http", "", "evil.example:{port}:1"]  # fmt: skip


@pytest.mark.parametrize("host", SERVED)
async def test_loopback_names_and_addresses_are_served(server: Server, host: str) -> None:
    """localhost and IP literals (a rebinding page can never send one), any port or none."""
    host = host.format(port=server.port)
    assert await upgrade_status(server.port, host) == 101
    status, _, _ = await exchange(server.port, plain_request("GET", "/healthz", host))
    assert status == 200


@pytest.mark.parametrize("host", REFUSED)
async def test_other_names_are_refused(server: Server, host: str) -> None:
    """Any other name, and anything that does not parse as host[:port], is refused."""
    host = host.format(port=server.port)
    assert await upgrade_status(server.port, host) == 421
    assert await upgrade_status(server.port, host, h11=True) == 421
    status, _, _ = await exchange(server.port, plain_request("GET", "/healthz", host))
    assert status == 421


async def test_no_host_is_served(server: Server) -> None:
    """HTTP/1.0 without Host: no browser sends that, so it cannot be a rebound page."""
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(b"GET /healthz HTTP/1.0\r\n\r\n")
        raw = b""
        with trio.fail_after(5):
            while data := await stream.receive_some(65536):
                raw += data
    assert raw.startswith(b"HTTP/1.1 200 ")


# ---- configured lists ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("meshery.example:9081", 101),
        ("MESHERY.example", 101),
        ("api.example:8443", 101),
        ("api.example:80", 421),  # a name:port entry serves that port only
        ("api.example", 421),
        ("x.corp.example:1", 101),  # *.name: any subdomain
        ("corp.example", 421),
        ("evil.example", 421),
        ("localhost:9081", 101),  # loopback is always served
    ],
)
async def test_allow_list(start_server: StartServer, host: str, status: int) -> None:
    server = await start_server(
        allowed_hosts=("meshery.example", "api.example:8443", "*.corp.example")
    )
    assert await upgrade_status(server.port, host) == status
    assert await upgrade_status(server.port, host, h11=True) == status


async def test_star_serves_any_host(start_server: StartServer) -> None:
    """``("*",)``: the operator checks Host elsewhere (a proxy)."""
    server = await start_server(allowed_hosts=("*",))
    assert await upgrade_status(server.port, "evil.example") == 101


async def test_wildcard_bind_without_a_list_serves_any_host(start_server: StartServer) -> None:
    """Bound to 0.0.0.0 the server cannot know its names: documented, set allowed_hosts."""
    server = await start_server(host="0.0.0.0")
    assert await upgrade_status(server.port, "meshery.internal:9081") == 101


async def test_wildcard_bind_with_a_list_checks(start_server: StartServer) -> None:
    server = await start_server(host="0.0.0.0", allowed_hosts=("meshery.internal",))
    assert await upgrade_status(server.port, "meshery.internal:9081") == 101
    assert await upgrade_status(server.port, "evil.example") == 421
    status, _, _ = await exchange(server.port, plain_request("GET", "/healthz", "evil.example"))
    assert status == 421


# ---- the ASGI host under hypercorn -----------------------------------------------------------


@pytest.fixture
async def hosted(nursery: trio.Nursery, bumps: Bumps) -> Hosted:
    return await start_hypercorn(nursery, make_app(bumps))


async def test_asgi_rebound_page_gets_no_websocket(hosted: Hosted) -> None:
    """Under hypercorn the upgrade is refused with an HTTP 421 too (never a 101)."""
    port = hosted.port
    async with bystander(port):
        status, headers, _ = await exchange(
            port, upgrade_request(f"evil.example:{port}", f"Origin: http://evil.example:{port}")
        )
    assert status == 421
    assert "sec-websocket-accept" not in headers


async def test_asgi_rebound_page_runs_no_mutation(hosted: Hosted, bumps: Bumps) -> None:
    async with bystander(hosted.port):
        status, _, body = await exchange(hosted.port, mutation("evil.example"))
    assert status == 421
    assert "Misdirected" in json.loads(body)["errors"][0]["message"]
    assert bumps.count == 0


async def test_asgi_loopback_is_served(hosted: Hosted, bumps: Bumps) -> None:
    port = hosted.port
    assert await upgrade_status(port, f"127.0.0.1:{port}") == 101
    assert await upgrade_status(port, "localhost") == 101
    status, _, _ = await exchange(port, mutation(f"localhost:{port}"))
    assert status == 200 and bumps.count == 1


async def test_asgi_allow_list(nursery: trio.Nursery, bumps: Bumps) -> None:
    hosted = await start_hypercorn(nursery, make_app(bumps), allowed_hosts=("meshery.example",))
    assert await upgrade_status(hosted.port, "meshery.example") == 101
    assert await upgrade_status(hosted.port, "evil.example") == 421


async def test_a_null_origin_never_opens_a_socket(server) -> None:
    """``Origin: null`` (a sandboxed page, file://) named no host; without a Host
    header (HTTP/1.0) two empty names compared equal and the upgrade passed."""
    import base64
    import os

    import trio

    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    async with stream:
        key = base64.b64encode(os.urandom(16)).decode()
        await stream.send_all(
            (
                "GET /ws HTTP/1.0\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Protocol: graphql-transport-ws\r\nOrigin: null\r\n\r\n"
            ).encode()
        )
        with trio.fail_after(5):
            head = await stream.receive_some(4096)
    assert not head.startswith(b"HTTP/1.1 101"), head
