"""The npm graphql-sse client, single connection mode, against ``serve --workers 3``.

The real client reserves, opens its stream, runs several subscriptions and
mutations and stops each subscription, one connection per request; a proxy
puts the reservation on worker 0, the stream on worker 1, and the operations
and stops round-robin on all three. So operations arrive at the stream's own
worker, at the worker that issued the token (which passes them on), and at a
third worker (which asks the token's worker, which passes them on): every
result must arrive, once, in order.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import pytest
import trio

from ..interop.conftest import INSTALL_HINT, _installed_mismatches, run_node
from ._kit import GRAPHQL, open_supervisor
from ._placing_proxy import Request, placing_proxy

pytestmark = pytest.mark.node

SCRIPT = "graphql_sse_single_workers.mjs"
SUBSCRIPTIONS = 4
EVENTS = 6
WORKERS = 3


@pytest.fixture
def node_binary() -> str:
    """The node binary with the locked packages; fails (never skips) without them."""
    binary = shutil.which("node")
    if binary is None:
        pytest.fail(f"node is not on PATH: install Node.js >= 20, then {INSTALL_HINT}")
    if problems := _installed_mismatches():
        pytest.fail(f"the interop packages: {'; '.join(problems)}: {INSTALL_HINT}")
    return binary


async def test_the_npm_client_on_every_worker_loses_nothing(
    node_binary: str, tmp_path: Path
) -> None:
    turns = {"operation": itertools.count(), "stop": itertools.count()}

    def place(request: Request) -> int:
        if request.kind == "reserve":
            return 0
        if request.kind == "stream":
            return 1
        return next(turns[request.kind]) % WORKERS

    async with (
        open_supervisor(tmp_path, workers=WORKERS) as supervisor,
        placing_proxy(supervisor, place) as proxy,
    ):
        url = f"http://127.0.0.1:{proxy.port}{GRAPHQL}"
        with trio.fail_after(60):
            run = await run_node(
                node_binary, SCRIPT, url, "spread", str(SUBSCRIPTIONS), str(EVENTS), timeout=45
            )
    run.assert_ok()
    assert len(run.named("connected")) == 1, str(run)
    assert not run.named("error"), str(run)
    expected = [f"e-{n}" for n in range(EVENTS)]
    for n in range(SUBSCRIPTIONS):
        seen = [
            event["payload"]["data"]["subscribeEvents"]["description"]
            for event in run.named("next")
            if event["tag"] == f"s{n}"
        ]
        assert seen == expected, (n, str(run))
    for n in range(EVENTS):
        results = [event["payload"] for event in run.named("next") if event["tag"] == f"m{n}"]
        assert len(results) == 1 and "errors" not in results[0], (n, str(run))
    completed = sorted(event["tag"] for event in run.named("complete"))
    tags = [f"s{n}" for n in range(SUBSCRIPTIONS)] + [f"m{n}" for n in range(EVENTS)]
    assert completed == sorted(tags), str(run)
    # Every request was answered as the protocol wants, wherever it landed.
    statuses = {(e["method"], e["status"]) for e in run.named("fetch")}
    assert statuses == {("PUT", 201), ("GET", 200), ("POST", 202), ("DELETE", 200)}, statuses
    assert proxy.workers_for("reserve") == [0] and proxy.workers_for("stream") == [1]
    operations, stops = proxy.workers_for("operation"), proxy.workers_for("stop")
    assert len(operations) == SUBSCRIPTIONS + EVENTS and set(operations) == {0, 1, 2}
    assert len(stops) == SUBSCRIPTIONS and set(stops) == {0, 1, 2}
