"""The one workload every server under test implements, and what clients send.

Schema: ``events(topic: String!): Event!`` fed by an in-process broadcaster,
and ``publish(count: Int!, rate: Float, topic: String): Int!`` which starts
publishing *count* events (to *topic*, or to every topic with subscribers)
as fast as the server takes them, or at *rate* events/s, and returns the id
of the first one. Ids increase by one per event, across calls, so clients can
check order and continuity. ``ts`` is the publish time (``time.time()``).

A subscription to a topic starting with ``HELLO_PREFIX`` first gets one
greeting event (id -1), sent as soon as it is set up.

The Node peer (``node/server.mjs``) repeats these constants; the load
generator checks every payload, so a mismatch fails the run at once.
"""

from __future__ import annotations

SDL = """
type Query { ok: Boolean! }
type Event { id: Int! ts: Float! payload: String! }
type Subscription { events(topic: String!): Event! }
type Mutation { publish(count: Int!, rate: Float, topic: String): Int! }
"""

#: Length of the ``payload`` string: makes a whole ``next`` message ~150 bytes.
PAYLOAD_SIZE = 46
PAYLOAD = ("meshsub-bench-" + "0123456789abcdef" * 4)[:PAYLOAD_SIZE]

SUBSCRIPTION = "subscription($topic: String!) { events(topic: $topic) { id ts payload } }"
PUBLISH = "mutation($count: Int!, $rate: Float, $topic: String) " + (
    "{ publish(count: $count, rate: $rate, topic: $topic) }"
)

#: A topic starting with this asks the server to send one greeting event
#: (id ``HELLO_ID``) as soon as the subscription is set up: the live churn
#: scenario waits for it, so every cycle really starts a subscription.
HELLO_PREFIX = "hello:"
HELLO_ID = -1

#: Per-subscriber buffer in the servers: big enough that a saturated run never
#: drops (a drop would fail verification anyway).
BUFFER_CAPACITY = 65536


def event(event_id: int, ts: float) -> dict[str, object]:
    """One event as the broadcasters publish it."""
    return {"id": event_id, "ts": ts, "payload": PAYLOAD}


def hello(topic: str) -> dict[str, object] | None:
    """The greeting event a subscription to *topic* starts with, if any."""
    return event(HELLO_ID, 0.0) if topic.startswith(HELLO_PREFIX) else None
