"""One log reader over ``meshery.>``: every topic, in the stream's single order."""

from __future__ import annotations

import pytest
import trio

from meshsub_trio import LogStream, NatsBroker
from meshsub_trio.brokers._nats_log import pattern_within
from meshsub_trio.testing import NatsServer

from ._kit import SOON


@pytest.mark.parametrize(
    ("inner", "outer", "within"),
    [
        ("meshery.>", "meshery.>", True),
        ("meshery.events.*", "meshery.>", True),
        ("meshery.events.u1", "meshery.>", True),
        ("meshery", "meshery.>", False),
        ("meshery.>", "meshery.*", False),
        ("meshery.*", "meshery.*", True),
        ("other.>", "meshery.>", False),
        (">", "meshery.>", False),
    ],
)
def test_pattern_within(inner: str, outer: str, within: bool) -> None:
    assert pattern_within(inner, outer) is within


async def test_a_wildcard_reader_sees_every_topic_in_one_order(nats_server: NatsServer) -> None:
    log = LogStream(name="MESHERY", subjects=("meshery.>",), heartbeat=0.5)
    async with NatsBroker.connect(nats_server.url, log=log) as broker:
        for bad in ("meshery.>.x", "meshery.ev*", "other.>"):
            with pytest.raises(ValueError):
                async with broker.subscribe_log(bad):
                    pass
        async with broker.subscribe_log("meshery.>", after=0) as everything:
            for n in range(6):
                broker.publish(("meshery.a", "meshery.b.c")[n % 2], {"n": n})
            got = []
            with trio.fail_after(SOON):
                while len(got) < 6:
                    got.append(await everything.get())
        assert [d.message["n"] for d in got] == list(range(6))
        assert [d.seq for d in got] == sorted({d.seq for d in got})
        async with broker.subscribe_log("meshery.>", after=got[3].seq) as resumed:
            with trio.fail_after(SOON):
                assert [await resumed.get() for _ in range(2)] == got[4:]
