"""What the operator tests share: scraping /metrics over HTTP, small apps."""

from __future__ import annotations

from typing import Any

import httpx
import trio
from prometheus_client.parser import text_string_to_metric_families

from meshsub_trio import App, AuthError, Context, Server, Streamer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

SECRET = "s3cret-token-never-logged"


async def scrape(server: Server, token: str | None = None) -> Samples:
    """``GET /metrics`` over a real socket, parsed: {(sample name, labels): value}."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
        response = await http.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample; a KeyError (the series is missing) fails the test."""
    return samples[(name, tuple(sorted(labels.items())))]


def auth_app() -> App:
    """Hello and ticks, behind a token: ``Bearer SECRET`` is the only one let in."""

    async def authenticate(ctx: Context) -> str:
        given = (ctx.connection_params or {}).get("Authorization") or ctx.headers.get(
            "authorization"
        )
        if given != f"Bearer {SECRET}":
            raise AuthError("invalid token")
        return "user"

    async def ticks(_ctx: Context, _args: dict[str, Any], emit: Any) -> None:
        n = 0
        while True:
            emit(n)
            n += 1
            await trio.sleep(0.01)

    return App(
        "type Query { hello: String! } type Subscription { ticks: Int! }",
        resolvers={"Query": {"hello": lambda _root, _info: "hi"}},
        streamers={"ticks": Streamer(ticks)},
        authenticate=authenticate,
    )
