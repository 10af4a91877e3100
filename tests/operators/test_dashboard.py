"""docs/grafana-dashboard.json queries only what /metrics really exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import trio

from meshsub_trio import Server

from ..wsclient import TRANSPORT, open_raw_client
from ._helpers import scrape

DASHBOARD = Path(__file__).parents[2] / "docs" / "grafana-dashboard.json"


async def test_every_series_and_label_the_dashboard_queries_exists(server: Server) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
    ]
    assert len(exprs) >= 15
    # Every series is there at zero from the start (close codes: those the server sends).
    async with open_raw_client(server.port, subprotocols=[TRANSPORT]) as client:
        assert (await client.init())["type"] == "connection_ack"
    with trio.fail_after(5):
        await server.metrics.wait_idle()
    samples = await scrape(server)
    names = {name for name, _labels in samples}
    labels = {key for _name, pairs in samples for key, _value in pairs}
    for expr in exprs:
        for name in re.findall(r"\b(meshsub_[a-z_]+)", expr):
            assert name in names, (name, expr)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (part.strip() for part in group.split(",")):
                assert label in labels | {"le"}, (label, expr)
