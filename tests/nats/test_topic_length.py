"""A topic too long for NATS is refused by the broker, not sent.

nats-server refuses a protocol line over 4 KiB (``-ERR 'Maximum Control Line
Exceeded'``) and nats-py answers by closing the connection for good: a
reviewer cut a broker off with one 4,827-character topic (it stayed CLOSED).
Now such a topic raises ValueError at the call, and the link stays up.
"""

from __future__ import annotations

import pytest

from meshsub_trio.brokers import ConnectionState
from meshsub_trio.brokers._nats_options import MAX_SUBJECT_BYTES
from meshsub_trio.testing import NatsServer
from meshsub_trio.testing.pytest_plugin import nats_server

from . import connect, take

__all__ = ["nats_server"]

LONG = "meshery.events." + "u" * 4_900


async def test_a_topic_over_the_bound_is_refused_and_the_link_stays_up(
    nats_server: NatsServer,
) -> None:
    async with connect(nats_server) as broker:
        with pytest.raises(ValueError, match="at most"):
            broker.publish(LONG, {"n": 1})
        with pytest.raises(ValueError, match="at most"):
            async with broker.subscribe(LONG):
                pass  # pragma: no cover
        edge = "meshery.events." + "u" * (MAX_SUBJECT_BYTES - len("meshery.events."))
        async with broker.subscribe(edge, capacity=10) as live:
            broker.publish(edge, {"n": 2})
            assert [m["n"] for m in await take(live, 1)] == [2]
        assert broker.state is ConnectionState.CONNECTED
