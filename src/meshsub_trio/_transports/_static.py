"""The pages a person opens in a browser: ``/``, the playground, its bundles, the README.

Kept apart from the ASGI app's routing: each request here is answered from
memory (the bodies are built once and cached), with cache headers, ETags
(304 on a match) and gzip when the client takes it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .._config import Config
from ._playground import (
    ASSET_PREFIX,
    README_PATH,
    Asset,
    Links,
    accepts_gzip,
    asset,
    gzipped,
    landing_page,
    playground_page,
    readme,
)

_HTML = "text/html; charset=utf-8"


@dataclass(frozen=True, slots=True)
class StaticResponse:
    status: int
    body: bytes
    content_type: str | None
    headers: list[tuple[str, str]]


async def static_response(
    method: str, path: str, headers: dict[str, str], config: Config
) -> StaticResponse | None:
    """The answer for *path*, or None when no such page exists (404)."""
    found = _find(path, config)
    if found is None:
        return None
    if method not in ("GET", "HEAD"):
        return StaticResponse(405, b"Method not allowed\n", "text/plain", [("allow", "GET, HEAD")])
    return await _send_asset(found, headers)


def _find(path: str, config: Config) -> Asset | None:
    if path in config.playground_paths:
        ws_path = config.ws_paths[-1] if config.ws_paths else "/ws"
        # Prefer an endpoint that speaks both (an app's own does): one URL to remember.
        both = [p for p in config.http_paths if p in config.ws_paths]
        http_path = both[-1] if both else (config.http_paths[-1] if config.http_paths else ws_path)
        return playground_page(http_path, ws_path)
    if path.startswith(ASSET_PREFIX):
        return asset(path[len(ASSET_PREFIX) :])
    if path == "/":
        links = Links(
            playground=config.playground_paths,
            http=config.http_paths,
            ws=config.ws_paths,
            metrics_protected=config.metrics_token is not None,
            docs=readme() is not None,
        )
        return Asset(landing_page(links), _HTML, "no-cache")
    if path == README_PATH:
        text = readme()
        return Asset(text, "text/markdown; charset=utf-8", "no-cache") if text else None
    return None


async def _send_asset(found: Asset, headers: dict[str, str]) -> StaticResponse:
    compressed = await gzipped(found) if accepts_gzip(headers.get("accept-encoding")) else None
    etag = found.etag if compressed is None else found.gzip_etag
    extra = [("cache-control", found.cache_control), ("etag", etag), ("vary", "accept-encoding")]
    if found.not_modified(headers.get("if-none-match")):
        return StaticResponse(304, b"", None, extra)
    if compressed is not None:
        extra.append(("content-encoding", "gzip"))
        return StaticResponse(200, compressed, found.content_type, extra)
    return StaticResponse(200, found.body, found.content_type, extra)
