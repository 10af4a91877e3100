"""CORS: which headers let a browser page on another origin read an HTTP answer.

Pure (sans-IO): :func:`decide_cors` looks at a request's method and headers
and the origin allow-list, and says what to add to the response, or that a
preflight is refused. The allow-list is the one WebSocket upgrades obey
(``Config.allowed_origins``, ``--allow-origin``), so a page that may open a
socket may also use the HTTP routes, and no other page may read them.

- None: the request's own host and loopback origins, echoed, never with
  credentials (a cookie-carrying cross-origin read needs an explicit listing).
- Listed origins: echoed, with ``Access-Control-Allow-Credentials: true``.
- ``"*"``: any other origin, answered ``*`` and never with credentials (the
  Fetch standard forbids ``*`` with credentials; echoing instead would hand
  every site the user's cookies).

A refused origin gets no CORS headers at all, so the browser withholds the
answer; a refused preflight gets 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

#: What a preflight may ask for; anything else is left out of the answer and
#: the browser refuses the actual request.
ALLOWED_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
#: Request headers a cross-origin page may send (lower case). Cookies are not
#: a header the page sets; they travel only with credentials.
SAFE_REQUEST_HEADERS = frozenset(
    {"content-type", "authorization", "accept", "last-event-id", "x-graphql-event-stream-token"}
)
#: Response headers worth reading from script beyond the CORS-safelisted ones:
#: the auth challenge on 401, ``Allow`` on 405, ``Retry-After`` on 503.
EXPOSED_HEADERS = "www-authenticate, allow, retry-after"
#: Seconds a browser may cache a preflight answer (Chromium caps it at 7200).
MAX_AGE = 600

_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: Every answer depends on Origin (CORS headers or not), so shared caches key on it.
_VARY = ("vary", "Origin")


@dataclass(frozen=True)
class CorsDecision:
    """What to do about CORS for one request."""

    #: Headers to add to the response (``Vary: Origin`` always).
    headers: tuple[tuple[str, str], ...]
    #: A preflight (``OPTIONS`` + ``Origin`` + ``Access-Control-Request-Method``):
    #: answer it here (204, or 403 when ``allowed`` is false), never route it.
    preflight: bool = False
    #: False when the request carries an Origin that the allow-list refuses.
    allowed: bool = True

    @property
    def status(self) -> int:
        """The status of a preflight answer."""
        return 204 if self.allowed else 403


def is_preflight(method: str, headers: dict[str, str]) -> bool:
    """A CORS preflight: it carries no credentials and must never reach the routes."""
    return (
        method == "OPTIONS" and "origin" in headers and "access-control-request-method" in headers
    )


def decide_cors(
    method: str, headers: dict[str, str], allowed_origins: tuple[str, ...] | None
) -> CorsDecision:
    """The CORS answer to a request with lower-cased *headers* (see the module doc)."""
    preflight = is_preflight(method, headers)
    origin = headers.get("origin")
    if origin is None:
        return CorsDecision((_VARY,))
    grant = _grant(origin, headers.get("host"), allowed_origins)
    if grant is None:
        vary = _preflight_vary() if preflight else _VARY
        return CorsDecision((vary,), preflight=preflight, allowed=False)
    allow_origin, credentials = grant
    out: list[tuple[str, str]] = [("access-control-allow-origin", allow_origin)]
    if credentials:
        out.append(("access-control-allow-credentials", "true"))
    if not preflight:
        out.append(("access-control-expose-headers", EXPOSED_HEADERS))
        out.append(_VARY)
        return CorsDecision(tuple(out))
    out.append(("access-control-allow-methods", ", ".join(ALLOWED_METHODS)))
    requested = _safe_requested(headers.get("access-control-request-headers"))
    if requested:
        out.append(("access-control-allow-headers", ", ".join(requested)))
    out.append(("access-control-max-age", str(MAX_AGE)))
    out.append(_preflight_vary())
    return CorsDecision(tuple(out), preflight=True)


def _grant(
    origin: str, host: str | None, allowed_origins: tuple[str, ...] | None
) -> tuple[str, bool] | None:
    """(``Access-Control-Allow-Origin`` value, credentials) or None: refused."""
    if allowed_origins is not None:
        if origin in allowed_origins and origin != "*":
            return origin, True
        return ("*", False) if "*" in allowed_origins else None
    try:
        parts = urlsplit(origin)
        origin_host = parts.hostname or ""
        request_host = urlsplit(f"//{host or ''}").hostname or ""
    except ValueError:  # a malformed origin (bad port, stray brackets)
        return None
    if parts.scheme not in ("http", "https") or not origin_host:
        return None  # "null" (sandboxed pages, file://) never matches a host
    if origin_host == request_host or origin_host in _LOOPBACK_HOSTS:
        return origin, False
    return None


def _safe_requested(header: str | None) -> list[str]:
    """The requested headers that are in :data:`SAFE_REQUEST_HEADERS`, in order, once each."""
    chosen: list[str] = []
    for raw in (header or "").split(","):
        name = raw.strip().lower()
        if name in SAFE_REQUEST_HEADERS and name not in chosen:
            chosen.append(name)
    return chosen


def _preflight_vary() -> tuple[str, str]:
    return ("vary", "Origin, Access-Control-Request-Method, Access-Control-Request-Headers")


def merge_headers(headers: list[tuple[bytes, bytes]], extra: list[tuple[bytes, bytes]]) -> None:
    """Append *extra* to raw ASGI *headers*, merging ``vary`` into one header."""
    for name, value in extra:
        if name == b"vary":
            for index, (existing, current) in enumerate(headers):
                if existing.lower() == b"vary":
                    headers[index] = (existing, current + b", " + value)
                    break
            else:
                headers.append((name, value))
        else:
            headers.append((name, value))
