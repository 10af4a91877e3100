"""The app's own plain HTTP routes: authenticated like GraphQL, isolated on failure."""

from __future__ import annotations

from typing import Any

import httpx

from meshsub_trio import App, AuthError, Context, HttpRequest, HttpResponse


async def authenticate(ctx: Context) -> str:
    if ctx.headers.get("authorization") != "Bearer good":
        raise AuthError("bad token")
    return "alice"


async def echo(request: HttpRequest) -> HttpResponse:
    body = f'{{"user":"{request.context.auth}","method":"{request.method}","n":"{request.query.get("n")}","len":{len(request.body)}}}'
    return HttpResponse(200, body.encode())


async def broken(_request: HttpRequest) -> HttpResponse:
    raise RuntimeError("bug")


APP = App("type Query { hello: String }", authenticate=authenticate, http_routes={"/echo": echo, "/broken": broken})


async def test_routes_are_authenticated_and_answered(start_server: Any) -> None:
    server = await start_server(APP)
    async with httpx.AsyncClient(base_url=server.url) as http:
        refused = await http.post("/echo")
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        ok = await http.post("/echo?n=3", content=b"abc", headers={"authorization": "Bearer good"})
        assert ok.status_code == 200
        assert ok.json() == {"user": "alice", "method": "POST", "n": "3", "len": 3}
        failed = await http.get("/broken", headers={"authorization": "Bearer good"})
        assert failed.status_code == 500
        assert (await http.get("/healthz")).status_code == 200  # the server lives on
