"""The GraphiQL playground in a real browser: offline, with subscriptions.

Debian's Chromium, driven by playwright-core (``js/playground.mjs``), opens
the playground of a real server, types a token into the header editor, runs
a query over HTTP and a subscription over the WebSocket, and reads the values
arriving in the result pane. The page may load nothing from anywhere but the
server. No Chromium is a failure, not a skip: ``scripts/install-test-deps``
installs it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import trio

from meshsub_trio import App, AuthError, Context, Server
from meshsub_trio.examples.countdown import SCHEMA, countdown, ticks

JS_DIR = Path(__file__).parent / "js"
CHROMIUM = Path("/usr/bin/chromium")
HINT = "run scripts/install-test-deps (Debian's chromium, npm ci in tests/browser/js)"
TOKEN = "browser-secret-token"
#: Starting Chromium and GraphiQL (Monaco, workers) takes a few seconds here.
BOUND = 90


def _app(seen: list[tuple[str, Any]]) -> App:
    """The countdown example, but a WebSocket needs the token in its connectionParams."""

    async def authenticate(ctx: Context) -> str | None:
        if ctx.protocol == "http":
            seen.append(("http", ctx.headers.get("authorization")))
            return None  # GraphiQL fetches the schema before a token is typed
        params = ctx.connection_params or {}
        seen.append(("ws", params.get("Authorization")))
        if params.get("Authorization") != f"Bearer {TOKEN}":
            raise AuthError("Forbidden")
        return "browser"

    return App(
        SCHEMA,
        resolvers={"Query": {"hello": lambda _root, _info: "Hello from meshsub-trio"}},
        streamers={"countdown": countdown, "ticks": ticks},
        authenticate=authenticate,
    )


async def test_playground_runs_a_subscription_in_chromium(start_server: Any) -> None:
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: {HINT}"
    assert (JS_DIR / "node_modules" / "playwright-core").is_dir(), f"no playwright-core: {HINT}"
    node = shutil.which("node")
    assert node is not None, "node is not on PATH"
    seen: list[tuple[str, Any]] = []
    server: Server = await start_server(_app(seen))
    url = f"http://127.0.0.1:{server.port}/playground"
    with trio.fail_after(BOUND):
        done = await trio.run_process(
            [node, str(JS_DIR / "playground.mjs"), url, TOKEN],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    result = json.loads(done.stdout.decode().strip().splitlines()[-1])

    assert result["pageErrors"] == [], result
    assert result["console"] == [], result
    origin = f"http://127.0.0.1:{server.port}/"
    outside = [r for r in result["requests"] if r.split()[1].split("?")[0][: len(origin)] != origin]
    assert outside == [], "the page loaded something from elsewhere"
    assert '"hello": "Hello from meshsub-trio"' in result["hello"], result
    # Values arrived one after another in the result pane, in order.
    ticks_seen = result["ticks"]
    assert len(ticks_seen) >= 5 and ticks_seen == sorted(set(ticks_seen)), ticks_seen
    # The header editor's token went with the HTTP request and as connectionParams.
    assert ("http", f"Bearer {TOKEN}") in seen, seen
    assert ("ws", f"Bearer {TOKEN}") in seen, seen
    with trio.fail_after(5):
        await server.metrics.wait_idle()  # the stop button ended the subscription
