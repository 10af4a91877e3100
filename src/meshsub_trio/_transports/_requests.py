"""Reading what a request carries: headers, cookies, origin, auth context."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from contextvars import ContextVar
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

from .._app import Context
from .._config import Config

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def header_map(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """Lower-cased header names to values; repeated headers joined with ', '."""
    headers: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    return headers


def parse_cookies(header: str | None) -> dict[str, str]:
    if not header:
        return {}
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


#: What a WebSocket's context keeps of its upgrade request, for the life of
#: the socket: what auth hooks and resolvers read (cookies are kept parsed).
#: The rest (handshake mechanics, whatever else a client sent, up to the head
#: limit) is dropped once the socket is open: an idle socket costs its context.
KEPT_ON_SOCKETS = frozenset(
    {
        "authorization",
        "host",
        "origin",
        "user-agent",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-real-ip",
    }
)


#: The verified client certificate of the TLS connection the current plain HTTP
#: request arrived on. The native host sets it around each request (in that
#: connection's own task, so it never leaks to another), which lets every
#: context made for the request (GraphQL over HTTP, SSE, app routes) carry the
#: peer a WebSocket's context gets, without the ASGI layer knowing about TLS.
request_tls_peer: ContextVar[dict[str, Any] | None] = ContextVar("request_tls_peer", default=None)


def make_context(headers: dict[str, str], protocol: str, keep: Iterable[str] = ()) -> Context:
    """The context of one HTTP request (all its headers) or one WebSocket (only
    :data:`KEPT_ON_SOCKETS` and the names in *keep*, ``Config.keep_headers``)."""
    cookies = parse_cookies(headers.get("cookie"))
    if protocol != "http":
        kept = KEPT_ON_SOCKETS.union(keep) if keep else KEPT_ON_SOCKETS
        headers = {k: v for k, v in headers.items() if k in kept}
    return Context(
        headers=headers, cookies=cookies, protocol=protocol, tls_peer=request_tls_peer.get()
    )


def origin_allowed(headers: dict[str, str], config: Config) -> bool:
    """Browsers send ``Origin``; only allowed origins may open a socket.

    With no allow-list, an origin is allowed when it names the host the
    request was sent to, or a loopback host. Requests without ``Origin`` come
    from non-browser clients, which cookies cannot be ridden through.
    """
    origin = headers.get("origin")
    if origin is None:
        return True
    allowed = config.allowed_origins
    if allowed is not None:
        return "*" in allowed or origin in allowed
    origin_host = urlsplit(origin).hostname or ""
    if not origin_host:
        return False  # "null" (sandboxed pages, file://) names no host to match
    request_host = urlsplit(f"//{headers.get('host', '')}").hostname or ""
    return origin_host == request_host or origin_host in _LOOPBACK_HOSTS


def bearer_matches(authorization: str | None, token: str) -> bool:
    """Whether ``Authorization: Bearer <token>`` carries *token* (compared in constant time)."""
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    digest = hashlib.sha256(presented.strip().encode("utf-8")).digest()
    return hmac.compare_digest(digest, hashlib.sha256(token.encode("utf-8")).digest())
