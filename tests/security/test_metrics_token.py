"""``/metrics`` is a stated choice: open by default, behind a bearer token when
``Config.metrics_token`` is set (``--metrics-token``), on both hosts.

Found from outside: in token mode every GraphQL request needed a token, but
``/metrics`` (connection counts, close codes, operation rates) answered anyone.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
import trio

from meshsub_trio import Server
from meshsub_trio.examples.countdown import app as countdown_app

from ..hypercorn_host import start_hypercorn
from .conftest import bystander

StartServer = Callable[..., Awaitable[Server]]
TOKEN = "metrics-s3cret"

ATTEMPTS = {
    "none": {},
    "wrong": {"authorization": "Bearer not-it"},
    "prefix": {"authorization": f"Bearer {TOKEN[:-1]}"},
    "longer": {"authorization": f"Bearer {TOKEN}x"},
    "basic": {"authorization": f"Basic {TOKEN}"},
    "bare": {"authorization": TOKEN},
    "cookie": {"cookie": f"token={TOKEN}"},
}


async def check(url: str, port: int) -> None:
    """Every wrong or missing credential is 401 with a challenge; the token is 200."""
    async with bystander(port), httpx.AsyncClient(base_url=url, timeout=5) as http:
        for name, headers in ATTEMPTS.items():
            refused = await http.get("/metrics", headers=headers)
            assert refused.status_code == 401, name
            assert refused.headers["www-authenticate"].startswith("Bearer"), name
            assert b"meshsub_" not in refused.content, name
        for scheme in ("Bearer", "bearer"):
            allowed = await http.get("/metrics", headers={"authorization": f"{scheme} {TOKEN}"})
            assert allowed.status_code == 200
            assert b"meshsub_connections" in allowed.content


async def test_native_metrics_need_the_token(start_server: StartServer) -> None:
    server = await start_server(metrics_token=TOKEN)
    await check(server.url, server.port)


async def test_asgi_metrics_need_the_token(nursery: trio.Nursery) -> None:
    hosted = await start_hypercorn(nursery, countdown_app, metrics_token=TOKEN)
    await check(hosted.url, hosted.port)


@pytest.mark.parametrize("host", ["native", "asgi"])
async def test_metrics_are_open_without_a_token(
    start_server: StartServer, nursery: trio.Nursery, host: str
) -> None:
    """The default stays open (for a scraper on loopback): the README says so."""
    if host == "native":
        url = (await start_server()).url
    else:
        url = (await start_hypercorn(nursery, countdown_app)).url
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200 and b"meshsub_connections" in response.content
