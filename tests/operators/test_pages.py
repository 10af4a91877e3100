"""The pages a person opens: ``/``, the playground and its bundles, served from the package.

Over real sockets on the native host (and the playground page under hypercorn
in tests/integration): no external asset anywhere, immutable hashed bundles,
ETags that answer 304, gzip when asked for.
"""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import httpx
import pytest

from meshsub_trio import App, Server
from meshsub_trio.examples.countdown import app as countdown_app

MESHERY = "/graphql"
#: A playground page the app declares itself, besides Config's ``/playground``.
APP_PLAYGROUND = "/graphiql"


@pytest.fixture
async def server(start_server: Any) -> Server:
    """The countdown example with a playground page of its own."""
    app = App(countdown_app.schema, playground_paths=(APP_PLAYGROUND,))
    server: Server = await start_server(app=app)
    return server


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text, re.S)
    assert match is not None, pattern
    return match[1]


def _client(server: Server) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}")


async def test_landing_page_links_what_a_person_needs(server: Server) -> None:
    async with _client(server) as http:
        page = await http.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        links = re.findall(r'href="([^"]+)"', page.text)
        for path in (APP_PLAYGROUND, "/playground", "/healthz", "/metrics"):
            assert path in links, path
        # Endpoints are shown (not linked); the page fills in its scheme and host.
        for kind, path in (("http", MESHERY), ("http", "/api"), ("ws", MESHERY), ("ws", "/ws")):
            assert f'<code class="{kind}" data-path="{path}">' in page.text, (kind, path)
        assert "https://" not in page.text and "src=" not in page.text  # nothing external
        for link in links:
            if link.startswith("data:"):
                continue
            answer = await http.get(link)
            assert answer.status_code == 200, link
        readme = await http.get("/docs/README.md")
        assert readme.headers["content-type"].startswith("text/markdown")
        assert readme.text.startswith("# meshsub-trio")


@pytest.mark.parametrize("path", [APP_PLAYGROUND, "/playground"])
async def test_playground_page_is_offline_and_presets_its_endpoints(server: Server, path: str) -> None:
    async with _client(server) as http:
        page = await http.get(path)
        assert page.headers["cache-control"] == "no-cache"
        config = json.loads(_find(r'<script id="meshsub-playground"[^>]*>(.*?)</script>', page.text))
        assert (config["httpPath"], config["wsPath"]) == (MESHERY, MESHERY)
        assert "https://" not in page.text and "esm.sh" not in page.text
        assets = re.findall(r'(?:href|src)="(/static/playground/[^"]+)"', page.text)
        assets += list(config["workers"].values())
        assert len(assets) == 5  # stylesheet, script, three workers
        for asset in assets:
            answer = await http.get(asset)
            assert answer.status_code == 200, asset
            assert answer.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert b"https://esm.sh" not in answer.content
        # The page's ETag answers 304 when the browser revalidates.
        again = await http.get(path, headers={"if-none-match": page.headers["etag"]})
        assert again.status_code == 304 and again.content == b""


async def test_bundles_are_compressed_and_unknown_names_are_404(server: Server) -> None:
    async with _client(server) as http:
        page = await http.get("/playground")
        script = _find(r'src="(/static/playground/playground-[^"]+\.js)"', page.text)
        plain = await http.get(script, headers={"accept-encoding": "identity"})
        raw = await http.send(http.build_request("GET", script, headers={"accept-encoding": "gzip"}), stream=True)
        compressed = b"".join([chunk async for chunk in raw.aiter_raw()])  # as sent
        await raw.aclose()
        assert raw.headers["content-encoding"] == "gzip" and "accept-encoding" in raw.headers["vary"].lower().split(", ")
        assert gzip.decompress(compressed) == plain.content
        assert len(compressed) < len(plain.content) / 2
        assert raw.headers["etag"] != plain.headers["etag"]  # another body, another tag
        for name in ("manifest.json", "../_playground.py", "nope.js", "%2e%2e/_static.py"):
            assert (await http.get(f"/static/playground/{name}")).status_code == 404, name
        licences = await http.get("/static/playground/THIRD_PARTY_LICENSES")
        assert licences.status_code == 200 and "graphiql@" in licences.text and "react@" in licences.text
        assert (await http.post("/playground")).status_code == 405


async def test_head_answers_headers_only(server: Server) -> None:
    async with _client(server) as http:
        head = await http.head("/playground")
        get = await http.get("/playground")
    assert head.status_code == 200 and head.content == b""
    for name in ("content-length", "content-type", "etag"):
        assert head.headers[name] == get.headers[name], name


def test_third_party_licences_cover_every_bundled_package() -> None:
    """Every npm package with code in a bundle has its licence text shipped beside it."""
    from importlib import resources

    files = resources.files("meshsub_trio._transports").joinpath("playground")
    licences = files.joinpath("THIRD_PARTY_LICENSES").read_text()
    headers = re.findall(r"^(\S+)@(\S+): (\S+)", licences, re.M)
    names = {name for name, _version, _licence in headers}
    for required in ("graphiql", "react", "react-dom", "graphql", "graphql-ws", "monaco-editor"):
        assert required in names, required
    assert all(licence != "undefined" for _n, _v, licence in headers)
    manifest: dict[str, Any] = json.loads(files.joinpath("manifest.json").read_text())
    for name in (manifest["script"], manifest["style"], *manifest["workers"].values()):
        assert files.joinpath(name).is_file(), name
