"""GraphiQL, served from the package itself: the page, its bundles, and the landing page.

The bundles (GraphiQL, React, graphql-ws, Monaco's workers) are built from
pinned npm packages by ``scripts/build-playground`` into ``playground/``
beside this module, with content-hashed names: they are served as immutable
(cached for a year, never revalidated), and a new build changes the names.
The page itself is small and revalidated (``no-cache`` and an ETag). Nothing
is fetched from a CDN, so the playground works on a closed network.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import json
from dataclasses import dataclass, field
from functools import cache
from importlib import metadata, resources
from typing import Any

import trio

#: Where the bundles are served (one prefix, whatever the playground's paths are).
ASSET_PREFIX = "/static/playground/"
#: The project's README, served for the landing page's "docs" link.
README_PATH = "/docs/README.md"

_HTML = "text/html; charset=utf-8"
_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".ttf": "font/ttf",
    ".json": "application/json",
}
_IMMUTABLE = "public, max-age=31536000, immutable"
_REVALIDATE = "no-cache"
#: Below this, compressing costs more than it saves.
_GZIP_MIN = 1024

_PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>GraphiQL: meshsub-trio playground</title>
  <link rel="icon" href="data:,">
  <link rel="stylesheet" href="__STYLE__">
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
</head>
<body>
  <div id="graphiql">Loading GraphiQL…</div>
  <script id="meshsub-playground" type="application/json">__CONFIG__</script>
  <script type="module" src="__SCRIPT__"></script>
</body>
</html>
"""

_DEFAULT_QUERY = """\
# GraphiQL, served by meshsub-trio (no CDN: it works offline).
#
# Queries and mutations go over HTTP; subscriptions over a WebSocket
# (graphql-transport-ws) to this page's own host. A token goes in the
# Headers tab below, e.g. {"Authorization": "Bearer TOKEN"}: it is sent with
# every HTTP request and as the WebSocket's connectionParams.
"""


@dataclass(frozen=True, slots=True)
class Asset:
    """One response body, ready to send: the bytes, their type and caching."""

    body: bytes
    content_type: str
    cache_control: str
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.body).hexdigest()[:32]
        object.__setattr__(self, "etag", f'"{digest}"')

    def not_modified(self, if_none_match: str | None) -> bool:
        """Whether the client's ``If-None-Match`` names this very body."""
        if not if_none_match:
            return False
        tags = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
        return "*" in tags or self.etag in tags or self.gzip_etag in tags

    @property
    def gzip_etag(self) -> str:
        """The compressed variant's tag: another body, so another tag (RFC 9110 8.8.3)."""
        return self.etag[:-1] + '-gzip"'



def _files() -> Any:
    """The directory of built assets (package data)."""
    return resources.files(__package__ or "meshsub_trio._transports").joinpath("playground")


@cache
def _manifest() -> dict[str, Any]:
    """What the build produced: the page's script, stylesheet and workers."""
    manifest: dict[str, Any] = json.loads(_files().joinpath("manifest.json").read_bytes())
    return manifest


@cache
def _servable() -> frozenset[str]:
    """Names that may be asked for: exactly the files of the build, nothing else."""
    return frozenset(entry.name for entry in _files().iterdir() if entry.is_file())


def playground_page(http_path: str, ws_path: str) -> Asset:
    """The GraphiQL page, its HTTP and WebSocket endpoints preset (paths only:
    the page derives host, port and ws:// or wss:// from its own location)."""
    return _page(http_path, ws_path)


def playground_html(endpoint: str) -> bytes:
    """The page with *endpoint* for both HTTP and WebSocket requests."""
    return _page(endpoint, endpoint).body


@cache
def _page(http_path: str, ws_path: str) -> Asset:
    manifest = _manifest()
    config = {
        "httpPath": http_path,
        "wsPath": ws_path,
        "workers": {label: ASSET_PREFIX + name for label, name in manifest["workers"].items()},
        "defaultQuery": _DEFAULT_QUERY,
    }
    # Inside <script>, "</" could end the element early: escape "<" in the JSON.
    text = json.dumps(config).replace("<", "\\u003c")
    page = (
        _PAGE.replace("__STYLE__", ASSET_PREFIX + manifest["style"])
        .replace("__SCRIPT__", ASSET_PREFIX + manifest["script"])
        .replace("__CONFIG__", text)
    )
    return Asset(page.encode(), _HTML, _REVALIDATE)


def asset(name: str) -> Asset | None:
    """A built file by name (hashed names are immutable), or None if there is no such file."""
    if name not in _servable() or name == "manifest.json":
        return None  # checked before the cache: unknown names must not fill it
    return _asset(name)


@cache
def _asset(name: str) -> Asset:
    body = _files().joinpath(name).read_bytes()
    if name == "THIRD_PARTY_LICENSES":
        return Asset(body, "text/plain; charset=utf-8", _REVALIDATE)
    suffix = name[name.rfind(".") :]
    return Asset(body, _TYPES.get(suffix, "application/octet-stream"), _IMMUTABLE)


_compressed: dict[str, bytes] = {}


def _compress(body: bytes) -> bytes:
    return gzip.compress(body, 6, mtime=0)  # mtime 0: the same bytes every time


async def gzipped(asset: Asset) -> bytes | None:
    """The asset gzip-compressed (in a thread, once, then kept), or None when too small."""
    if len(asset.body) < _GZIP_MIN or not asset.content_type.startswith("text/"):
        return None
    body = _compressed.get(asset.etag)
    if body is None:
        body = await trio.to_thread.run_sync(_compress, asset.body)
        _compressed[asset.etag] = body
    return body


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (a ``q=0`` refuses it)."""
    for part in (accept_encoding or "").lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() in ("gzip", "*"):
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


@cache
def readme() -> bytes | None:
    """The project's README (the installed distribution's long description)."""
    try:
        text = metadata.metadata("meshsub-trio")["Description"]
    except metadata.PackageNotFoundError:
        return None
    return text.encode() if isinstance(text, str) and text.strip() else None


@dataclass(frozen=True, slots=True)
class Links:
    """What the landing page points at (paths on this server)."""

    playground: tuple[str, ...]
    http: tuple[str, ...]
    ws: tuple[str, ...]
    metrics_protected: bool
    docs: bool


def landing_page(links: Links) -> bytes:
    """``GET /``: a small page (no external assets) linking everything a person needs."""
    return _landing(links)


@cache
def _landing(links: Links) -> bytes:
    def item(path: str, text: str) -> str:
        quoted = html.escape(path)
        return f'<li><a href="{quoted}">{html.escape(text)}</a> <code>{quoted}</code></li>'

    def endpoint(path: str, kind: str, text: str) -> str:
        # Not a link: a GET without a query is a 400. The script shows the full URL.
        quoted = html.escape(path)
        return f'<li>{text} <code class="{kind}" data-path="{quoted}">{quoted}</code></li>'

    rows = [item(p, "GraphiQL playground") for p in links.playground]
    rows += [endpoint(p, "http", "GraphQL over HTTP (GET, POST)") for p in links.http]
    rows += [endpoint(p, "ws", "GraphQL over WebSocket") for p in links.ws]
    rows.append(item("/healthz", "Health check (liveness)"))
    rows.append(item("/readyz", "Readiness (503 while draining or the broker is down)"))
    metrics = "Prometheus metrics" + (" (bearer token)" if links.metrics_protected else "")
    rows.append(item("/metrics", metrics))
    if links.docs:
        rows.append(item(README_PATH, "README"))
    return _LANDING.replace("__ROWS__", "\n    ".join(rows)).encode()


_LANDING = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>meshsub-trio</title>
  <link rel="icon" href="data:,">
  <style>
    body { font: 16px/1.5 system-ui, sans-serif; max-width: 44rem; margin: 3rem auto;
           padding: 0 1rem; color: #1b1f24; }
    code { background: #f1f3f5; padding: 0 .3em; border-radius: 3px; }
    li { margin: .3em 0; }
  </style>
</head>
<body>
  <h1>meshsub-trio</h1>
  <p>A Trio-native GraphQL subscription server.</p>
  <ul>
    __ROWS__
  </ul>
  <script>
    // Endpoint URLs as this page was reached (any host, port, ws:// or wss://).
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    for (const el of document.querySelectorAll("code.ws")) {
      el.textContent = scheme + "//" + location.host + el.dataset.path;
    }
    for (const el of document.querySelectorAll("code.http")) {
      el.textContent = location.origin + el.dataset.path;
    }
  </script>
</body>
</html>
"""
