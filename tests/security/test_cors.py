"""CORS: the pure decision table, then preflights and actual requests over real sockets.

Browsers enforce CORS; the server's part is to grant exactly the origins the
WebSocket allow-list grants, never ``*`` with credentials, and to key caches
on Origin (``Vary``), on every HTTP route including SSE streams.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from meshsub_trio._transports._cors import MAX_AGE, decide_cors, merge_headers
from meshsub_trio.meshery import create_app

LISTED = "https://app.example"
HOST = "api.example:8080"


def _headers(origin: str | None, **more: str) -> dict[str, str]:
    headers = {"host": HOST, **{k.replace("_", "-"): v for k, v in more.items()}}
    if origin is not None:
        headers["origin"] = origin
    return headers


PREFLIGHT = {"access_control_request_method": "POST"}

# (method, origin, extra headers, allow-list) -> (ACAO, credentials, preflight, allowed)
TABLE: list[tuple[str, str | None, dict[str, str], tuple[str, ...] | None, Any]] = [
    # No Origin: not a browser cross-origin request; nothing but Vary.
    ("POST", None, {}, None, (None, False, False, True)),
    ("OPTIONS", None, PREFLIGHT, (LISTED,), (None, False, False, True)),
    # Default policy: the request's host and loopback, echoed, never credentials.
    ("POST", "http://api.example:3000", {}, None, ("http://api.example:3000", False, False, True)),
    ("GET", "http://localhost:5173", {}, None, ("http://localhost:5173", False, False, True)),
    ("GET", "http://127.0.0.1:1", {}, None, ("http://127.0.0.1:1", False, False, True)),
    ("GET", "http://[::1]:8000", {}, None, ("http://[::1]:8000", False, False, True)),
    ("GET", "https://evil.example", {}, None, (None, False, False, False)),
    ("GET", "null", {}, None, (None, False, False, False)),
    ("GET", "http://[bad", {}, None, (None, False, False, False)),
    ("OPTIONS", "https://evil.example", PREFLIGHT, None, (None, False, True, False)),
    ("OPTIONS", "http://localhost:5173", PREFLIGHT, None, ("http://localhost:5173", False, True, True)),
    # An explicit list: listed origins echoed with credentials, loopback no longer implied.
    ("POST", LISTED, {}, (LISTED,), (LISTED, True, False, True)),
    ("OPTIONS", LISTED, PREFLIGHT, (LISTED,), (LISTED, True, True, True)),
    ("POST", "http://localhost:5173", {}, (LISTED,), (None, False, False, False)),
    ("POST", "https://app.example.evil", {}, (LISTED,), (None, False, False, False)),
    # "*": anyone, as "*", never with credentials; listed ones alongside keep theirs.
    ("POST", "https://any.example", {}, ("*",), ("*", False, False, True)),
    ("OPTIONS", "https://any.example", PREFLIGHT, ("*",), ("*", False, True, True)),
    ("POST", "null", {}, ("*",), ("*", False, False, True)),
    ("POST", LISTED, {}, ("*", LISTED), (LISTED, True, False, True)),
    # GET with Access-Control-Request-Method is not a preflight.
    ("GET", LISTED, PREFLIGHT, (LISTED,), (LISTED, True, False, True)),
]  # fmt: skip


@pytest.mark.parametrize(("method", "origin", "extra", "allowed", "expected"), TABLE)
def test_decision_table(
    method: str,
    origin: str | None,
    extra: dict[str, str],
    allowed: tuple[str, ...] | None,
    expected: tuple[str | None, bool, bool, bool],
) -> None:
    acao, credentials, preflight, ok = expected
    decision = decide_cors(method, _headers(origin, **extra), allowed)
    got = dict(decision.headers)
    assert got.get("access-control-allow-origin") == acao
    assert ("access-control-allow-credentials" in got) is credentials
    if credentials:
        assert got["access-control-allow-credentials"] == "true"
        assert got["access-control-allow-origin"] != "*"
    assert decision.preflight is preflight
    assert decision.allowed is ok
    assert "Origin" in got["vary"]
    if not ok:
        assert not any(name.startswith("access-control-") for name in got)
        assert decision.status == 403 or not preflight


def test_preflight_lists_methods_safe_headers_and_max_age() -> None:
    asked = "Content-Type, X-Evil, authorization, Last-Event-ID, cookie, content-type"
    decision = decide_cors(
        "OPTIONS",
        _headers(LISTED, access_control_request_method="PUT", access_control_request_headers=asked),
        (LISTED,),
    )
    got = dict(decision.headers)
    assert decision.status == 204
    assert got["access-control-allow-methods"] == "GET, POST, PUT, DELETE, OPTIONS"
    assert got["access-control-allow-headers"] == "content-type, authorization, last-event-id"
    assert got["access-control-max-age"] == str(MAX_AGE)
    assert "access-control-expose-headers" not in got  # only on actual responses


def test_actual_response_exposes_useful_headers() -> None:
    got = dict(decide_cors("GET", _headers(LISTED), (LISTED,)).headers)
    assert set(got["access-control-expose-headers"].split(", ")) >= {"www-authenticate", "allow"}


def test_vary_merges_into_an_existing_vary() -> None:
    headers = [(b"content-type", b"text/html"), (b"Vary", b"accept-encoding")]
    merge_headers(headers, [(b"vary", b"Origin"), (b"access-control-allow-origin", b"*")])
    assert headers == [
        (b"content-type", b"text/html"),
        (b"Vary", b"accept-encoding, Origin"),
        (b"access-control-allow-origin", b"*"),
    ]


# ---- over real sockets -------------------------------------------------------


def _cors_names(response: httpx.Response) -> set[str]:
    return {name for name in response.headers if name.lower().startswith("access-control-")}


async def test_preflight_from_a_listed_origin(start_server: Any) -> None:
    server = await start_server(allowed_origins=(LISTED,))
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.options(
            "/api",
            headers={
                "origin": LISTED,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type, authorization",
            },
        )
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == LISTED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "POST" in response.headers["access-control-allow-methods"]
    assert response.headers["access-control-allow-headers"] == "content-type, authorization"
    assert int(response.headers["access-control-max-age"]) > 0
    assert "Origin" in response.headers["vary"]
    assert response.content == b""


async def test_preflight_from_an_unlisted_origin_is_refused(start_server: Any) -> None:
    server = await start_server(allowed_origins=(LISTED,))
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.options(
            "/api",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        actual = await http.post(
            "/api", json={"query": "{ hello }"}, headers={"origin": "https://evil.example"}
        )
    assert response.status_code == 403
    assert _cors_names(response) == set()
    # The actual request is answered, but with nothing that lets a browser read it.
    assert actual.status_code == 200
    assert _cors_names(actual) == set()
    assert "Origin" in actual.headers["vary"]


async def test_post_from_a_listed_origin_with_credentials(start_server: Any) -> None:
    server = await start_server(allowed_origins=(LISTED,))
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.post(
            "/api",
            json={"query": "{ hello }"},
            headers={"origin": LISTED, "cookie": "session=abc"},
        )
    assert response.status_code == 200
    assert response.json()["data"]["hello"]
    assert response.headers["access-control-allow-origin"] == LISTED
    assert response.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in response.headers["vary"]


async def test_wildcard_never_with_credentials(start_server: Any) -> None:
    server = await start_server(allowed_origins=("*",))
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        response = await http.post(
            "/api", json={"query": "{ hello }"}, headers={"origin": "https://any.example"}
        )
        preflight = await http.options(
            "/api",
            headers={"origin": "https://any.example", "access-control-request-method": "POST"},
        )
    for answer in (response, preflight):
        assert answer.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in answer.headers
    assert preflight.status_code == 204


async def test_vary_origin_on_every_route(start_server: Any) -> None:
    server = await start_server()
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        answers = [
            await http.get("/healthz"),
            await http.get("/api", params={"query": "{ hello }"}),
            await http.get("/nowhere"),
        ]
    for answer in answers:
        assert "Origin" in answer.headers["vary"], answer.request.url


async def test_healthz_from_loopback_origin_by_default(start_server: Any) -> None:
    server = await start_server()
    origin = "http://localhost:5173"
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        health = await http.get("/healthz", headers={"origin": origin})
        preflight = await http.options(
            "/healthz", headers={"origin": origin, "access-control-request-method": "GET"}
        )
        foreign = await http.get("/healthz", headers={"origin": "https://evil.example"})
    assert health.headers["access-control-allow-origin"] == origin
    assert "access-control-allow-credentials" not in health.headers  # not explicitly listed
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == origin
    assert _cors_names(foreign) == set()


async def test_graphql_sse_stream_carries_the_headers(start_server: Any) -> None:
    server = await start_server(allowed_origins=(LISTED,))
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=5) as http,
        http.stream(
            "POST",
            "/api",
            json={"query": "subscription { countdown(to: 2) }"},
            headers={"origin": LISTED, "accept": "text/event-stream"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["access-control-allow-origin"] == LISTED
        assert response.headers["access-control-allow-credentials"] == "true"
        assert "Origin" in response.headers["vary"]
        body = b"".join([chunk async for chunk in response.aiter_bytes()])
    assert b"complete" in body


async def test_meshery_routes_preflight_before_auth_and_sse(start_server: Any) -> None:
    """A preflight carries no token, so it is answered before authentication; the
    refused (401) and the streamed answers both carry the CORS headers."""
    app = create_app(simulator=False, tokens={"alice-token": "alice"})
    app.sse.keepalive = 0
    server = await start_server(app=app, allowed_origins=(LISTED,))
    path = "/api/system/events/subscribe"
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        preflight = await http.options(
            path,
            headers={
                "origin": LISTED,
                "access-control-request-method": "GET",
                "access-control-request-headers": "authorization, last-event-id",
            },
        )
        refused = await http.get(path, headers={"origin": LISTED})
        async with http.stream(
            "GET", path, headers={"origin": LISTED, "authorization": "Bearer alice-token"}
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["access-control-allow-origin"] == LISTED
            assert stream.headers["x-accel-buffering"] == "no"  # the stream's own headers kept
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-headers"] == "authorization, last-event-id"
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == LISTED
    assert "www-authenticate" in refused.headers["access-control-expose-headers"]


async def test_same_headers_under_hypercorn(nursery: Any) -> None:
    """The ASGI host (hypercorn) routes HTTP through the same code: same answers."""
    from meshsub_trio.examples.countdown import app

    from ..hypercorn_host import start_hypercorn

    hosted = await start_hypercorn(nursery, app, allowed_origins=(LISTED,))
    async with httpx.AsyncClient(base_url=hosted.url, timeout=5) as http:
        preflight = await http.options(
            "/api", headers={"origin": LISTED, "access-control-request-method": "POST"}
        )
        refused = await http.options(
            "/api",
            headers={"origin": "https://evil.example", "access-control-request-method": "POST"},
        )
        actual = await http.post("/api", json={"query": "{ hello }"}, headers={"origin": LISTED})
    hosted.stop.set()
    assert preflight.status_code == 204
    assert preflight.headers["access-control-allow-origin"] == LISTED
    assert refused.status_code == 403 and _cors_names(refused) == set()
    assert actual.status_code == 200
    assert actual.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in actual.headers["vary"]
