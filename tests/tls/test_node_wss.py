"""graphql-ws from Node (the `ws` package, trusting the test CA) over wss://."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import trio

from meshsub_trio import Server

from ..interop.conftest import INSTALL_HINT, JS_DIR, NODE_MODULES
from .certs import Certs

SCRIPT = Path(__file__).parent / "js" / "wss_client.mjs"


@pytest.mark.node
async def test_node_graphql_ws_over_wss(tls_server: Server, certs: Certs) -> None:
    node = shutil.which("node")
    if node is None or not (NODE_MODULES / "graphql-ws").is_dir():
        pytest.fail(f"node and tests/interop/js/node_modules are needed: {INSTALL_HINT}")
    url = tls_server.url.replace("https", "wss", 1) + "/ws"
    with trio.fail_after(20):
        result = await trio.run_process(
            [node, str(SCRIPT), str(JS_DIR), url, str(certs.ca)],
            capture_stdout=True, capture_stderr=True, check=False,
        )
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert result.returncode == 0, (events, result.stderr)
    assert events[0] == {"event": "connected", "protocol": "graphql-transport-ws"}
    assert {"event": "values", "values": [3, 2, 1, 0]} in events
    assert events[-1] == {"event": "done"}
    with trio.fail_after(5):
        await tls_server.metrics.wait_idle()
