"""The bystander check itself can fail: a blocked event loop starves it."""

from __future__ import annotations

import time

import pytest

from .conftest import bystander


async def test_bystander_notices_a_blocked_loop(server) -> None:
    with pytest.raises(AssertionError, match="starved"):
        async with bystander(server.port, max_gap=0.2):
            time.sleep(0.6)  # the event loop blocked, as an expensive request would


async def test_bystander_passes_when_the_loop_runs(server) -> None:
    async with bystander(server.port, max_gap=0.5) as watch:
        pass
    assert watch.received >= 1
